"""Registry settings come from TOLLGATE_* variables; paths resolve; the default is SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import RegistrySettings
from registry.db import connect
from registry.errors import RegistryConfigError


def test_defaults_put_the_sqlite_registry_under_var_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("TOLLGATE_VAR_DIR", "TOLLGATE_DATABASE_URL", "TOLLGATE_MODEL_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)
    settings = RegistrySettings()
    assert settings.var_dir == tmp_path / "var"
    assert settings.model_repository == tmp_path / "model_repository"
    assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'registry.db'}"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOLLGATE_VAR_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("TOLLGATE_MODEL_REPOSITORY", str(tmp_path / "repo"))
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", "postgresql+psycopg://u@db.internal/registry")
    settings = RegistrySettings()
    assert (settings.var_dir, settings.model_repository) == (tmp_path / "a", tmp_path / "repo")
    assert settings.database_url == "postgresql+psycopg://u@db.internal/registry"


@pytest.mark.parametrize(
    ("url", "message"),
    [("::nonsense", "malformed"), ("mysql://u@h/db", "unsupported database 'mysql'")],
)
def test_unusable_urls_are_config_errors(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(RegistryConfigError, match=message):
        connect(RegistrySettings(var_dir=tmp_path, database_url=url))


def test_password_never_appears_in_messages(tmp_path: Path) -> None:
    db = connect(
        RegistrySettings(var_dir=tmp_path, database_url="postgresql://u:s3cret@127.0.0.1:9/x")
    )
    assert "s3cret" not in db.safe_url
