"""The training loop: AdamW, warmup + cosine schedule, accumulation, clipping, mixed precision,
checkpoint/resume, DDP, and optional distillation from a teacher.

Single process: `train(...)`. Data-parallel: run this module under torchrun, e.g.
`torchrun --standalone --nproc-per-node 2 -m trainer.train --ids-dir D --run-dir R --preset tiny`
(gloo on CPU, nccl on CUDA); each rank samples its own batches, rank 0 validates, reports and
writes checkpoints, and the result records the world size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.nn.parallel import DistributedDataParallel

from trainer.checkpoint import (
    CHECKPOINT_NAME,
    WEIGHTS_NAME,
    TrainingState,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
    save_weights,
)
from trainer.distill import DistillConfig, check_pair, distillation_loss, teacher_logits
from trainer.model import GPT, GPTConfig
from trainer.presets import TrainConfig, load_preset


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


class Batches:
    """Random context windows from a token stream, drawn by a seeded generator (resumable)."""

    def __init__(self, ids: torch.Tensor, *, context: int, batch: int, seed: int) -> None:
        if ids.numel() <= context + 1:
            raise ValueError(f"{ids.numel()} tokens cannot fill one window of {context}")
        self.ids, self.context, self.batch = ids, context, batch
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(
            self.ids.numel() - self.context - 1, (self.batch,), generator=self.generator
        )
        x = torch.stack([self.ids[s : s + self.context] for s in starts.tolist()])
        y = torch.stack([self.ids[s + 1 : s + 1 + self.context] for s in starts.tolist()])
        return x, y


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to the minimum at `max_steps`."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(
        1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    )
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_learning_rate + cosine * (config.learning_rate - config.min_learning_rate)


def resolve_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 where the hardware does it natively (CUDA with bf16, or a CPU with
    AVX512-BF16/AMX), else fp16 on CUDA, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: GPT,
    val_ids: torch.Tensor,
    *,
    context: int,
    batch: int,
    batches: int,
    device: torch.device,
) -> float:
    """Mean loss over fixed, evenly spaced validation windows (the same every time)."""
    model.eval()
    count = min(batches * batch, max(1, val_ids.numel() - context - 1))
    starts = torch.linspace(0, val_ids.numel() - context - 1, count).long().tolist()
    losses = []
    for i in range(0, len(starts), batch):
        chunk = starts[i : i + batch]
        x = torch.stack([val_ids[s : s + context] for s in chunk]).to(device)
        y = torch.stack([val_ids[s + 1 : s + 1 + context] for s in chunk]).to(device)
        _, loss = model(x, y)
        if loss is None:
            raise RuntimeError("the model returned no loss for targets")
        losses.append(float(loss.item()) * len(chunk))
    model.train()
    return sum(losses) / len(starts)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _agreed(flag: bool, world: int) -> bool:
    """Rank 0's decision, so that every rank stops at the same step."""
    if world == 1:
        return flag
    decision = torch.tensor([int(flag)])
    dist.broadcast(decision, src=0)
    return bool(decision.item())


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]train[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.2e}  {task.fields[tps]:,.0f} tok/s"
        ),
        TimeRemainingColumn(),
        disable=not enabled,
    )


class _Run:
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
        self.rank, self.world = _distributed()
        self.device = resolve_device(device)
        self.precision = resolve_precision(config.precision, self.device)
        torch.manual_seed(config.seed + self.rank)
        self.model = GPT(model_config).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [
                {
                    "params": [p for p in params if p.dim() >= 2],
                    "weight_decay": config.weight_decay,
                },
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ],
            lr=config.learning_rate,
            betas=(config.beta1, config.beta2),
            foreach=True,
        )
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
            with skip_sync, _autocast(self.precision, self.device):
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
        in_sync = _replicas_in_sync(self.model, self.world) if self.world > 1 else True
        if self.rank == 0:
            save_weights(self.model, self.run_dir / WEIGHTS_NAME)
            payload = {**asdict(result), "replicas_in_sync": in_sync}
            (self.run_dir / "result.json").write_text(json.dumps(payload, indent=2) + "\n")
        if self.world > 1:
            dist.barrier()
        return result


def train(
    *,
    config: TrainConfig,
    model_config: GPTConfig,
    train_ids: npt.NDArray[np.int32],
    val_ids: npt.NDArray[np.int32],
    run_dir: Path,
    resume: bool = True,
    teacher: GPT | None = None,
    distill: DistillConfig | None = None,
    progress: bool = True,
    device: str = "auto",
) -> TrainResult:
    """Train (or resume from `run_dir/checkpoint.pt`) and write `model.pt` and `result.json`.

    Stops at `max_steps` or when `max_minutes` of training time (summed over resumed
    segments) have passed, whichever comes first, and says which in `stopped_by`.
    """
    run = _Run(
        config=config,
        model_config=model_config,
        train_ids=train_ids,
        val_ids=val_ids,
        run_dir=run_dir,
        teacher=teacher,
        distill=distill,
        device=device,
    )
    if resume and (run_dir / CHECKPOINT_NAME).exists():
        run.restore()
    net = run.wrap()
    budget_s = config.max_minutes * 60 if config.max_minutes > 0 else math.inf
    started, before, tokens = time.perf_counter(), run.state.elapsed_s, 0
    stopped_by, train_loss = "steps", float("nan")
    with _progress(progress and run.rank == 0) as bar:
        task = bar.add_task(
            "train", total=config.max_steps, completed=run.state.step, loss=0.0, lr=0.0, tps=0.0
        )
        while run.state.step < config.max_steps:
            train_loss = run.step(net)
            tokens += run.tokens_per_step
            run.state.elapsed_s = before + (time.perf_counter() - started)
            tps = tokens / (time.perf_counter() - started)
            bar.update(
                task,
                completed=run.state.step,
                loss=train_loss,
                lr=lr_at(run.state.step, config),
                tps=tps,
            )
            out_of_time = _agreed(run.state.elapsed_s >= budget_s, run.world)
            last = out_of_time or run.state.step >= config.max_steps
            if run.rank == 0 and (last or run.state.step % config.eval_interval == 0):
                run.validate(train_loss)
            if last or run.state.step % config.checkpoint_interval == 0:
                run.save()
            if out_of_time:
                stopped_by = "time"
                break
    return run.finish(
        train_loss=train_loss,
        stopped_by=stopped_by,
        tokens_per_s=tokens / max(time.perf_counter() - started, 1e-9),
    )


def _replicas_in_sync(model: GPT, world: int) -> bool:
    """Whether every rank holds the same weights (DDP's promise, checked once at the end)."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(gathered, checksum)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def main(argv: list[str] | None = None) -> None:
    """Entry point for torchrun.

    `--run-dir DIR` alone trains a run prepared by `python -m trainer data` (its preset,
    tokenizer and token ids); `--ids-dir`, `--preset` and `--vocab-size` train raw `.npy` streams.
    """
    parser = argparse.ArgumentParser(prog="python -m trainer.train")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--ids-dir", type=Path, help="holds train.npy and val.npy")
    parser.add_argument("--preset", help="preset name or .toml path")
    parser.add_argument("--vocab-size", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--max-minutes", type=float)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if (args.run_dir / "run.json").exists():
        from trainer.runs import Run  # noqa: PLC0415 (runs imports this module)
        from trainer.tokenizer import load_tokenizer  # noqa: PLC0415

        run = Run.open(args.run_dir)
        preset = run.preset()
        args.ids_dir = args.ids_dir or run.ids_dir
        args.vocab_size = args.vocab_size or load_tokenizer(run.tokenizer).get_vocab_size()
    elif args.ids_dir is None or args.preset is None or args.vocab_size is None:
        parser.error("without a prepared run directory, give --ids-dir, --preset and --vocab-size")
    else:
        preset = load_preset(args.preset)
    preset = preset.with_training(max_steps=args.max_steps, max_minutes=args.max_minutes)
    train(
        config=preset.training,
        model_config=preset.model_config(args.vocab_size),
        train_ids=np.load(args.ids_dir / "train.npy"),
        val_ids=np.load(args.ids_dir / "val.npy"),
        run_dir=args.run_dir,
        progress=not args.no_progress,
    )
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
