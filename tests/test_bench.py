"""The benchmarks say what to do when there is nothing to measure, without a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.generation import bench_engine
from registry import migrate
from registry.config import RegistrySettings
from registry.db import connect
from tests.cli import run_module
from tests.workers.fakes import CharTokenizer, FakeDecoder
from workers.engine import Engine, EngineConfig


@pytest.mark.parametrize(
    ("module", "args"), [("bench.gateway", ["--only-echo"]), ("bench.generation", [])]
)
@pytest.mark.parametrize("migrated", [False, True], ids=["no-registry", "empty-registry"])
def test_a_benchmark_without_a_trained_model_says_how_to_get_one(
    tmp_path: Path, module: str, args: list[str], migrated: bool
) -> None:
    env = {
        **os.environ,
        "TOLLGATE_VAR_DIR": str(tmp_path),
        "TOLLGATE_DATABASE_URL": "",
        "TOLLGATE_MODEL_REPOSITORY": str(tmp_path / "models"),
    }
    if migrated:
        db = connect(RegistrySettings(var_dir=tmp_path, database_url=""))
        migrate.upgrade(db)
        db.dispose()
    done = run_module(module, "--model", "code-gpt", *args, env=env)
    assert done.returncode == 1, done.stderr
    assert "python -m trainer run --preset tiny --model code-gpt" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_engine_alone_is_measured_like_the_server() -> None:
    engine = Engine(decoder=FakeDecoder(), tokenizer=CharTokenizer(), config=EngineConfig(lanes=2))
    engine.start()
    try:
        m = bench_engine(engine, ["abc", "hello there", "x"], max_tokens=12)
    finally:
        engine.stop()
    assert (m.system, m.concurrency, m.tokens) == ("engine", 3, 36)
    assert len(m.ttft_s) == 3
    assert len(m.itl_s) == 3 * 11, "every token after the first has an inter-token time"
    assert m.wall_s > 0
