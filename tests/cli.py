"""Run one of the project's command-line entry points as a user does: `python -m <module>`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from tests.published import ROOT


def run_module(
    module: str, *args: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run it from the repository root with `env`; the result, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
