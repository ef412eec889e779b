"""Running a local `tritonserver` process: start, wait until ready, stop with a grace period.

The server serves `model_repository/` in explicit model-control mode (the admin flow decides
which versions are loaded), binds the host and ports from settings, and logs to a file.
Stopping sends SIGTERM: Triton stops accepting requests and lets in-flight ones finish for
`TOLLGATE_TRITON_EXIT_TIMEOUT_S`; a server that outlives that (plus a margin) is killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from hosting.binary import TritonInstall, TritonUnavailable
from hosting.config import TritonSettings

_KILL_MARGIN_S = 10.0
_ERROR_LINE = re.compile(r"^E\d{4} ")


class TritonStartError(TritonUnavailable):
    """The server exited or did not become ready; the message quotes its log."""


class TritonServer:
    """One `tritonserver` process; use as a context manager or call start/stop."""

    def __init__(
        self,
        *,
        install: TritonInstall,
        settings: TritonSettings,
        repository: Path,
        log_path: Path,
        models: Sequence[str] = (),
        environment: dict[str, str] | None = None,
    ) -> None:
        self.install = install
        self.settings = settings
        self.repository = repository
        self.models = list(models)
        self.log_path = log_path
        self.environment = environment or {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.settings.host}:{self.settings.grpc_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        s = self.settings
        args = [
            str(self.install.server),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.install.backends}",
            "--model-control-mode=explicit",
            f"--http-address={s.host}",
            f"--http-port={s.http_port}",
            f"--grpc-address={s.host}",
            f"--grpc-port={s.grpc_port}",
            f"--metrics-address={s.host}",
            f"--metrics-port={s.metrics_port}",
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            f"--exit-timeout-secs={s.exit_timeout_s}",
        ]
        return args + [f"--load-model={m}" for m in self.models]

    def start(self) -> None:
        """Start the process and return once it reports ready (or raise with its log)."""
        if self._process is not None:
            raise RuntimeError("this server is already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.install.environment(), **self.environment},
                start_new_session=True,
            )
        self.wait_ready(self.settings.ready_timeout_s)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise TritonStartError(
                    f"tritonserver exited with status {self._process.returncode}: {self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        self.stop()
        raise TritonStartError(
            f"tritonserver was not ready after {timeout:.0f} s: {self.log_tail()}"
        )

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> int | None:
        """SIGTERM, wait for in-flight requests (the exit timeout), then SIGKILL if needed."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(self.settings.exit_timeout_s + _KILL_MARGIN_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def log_tail(self, lines: int = 6) -> str:
        """The log's error lines (Triton prefixes them with `E`), else its last lines."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        useful = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in useful if _ERROR_LINE.match(line)]
        return " | ".join((errors or useful)[-lines:]) or "(empty log)"

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
