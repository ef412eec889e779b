"""What callers hand the engine and what they get back: requests, responses, and refusals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from workers.sampling import SamplingParams


class Overloaded(RuntimeError):
    """Every slot and the whole queue are taken; retry later."""


class EngineStopped(RuntimeError):
    """The engine is not running (stopped, or its loop failed); the message says why."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    params: SamplingParams = field(default_factory=SamplingParams)
    stream: bool = True
    truncate: bool = False  # keep the prompt's last tokens when it is too long, else refuse
    request_id: str = ""


@dataclass
class Chunk:
    """One response: new text and token ids; the final one carries the outcome."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    final: bool = False
    finish_reason: str = ""  # length | stop | eos | cancelled
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # queue_ms, first_token_ms, total_ms
    error: str = ""


class Sink(Protocol):
    """Where a request's responses go (the server's response sender, or a test's list)."""

    def send(self, chunk: Chunk) -> None: ...
    def cancelled(self) -> bool: ...
