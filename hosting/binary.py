"""The `tritonserver` binary, taken from the `nvidia-pytriton` wheel on PyPI and cached.

The wheel carries a real Triton server, its python backend, one backend stub per Python
version and the shared libraries they need (`nvidia_pytriton.libs/`, found through the
binary's RPATH). Only those parts are unpacked, under `<triton_home>/<release>/`; the
`nvidia-pytriton` package itself is never installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

_MEMBERS = ("pytriton/tritonserver/", "nvidia_pytriton.libs/")


class TritonUnavailable(Exception):
    """The binary could not be obtained or does not run; the message says how to fix it."""


@dataclass(frozen=True)
class TritonInstall:
    root: Path

    @property
    def server(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "backends"

    @property
    def stub(self) -> Path:
        return self.backends / "python" / "triton_python_backend_stub"

    def environment(self) -> dict[str, str]:
        """Variables the server needs: the running interpreter's libpython found first."""
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        return {"LD_LIBRARY_PATH": libdir}


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def ensure_tritonserver(home: Path, release: str) -> TritonInstall:
    """Return a usable install, downloading and unpacking the wheel on first use."""
    install = TritonInstall(root=home / f"pytriton-{release}-py{python_tag()}")
    if not (install.server.is_file() and install.stub.is_file()):
        _unpack(_download(home / "wheels", release), install)
    _check(install)
    return install


def _download(wheels: Path, release: str) -> Path:
    found = sorted(wheels.glob(f"nvidia_pytriton-{release}-*.whl"))
    if found:
        return found[-1]
    wheels.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--disable-pip-version-check", "--dest", str(wheels), f"nvidia-pytriton=={release}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    found = sorted(wheels.glob(f"nvidia_pytriton-{release}-*.whl"))
    if result.returncode != 0 or not found:
        detail = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise TritonUnavailable(
            f"cannot download nvidia-pytriton=={release} from PyPI ({detail}); "
            f"put the wheel into {wheels} or install Triton and set TOLLGATE_TRITON_HOME"
        )
    return found[-1]


def _unpack(wheel: Path, install: TritonInstall) -> None:
    staging = install.root.with_name(install.root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.startswith(_MEMBERS)]
            archive.extractall(staging, members)
    except (zipfile.BadZipFile, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise TritonUnavailable(
            f"{wheel} is not a usable wheel ({exc}); delete it and retry"
        ) from exc
    tree = staging / "pytriton" / "tritonserver"
    stub = tree / "python_backend_stubs" / python_tag() / "triton_python_backend_stub"
    if not stub.is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise TritonUnavailable(
            f"nvidia-pytriton has no python backend stub for Python {python_tag()}"
        )
    shutil.copy2(stub, tree / "backends" / "python" / stub.name)
    for executable in (tree / "bin" / "tritonserver", tree / "backends" / "python" / stub.name):
        executable.chmod(0o755)
    shutil.rmtree(install.root, ignore_errors=True)
    staging.rename(install.root)


def _check(install: TritonInstall) -> None:
    """Run the binary once so that a missing library is reported now, clearly."""
    try:
        result = subprocess.run(
            [str(install.server), "--help"],
            capture_output=True,
            text=True,
            env=install.environment(),
            check=False,
            timeout=60,
        )
    except OSError as exc:
        raise TritonUnavailable(
            f"{install.server} does not run ({exc}); delete {install.root} to unpack it again"
        ) from exc
    if "error while loading shared libraries" in result.stderr:
        missing = result.stderr.strip().splitlines()[-1]
        raise TritonUnavailable(
            f"{install.server} cannot start: {missing}; delete {install.root} to unpack it again"
        )
