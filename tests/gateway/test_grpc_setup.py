"""gRPC is loaded with the gateway's client setting, which its child processes do not inherit;
importing the gateway changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.triton.grpc_setup import GRPC_EXPERIMENTS

ROOT = Path(__file__).resolve().parents[2]


def _load_grpc(
    tmp_path: Path, environment: dict[str, str], code: str = "load_grpc()"
) -> tuple[str, str]:
    """Run `code` in a fresh process whose `grpc` first records the variable it saw while
    loading, then import grpc; (what it saw, what the process has afterwards)."""
    fake = tmp_path / "fake" / "grpc"
    fake.mkdir(parents=True)
    seen = tmp_path / "seen"
    # It records, then hands over to the real grpc (what `import grpc` returns is what the
    # module leaves in sys.modules), so tritonclient loads as usual.
    (fake / "__init__.py").write_text(
        "import importlib, os, pathlib, sys\n"
        f"pathlib.Path({str(seen)!r}).write_text(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))\n"
        f"sys.path.remove({str(fake.parent)!r})\n"
        "del sys.modules['grpc']\n"
        "sys.modules['grpc'] = importlib.import_module('grpc')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    env |= environment | {"PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}
    after = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\n"
            "from gateway.triton.grpc_setup import load_grpc\n"
            f"{code}\n"
            "import grpc\n"
            "print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))",
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
    assert _load_grpc(tmp_path, {}) == (GRPC_EXPERIMENTS, "<unset>")


def test_importing_the_gateway_leaves_grpc_and_the_environment_alone(tmp_path: Path) -> None:
    code = "import gateway, gateway.app, gateway.cli, gateway.triton.pool"
    assert _load_grpc(tmp_path, {}, code) == ("<unset>", "<unset>")


def test_python_m_gateway_loads_grpc_before_anything_else() -> None:
    entry = (ROOT / "gateway" / "__main__.py").read_text()
    assert entry.index("load_grpc()") < entry.index("from gateway.cli import")


@pytest.mark.parametrize("own", ["-event_engine_listener", ""])
def test_a_grpc_experiments_of_the_users_own_is_left_alone(tmp_path: Path, own: str) -> None:
    assert _load_grpc(tmp_path, {"GRPC_EXPERIMENTS": own}) == (own, own)
