"""`.env.example` lists every setting of every service's settings class."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from tests.settings import env_names

ROOT = Path(__file__).resolve().parent.parent


def _settings_classes() -> list[type[BaseSettings]]:
    found: list[type[BaseSettings]] = []
    for config in sorted(ROOT.glob("*/config.py")):
        module = importlib.import_module(f"{config.parent.name}.config")
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, BaseSettings)
            and value.__module__ == module.__name__
        ]
    return found


@pytest.mark.parametrize("settings_class", _settings_classes(), ids=lambda c: c.__name__)
def test_every_setting_is_documented(settings_class: type[BaseSettings]) -> None:
    documented = (ROOT / ".env.example").read_text()
    missing = sorted(name for name in env_names(settings_class) if f"{name}=" not in documented)
    assert missing == []
