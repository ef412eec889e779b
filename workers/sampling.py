"""Choosing the next token: greedy, temperature, top-k, top-p, with a per-request seed.

Each request owns its random generator, seeded from its `seed`, so the same seed and prompt
give the same text whether the request runs alone or inside a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAX_STOP_SEQUENCES = 8
MAX_STOP_LENGTH = 64


class InvalidRequest(ValueError):
    """A request's parameters are out of bounds; the message names the field."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 50
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0  # 0 means no top-k cut
    top_p: float = 1.0  # 1 means no nucleus cut
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def validate(self, *, max_new_tokens: int) -> SamplingParams:
        if not 1 <= self.max_tokens <= max_new_tokens:
            raise InvalidRequest(
                f"max_tokens must be between 1 and {max_new_tokens}, got {self.max_tokens}"
            )
        if not (0.0 <= self.temperature <= 10.0):
            raise InvalidRequest(f"temperature must be between 0 and 10, got {self.temperature}")
        if self.top_k < 0:
            raise InvalidRequest(f"top_k must be 0 (off) or positive, got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise InvalidRequest(f"seed must be between 0 and 2**64-1, got {self.seed}")
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise InvalidRequest(
                f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(self.stop)}"
            )
        for stop in self.stop:
            if not 1 <= len(stop) <= MAX_STOP_LENGTH:
                raise InvalidRequest(
                    f"stop sequences must be 1-{MAX_STOP_LENGTH} characters, got {stop!r}"
                )
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


def make_rng(seed: int | None) -> np.random.Generator:
    """The request's own generator: seeded when a seed is given, else from OS entropy."""
    return np.random.default_rng(seed)


def choose(
    logits: npt.NDArray[np.float32], params: SamplingParams, rng: np.random.Generator
) -> int:
    """Pick the next token id from one row of logits (vocab,)."""
    if params.greedy:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / params.temperature
    candidates = np.arange(scaled.shape[0])
    if 0 < params.top_k < scaled.shape[0]:
        candidates = np.argpartition(scaled, -params.top_k)[-params.top_k :]
        scaled = scaled[candidates]
    order = np.argsort(-scaled, kind="stable")
    candidates, scaled = candidates[order], scaled[order]
    probs = np.exp(scaled - scaled[0])
    probs /= probs.sum()
    if params.top_p < 1.0:
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1
        candidates, probs = candidates[:keep], probs[:keep] / probs[:keep].sum()
    index = int(np.searchsorted(np.cumsum(probs), rng.random(), side="right"))
    return int(candidates[min(index, len(candidates) - 1)])
