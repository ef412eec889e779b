"""One training process (one rank under torchrun): its pieces, and the loop's operations on them.

Rank 0 validates and writes checkpoints and the result; every rank steps, and in a resumed run
each takes back its own batch generator.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainer.batches import Batches, evaluate
from trainer.checkpoint import (
    CHECKPOINT_NAME,
    WEIGHTS_NAME,
    TrainingState,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
    save_weights,
)
from trainer.device import autocast, resolve_device, resolve_precision
from trainer.distill import DistillConfig, check_pair, distillation_loss, teacher_logits
from trainer.distributed import join_process_group, replicas_in_sync
from trainer.model import GPT, GPTConfig
from trainer.optim import adamw, lr_at
from trainer.presets import TrainConfig


@dataclass
class TrainResult:
    steps: int
    tokens_seen: int
    train_loss: float
    val_loss: float
    val_perplexity: float
    best_val_loss: float
    elapsed_s: float
    tokens_per_s: float
    world_size: int
    stopped_by: str  # "steps" or "time"
    precision: str
    device: str
    parameters: int
    weights: str
    history: list[dict[str, float]] = field(default_factory=list)


class TrainingProcess:
    """The pieces of one training process, and the operations of the loop on them."""

    def __init__(
        self,
        *,
        config: TrainConfig,
        model_config: GPTConfig,
        train_ids: npt.NDArray[np.int32],
        val_ids: npt.NDArray[np.int32],
        run_dir: Path,
        teacher: GPT | None,
        distill: DistillConfig | None,
        device: str,
    ) -> None:
        self.config, self.run_dir = config, run_dir
        self.rank, self.world = join_process_group()
        self.device = resolve_device(device)
        self.precision = resolve_precision(config.precision, self.device)
        torch.manual_seed(config.seed + self.rank)
        self.model = GPT(model_config).to(self.device)
        self.optimizer = adamw(self.model, config)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.batches = Batches(
            torch.from_numpy(train_ids.astype(np.int64)),
            context=model_config.context_length,
            batch=config.batch_size,
            seed=config.seed + 1000 * self.rank,
        )
        self.val = torch.from_numpy(val_ids.astype(np.int64))
        self.teacher = teacher
        if teacher is not None:
            check_pair(teacher=teacher, student=self.model)
            self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        self.distill = distill or DistillConfig()
        self.state = TrainingState()
        self.meta = {
            "train": asdict(config),
            "model": model_config.to_dict(),
            "precision": self.precision,
        }
        self.tokens_per_step = (
            config.batch_size * config.grad_accum_steps * model_config.context_length * self.world
        )

    def wrap(self) -> torch.nn.Module:
        return DistributedDataParallel(self.model) if self.world > 1 else self.model

    def step(self, net: torch.nn.Module) -> float:
        """One optimizer step over `grad_accum_steps` micro-batches; returns the mean loss."""
        config, lr = self.config, lr_at(self.state.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for micro in range(config.grad_accum_steps):
            x, y = (t.to(self.device) for t in self.batches.next())
            # Gradients are all-reduced only on the last micro-batch.
            last = micro == config.grad_accum_steps - 1
            skip_sync = (
                net.no_sync()
                if isinstance(net, DistributedDataParallel) and not last
                else contextlib.nullcontext()
            )
            with skip_sync, autocast(self.precision, self.device):
                logits, loss = net(x, y)
                if self.teacher is not None:
                    loss, _ = distillation_loss(
                        logits, teacher_logits(self.teacher, x), y, self.distill
                    )
                loss = loss / config.grad_accum_steps
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.item()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.tokens_seen += self.tokens_per_step
        return total

    def validate(self, train_loss: float) -> None:
        val_loss = evaluate(
            self.model,
            self.val,
            context=self.model.config.context_length,
            batch=self.config.batch_size,
            batches=self.config.eval_batches,
            device=self.device,
        )
        self.state.best_val_loss = min(self.state.best_val_loss, val_loss)
        self.state.history.append(
            {"step": self.state.step, "train_loss": train_loss, "val_loss": val_loss}
        )

    def save(self) -> None:
        generators: list[Any] = [self.batches.generator.get_state()]
        if self.world > 1:
            generators = [None] * self.world
            dist.all_gather_object(generators, self.batches.generator.get_state())
        if self.rank == 0:
            save_checkpoint(
                self.run_dir / CHECKPOINT_NAME,
                model=self.model,
                optimizer=self.optimizer,
                scaler=self.scaler,
                state=self.state,
                data_generators=generators,
                config=self.meta,
            )

    def restore(self) -> None:
        path = self.run_dir / CHECKPOINT_NAME
        payload = load_checkpoint(path)
        generators = payload["data_generators"]
        if len(generators) != self.world:
            raise ValueError(
                f"{path} was written by {len(generators)} processes; resume with as many"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload["scaler"] is not None:
            self.scaler.load_state_dict(payload["scaler"])
        self.batches.generator.set_state(generators[self.rank])
        if self.rank == 0:
            restore_rng_states(payload["rng"])
        self.state = TrainingState(**payload["state"])

    def finish(self, *, train_loss: float, stopped_by: str, tokens_per_s: float) -> TrainResult:
        """Write `model.pt` and `result.json` (rank 0) and return the result."""
        history = self.state.history
        val_loss = history[-1]["val_loss"] if history else float("nan")
        result = TrainResult(
            steps=self.state.step,
            tokens_seen=self.state.tokens_seen,
            train_loss=train_loss,
            val_loss=val_loss,
            val_perplexity=math.exp(val_loss) if math.isfinite(val_loss) else float("nan"),
            best_val_loss=self.state.best_val_loss,
            elapsed_s=self.state.elapsed_s,
            tokens_per_s=tokens_per_s,
            world_size=self.world,
            stopped_by=stopped_by,
            precision=self.precision,
            device=str(self.device),
            parameters=self.model.num_parameters(),
            weights=str(self.run_dir / WEIGHTS_NAME),
            history=list(history),
        )
        in_sync = replicas_in_sync(self.model, self.world) if self.world > 1 else True
        if self.rank == 0:
            save_weights(self.model, self.run_dir / WEIGHTS_NAME)
            payload = {**asdict(result), "replicas_in_sync": in_sync}
            (self.run_dir / "result.json").write_text(json.dumps(payload, indent=2) + "\n")
        if self.world > 1:
            dist.barrier()
        return result
