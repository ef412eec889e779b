"""gRPC is loaded with the gateway's client setting, which its child processes do not inherit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import GRPC_EXPERIMENTS

ROOT = Path(__file__).resolve().parents[2]


def _import_gateway(tmp_path: Path, environment: dict[str, str]) -> tuple[str, str]:
    """Import `gateway` in a fresh process whose `grpc` is a stand-in recording the variable
    it saw while loading; (what it saw, what the process has afterwards)."""
    fake = tmp_path / "fake" / "grpc"
    fake.mkdir(parents=True)
    seen = tmp_path / "seen"
    (fake / "__init__.py").write_text(
        "import os, pathlib\n"
        f"pathlib.Path({str(seen)!r}).write_text(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    env |= environment | {"PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}
    after = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, gateway, grpc; print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return seen.read_text(), after


def test_grpc_loads_with_the_event_engine_client_off_and_the_variable_is_gone_after(
    tmp_path: Path,
) -> None:
    assert _import_gateway(tmp_path, {}) == (GRPC_EXPERIMENTS, "<unset>")


@pytest.mark.parametrize("own", ["-event_engine_listener", ""])
def test_a_grpc_experiments_of_the_users_own_is_left_alone(tmp_path: Path, own: str) -> None:
    assert _import_gateway(tmp_path, {"GRPC_EXPERIMENTS": own}) == (own, own)
