"""Data-parallel training under torchrun: joining the process group and agreeing across ranks."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from trainer.model import GPT


def join_process_group() -> tuple[int, int]:
    """(rank, world size); joins the process group (nccl on CUDA, else gloo) under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def agreed(flag: bool, world: int) -> bool:
    """Rank 0's decision, so that every rank stops at the same step."""
    if world == 1:
        return flag
    decision = torch.tensor([int(flag)])
    dist.broadcast(decision, src=0)
    return bool(decision.item())


def replicas_in_sync(model: GPT, world: int) -> bool:
    """Whether every rank holds the same weights (DDP's promise, checked once at the end)."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(gathered, checksum)
    return all(torch.equal(g, gathered[0]) for g in gathered)
