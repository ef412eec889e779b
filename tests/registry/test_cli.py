"""`python -m registry`: every command, JSON output, and one-line errors with exit 1."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from registry import catalog
from registry.cli import app
from registry.config import RegistrySettings
from registry.db import RegistryDatabase, writing
from tests.cli import run_module
from tests.registry.conftest import DATASET, ReadyFactory
from tests.registry.test_integrity import publish


def _env(settings: RegistrySettings) -> dict[str, str]:
    return {
        "TOLLGATE_DATABASE_URL": settings.database_url,
        "TOLLGATE_VAR_DIR": str(settings.var_dir),
        "TOLLGATE_MODEL_REPOSITORY": str(settings.model_repository),
        "TOLLGATE_ACTOR": "cli-test",
    }


@pytest.fixture
def cli(settings: RegistrySettings, db: RegistryDatabase) -> CliRunner:
    return CliRunner(env=_env(settings))


def _json(cli: CliRunner, *args: str) -> Any:
    result = cli.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_read_commands_print_tables_and_json(cli: CliRunner, make_ready: ReadyFactory) -> None:
    make_ready("demo", hyperparameters={"n_layer": 4})
    make_ready("demo")
    models = _json(cli, "models", "list")
    assert isinstance(models, dict)
    assert [m["name"] for m in models["items"]] == ["demo"]
    versions = _json(cli, "versions", "list", "demo", "--limit", "1")
    assert isinstance(versions, dict)
    assert ([v["version"] for v in versions["items"]], versions["next_cursor"]) == ([2], "2")
    shown = _json(cli, "versions", "show", "demo", "1")
    assert isinstance(shown, dict)
    assert shown["hyperparameters"] == {"n_layer": 4}
    paged = cli.invoke(app, ["versions", "list", "demo", "--limit", "1"])
    assert "more: --cursor 2" in paged.stdout
    table = cli.invoke(app, ["versions", "show", "demo", "1"])
    assert table.exit_code == 0
    assert "n_layer" in table.stdout
    assert "model.onnx" in table.stdout


def test_alias_commands_and_history_at_an_instant(cli: CliRunner, make_ready: ReadyFactory) -> None:
    make_ready()
    make_ready()
    assert (
        cli.invoke(app, ["alias", "set", "demo", "production", "1", "--reason", "launch"]).exit_code
        == 0
    )
    history = _json(cli, "history", "demo")
    assert isinstance(history, dict)
    instant = history["items"][0]["created_at"]
    assert (
        cli.invoke(app, ["alias", "set", "demo", "production", "2", "--reason", "better"]).exit_code
        == 0
    )
    assert (
        cli.invoke(
            app, ["alias", "set", "demo", "canary", "2", "--weight", "10", "--reason", "x"]
        ).exit_code
        == 1
    )
    assert cli.invoke(app, ["alias", "rollback", "demo", "--reason", "regression"]).exit_code == 0
    assert (
        cli.invoke(
            app, ["alias", "set", "demo", "canary", "2", "--weight", "10", "--reason", "try"]
        ).exit_code
        == 0
    )
    assert cli.invoke(app, ["alias", "clear", "demo", "canary", "--reason", "done"]).exit_code == 0
    everything = _json(cli, "history", "demo")
    assert isinstance(everything, dict)
    assert [(e["alias"], e["action"], e["to_version"]) for e in everything["items"]] == [
        ("canary", "clear", None),
        ("canary", "set", 2),
        ("production", "rollback", 1),
        ("production", "set", 2),
        ("production", "set", 1),
    ]
    assert {e["actor"] for e in everything["items"]} == {"cli-test"}
    then = _json(cli, "history", "demo", "--at", instant)
    assert isinstance(then, dict)
    assert [(a["alias"], a["version"]) for a in then["state"]["aliases"]] == [("production", 1)]
    assert len(then["items"]) == 1
    readable = cli.invoke(app, ["history", "demo", "--at", instant])
    assert "production→v1" in readable.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["versions", "show", "nope", "1"], "no model named 'nope'"),
        (["versions", "show", "demo", "7"], "has no version 7"),
        (
            ["alias", "set", "demo", "canary", "1", "--weight", "101", "--reason", "r"],
            "between 0 and 100",
        ),
        (
            ["alias", "set", "demo", "production", "2", "--reason", "r"],
            "aliases point only at ready",
        ),
        (["history", "demo", "--at", "yesterday"], "ISO 8601"),
        (["versions", "list", "demo", "--cursor", "abc"], "invalid page cursor"),
    ],
)
def test_bad_input_prints_one_line_and_exits_1(
    cli: CliRunner, make_ready: ReadyFactory, db: RegistryDatabase, args: list[str], message: str
) -> None:
    make_ready()
    with writing(db) as session:
        catalog.register_version(session=session, model="demo", dataset_sha256=DATASET)
    result = cli.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_verify_and_rebuild(
    cli: CliRunner, settings: RegistrySettings, db: RegistryDatabase
) -> None:
    version_dir = publish(db, settings.model_repository, "demo")
    ok = cli.invoke(app, ["verify", "demo"])
    assert ok.exit_code == 0, ok.output
    assert "ok demo v1: 2 files match" in ok.stdout
    (version_dir / "model.onnx").write_bytes(b"x")
    bad = _run_json_fail(cli, ["verify", "demo", "1", "--json"])
    assert bad[0]["problems"][0]["kind"] == "size_mismatch"
    rebuilt = _json(cli, "rebuild")
    assert rebuilt == [
        {"path": "demo/1", "outcome": "exists", "model": "demo", "version": 1, "detail": ""}
    ]


def _run_json_fail(cli: CliRunner, args: list[str]) -> list[dict[str, Any]]:
    result = cli.invoke(app, args)
    assert result.exit_code == 1
    parsed = json.loads(result.stdout)
    assert isinstance(parsed, list)
    return parsed


def _module(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_module("registry", *args, env={**os.environ, **env}, timeout=60)


def test_module_entry_point_init_and_infrastructure_errors(tmp_path: Path) -> None:
    env = {"TOLLGATE_VAR_DIR": str(tmp_path / "var"), "TOLLGATE_DATABASE_URL": ""}
    before = _module(["models", "list"], env)
    assert before.returncode == 1
    assert "not initialised: run `python -m registry init`" in before.stderr
    assert _module(["init"], env).returncode == 0
    assert (tmp_path / "var" / "registry.db").is_file()
    listed = _module(["models", "list"], env)
    assert (listed.returncode, listed.stdout.strip()) == (0, "no models registered")
    malformed = _module(["init"], {**env, "TOLLGATE_DATABASE_URL": "not a url"})
    assert (malformed.returncode, malformed.stderr.count("\n")) == (1, 1)
    assert "malformed database URL" in malformed.stderr
    down = _module(["init"], {**env, "TOLLGATE_DATABASE_URL": "postgresql://u@127.0.0.1:9/db"})
    assert down.returncode == 1
    assert "Connection refused" in down.stderr
    assert "Traceback" not in down.stderr
