"""Tools the tests run from Debian's packages (promtool, nginx), fetched without installing.

`apt-get download` fetches the package into `var/tools/`, and `dpkg-deb -x` unpacks it there;
nothing is installed system-wide and no root is needed beyond what `apt-get download` reads.
On a machine where that fails, the tests that need the tool fail in CI
(`TOLLGATE_TEST_REQUIRE_SERVICES=1`) and are skipped elsewhere, saying why.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.services import REQUIRE_SERVICES

TOOLS = Path(__file__).resolve().parents[1] / "var" / "tools"


def debian_tool(package: str, binary: str) -> Path:
    """The path of `binary` (e.g. usr/bin/promtool) from Debian's `package`, fetched once."""
    target = TOOLS / package
    path = target / binary
    if path.is_file():
        return path
    problem = ""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        problem = "apt-get and dpkg-deb are needed to fetch it"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            fetched = subprocess.run(
                ["apt-get", "download", package],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            debs = list(Path(tmp).glob("*.deb"))
            if fetched.returncode != 0 or not debs:
                problem = f"apt-get download {package} failed: {fetched.stderr.strip()[-300:]}"
            else:
                unpacking = target.with_name(f".{package}.partial")
                shutil.rmtree(unpacking, ignore_errors=True)
                unpacking.mkdir(parents=True)
                subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacking)], check=True)
                shutil.rmtree(target, ignore_errors=True)
                unpacking.rename(target)
    if path.is_file():
        return path
    message = f"{binary} from Debian's {package} is not available: {problem or 'not in it'}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)
