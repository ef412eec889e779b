"""The input filter: what a prompt may not be (too long, control characters, denied patterns)."""

from __future__ import annotations

import re

from gateway.config import GatewaySettings
from gateway.errors import InvalidInput, PayloadTooLarge
from gateway.telemetry.metrics import Metrics

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class InputFilter:
    """Size, control characters and configurable deny patterns; each refusal is counted."""

    def __init__(self, settings: GatewaySettings, metrics: Metrics) -> None:
        self.max_chars = settings.max_prompt_chars
        self.patterns = [re.compile(p) for p in settings.deny_patterns]
        self.metrics = metrics

    def check(self, prompt: str) -> None:
        if len(prompt) > self.max_chars:
            self.metrics.filtered.labels("too_long").inc()
            raise PayloadTooLarge(
                f"the prompt has {len(prompt)} characters; the limit is {self.max_chars}",
                code="prompt_too_long",
            )
        if _CONTROL.search(prompt):
            self.metrics.filtered.labels("control_characters").inc()
            raise InvalidInput("the prompt contains control characters", code="invalid_characters")
        for pattern in self.patterns:
            if pattern.search(prompt):
                self.metrics.filtered.labels("denied").inc()
                raise InvalidInput("the prompt matches a denied pattern", code="filtered")
