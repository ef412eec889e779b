"""`/v2` request bodies: one or several inputs and their parameters."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from gateway.generation.request import GenerateRequest, check_stops


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=50, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=1000)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: Annotated[list[str] | None, AfterValidator(check_stops)] = None
    model: str | None = Field(default=None, max_length=64)
    version: int | None = Field(default=None, ge=1)


class GenerateV2(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str]
    parameters: Parameters = Field(default_factory=Parameters)
    stream: bool = False

    @model_validator(mode="after")
    def _inputs(self) -> GenerateV2:
        if isinstance(self.inputs, list) and (self.stream or not 1 <= len(self.inputs) <= 16):
            raise ValueError("give 1 to 16 inputs, and only one when streaming")
        return self

    def request(self, prompt: str) -> GenerateRequest:
        return GenerateRequest(prompt=prompt, stream=self.stream, **self.parameters.model_dump())
