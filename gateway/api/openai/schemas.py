"""OpenAI-compatible request bodies. Fields Tollgate does not implement are accepted only at
their neutral values (`n=1`, no `logprobs`, no `echo`, zero penalties)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from gateway.generation.request import GenerateRequest, check_stops


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=64)
    prompt: str | list[str] = Field(description="One prompt, or several (not when streaming).")
    max_tokens: int = Field(default=16, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: Annotated[str | list[str] | None, AfterValidator(check_stops)] = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)
    n: Literal[1] = 1
    best_of: Literal[1] | None = None
    logprobs: None = None
    echo: Literal[False] = False
    suffix: None = None
    presence_penalty: float = Field(default=0.0, ge=0.0, le=0.0)
    frequency_penalty: float = Field(default=0.0, ge=0.0, le=0.0)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=0)

    @model_validator(mode="after")
    def _one_prompt_when_streaming(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and (
            self.stream or not self.prompt or len(self.prompt) > 16
        ):
            raise ValueError("give 1 to 16 prompts, and only one when streaming")
        return self

    def generate_request(self, prompt: str) -> GenerateRequest:
        return GenerateRequest(
            prompt=prompt,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop,
            model=self.model,
            stream=self.stream,
        )
