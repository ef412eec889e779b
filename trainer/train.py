"""The training loop: step, report, validate and checkpoint until the step or time budget ends.

What it drives lives in modules of their own: one process's model, optimizer and steps
(`trainer.process`: accumulation, clipping, mixed precision, checkpoint/resume, optional
distillation from a teacher), the AdamW warmup + cosine schedule (`trainer.optim`), batches
and validation (`trainer.batches`), device and precision (`trainer.device`) and DDP
(`trainer.distributed`).

Single process: `train(...)`. Data-parallel: run this module under torchrun, e.g.
`torchrun --standalone --nproc-per-node 2 -m trainer.train --ids-dir D --run-dir R --preset tiny`
(gloo on CPU, nccl on CUDA); each rank samples its own batches, rank 0 validates, reports and
writes checkpoints, and the result records the world size.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from trainer.checkpoint import CHECKPOINT_NAME
from trainer.distill import DistillConfig
from trainer.distributed import agreed
from trainer.model import GPT, GPTConfig
from trainer.optim import lr_at
from trainer.presets import TrainConfig, load_preset
from trainer.process import TrainingProcess, TrainResult
from trainer.rundir import Run
from trainer.tokenizer import load_tokenizer


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
    run = TrainingProcess(
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
            out_of_time = agreed(run.state.elapsed_s >= budget_s, run.world)
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
