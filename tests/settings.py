"""The environment variable names a settings class reads: its prefix, then each field, and
those of the parts it is composed of (fields that are settings classes themselves)."""

from __future__ import annotations

from pydantic_settings import BaseSettings


def env_names(*classes: type[BaseSettings]) -> set[str]:
    names: set[str] = set()
    for cls in classes:
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            part = field.annotation
            if isinstance(part, type) and issubclass(part, BaseSettings):
                names |= env_names(part)
            else:
                names.add(f"{prefix}{name}".upper())
    return names
