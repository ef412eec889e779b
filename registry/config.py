"""Registry settings, read from `TOLLGATE_*` environment variables.

Every Tollgate service uses the registry, so each service's own settings hold a
`RegistrySettings` as their `registry` part, beside their own fields.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RegistrySettings(BaseSettings):
    """Where the registry database, the model repository and local state live."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="forbid")

    var_dir: Path = Field(
        default=Path("var"),
        description="Directory for local state: the SQLite registry, logs, caches, runs.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the registry database; empty means <var_dir>/registry.db.",
    )
    model_repository: Path = Field(
        default=Path("model_repository"),
        description="Triton model repository that published versions are written into.",
    )
    database_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds to wait for a database connection or a lock before giving up.",
    )

    @model_validator(mode="after")
    def _resolve_paths(self) -> RegistrySettings:
        self.var_dir = self.var_dir.expanduser().resolve()
        self.model_repository = self.model_repository.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'registry.db'}"
        return self
