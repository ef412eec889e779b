"""Tools the tests run from Debian's packages (promtool, nginx), fetched without installing.

`apt-get download` fetches the package into `var/tools/`, and `dpkg-deb -x` unpacks it there;
nothing is installed system-wide. A fresh machine may have no package lists yet: when the
download cannot find the package, `apt-get update` runs once and the download is tried again.
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


def debian_tool(package: str, binary: str, apt_options: tuple[str, ...] = ()) -> Path:
    """The path of `binary` (e.g. usr/bin/promtool) from Debian's `package`, fetched once.
    `apt_options` are passed to apt-get (`-o Name=value`), e.g. to use other package lists."""
    target = TOOLS / package
    path = target / binary
    if path.is_file():
        return path
    problem = ""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        problem = "apt-get and dpkg-deb are needed to fetch it"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            deb, said = _download(package, Path(tmp), apt_options)
            if deb is None:
                updated = _apt(["update", "-q"], Path(tmp), apt_options, timeout=600)
                deb, said = _download(package, Path(tmp), apt_options)
                if updated.returncode != 0:
                    said += f"; apt-get update failed: {updated.stderr.strip()[-200:]}"
            if deb is None:
                problem = f"apt-get download {package} failed: {said}"
            else:
                unpacking = target.with_name(f".{package}.partial")
                shutil.rmtree(unpacking, ignore_errors=True)
                unpacking.mkdir(parents=True)
                subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacking)], check=True)
                shutil.rmtree(target, ignore_errors=True)
                unpacking.rename(target)
    if path.is_file():
        return path
    message = f"{binary} from Debian's {package} is not available: {problem or 'not in it'}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def _apt(
    args: list[str], cwd: Path, options: tuple[str, ...], timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *(f"-o{o}" for o in options), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def _download(package: str, into: Path, options: tuple[str, ...]) -> tuple[Path | None, str]:
    """The package's .deb downloaded into `into` (None if it was not), and what apt-get said."""
    done = _apt(["download", package], into, options)
    debs = sorted(into.glob("*.deb"))
    said = done.stderr.strip()[-300:] or f"exit status {done.returncode}"
    return (debs[0] if done.returncode == 0 and debs else None), said
