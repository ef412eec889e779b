"""One generation asked for: the `/v1/generate` body, which the other routes' bodies become
(unknown fields are refused)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_STOPS = 8
MAX_STOP_CHARS = 64


def check_stops(value: list[str] | str | None) -> list[str] | str | None:
    """Stop sequences every route accepts: at most 8, each of 1 to 64 characters. Each body
    that carries them checks them itself, so a bad list is a 422, never a later error."""
    stops = [value] if isinstance(value, str) else value or []
    if len(stops) > MAX_STOPS:
        raise ValueError(f"at most {MAX_STOPS} stop sequences")
    if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise ValueError(f"stop sequences must have 1 to {MAX_STOP_CHARS} characters")
    return value


class GenerateRequest(BaseModel):
    """`POST /v1/generate`."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="Text to continue.")
    max_tokens: int = Field(default=50, ge=1, le=4096, description="Most tokens to generate.")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, description="0 means greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=1000, description="0 means no top-k.")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: Annotated[list[str] | str | None, AfterValidator(check_stops)] = Field(
        default=None, description="Up to 8 stop sequences."
    )
    model: str | None = Field(
        default=None, max_length=64, description="Default: the default model."
    )
    version: int | None = Field(default=None, ge=1, description="Pin a version (admin scope).")
    stream: bool = Field(default=False, description="Answer with server-sent events.")

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
