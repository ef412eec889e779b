"""The token windows training learns from (random, resumable) and is measured on (fixed)."""

from __future__ import annotations

import torch

from trainer.model import GPT


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
