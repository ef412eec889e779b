"""The environment variable names a settings class reads (its prefix, then each field)."""

from __future__ import annotations

from pydantic_settings import BaseSettings


def env_names(*classes: type[BaseSettings]) -> set[str]:
    return {
        f"{cls.model_config.get('env_prefix', '')}{name}".upper()
        for cls in classes
        for name in cls.model_fields
    }
