"""`python -m hosting serve`: a local Triton serving the registry's model versions;
`python -m hosting configure`: only the model configurations, for a Triton run elsewhere.
(`python -m workers serve|configure` are the same commands.)"""

from __future__ import annotations

import os
import signal
import site
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hosting.binary import TritonUnavailable, ensure_tritonserver
from hosting.config import HostingSettings
from hosting.model_config import write_model_config
from hosting.server import TritonServer
from hosting.serving_plan import servable_models
from registry import migrate
from registry.db import connect
from registry.errors import RegistryError

app = typer.Typer(
    help="Tollgate hosting: a local Triton server.", no_args_is_help=True, add_completion=False
)
out = Console()
err = Console(stderr=True)
ROOT = Path(__file__).resolve().parent.parent


@app.callback()
def main() -> None:
    """Tollgate hosting: a local Triton server for the registry's model versions."""


def python_path() -> str:
    """Where the model's Python code and its dependencies are, for TOLLGATE_PYTHONPATH."""
    return os.pathsep.join([str(ROOT), *site.getsitepackages()])


def prepare(settings: HostingSettings, only: list[str] | None = None) -> dict[str, list[int]]:
    """Write config.pbtxt for every model with versions to serve (or for the models in
    `only`, each of which must have some); return them."""
    db = connect(settings.registry)
    try:
        migrate.check_schema(db)
        models = servable_models(db, settings.registry.model_repository)
    finally:
        db.dispose()
    if only:
        missing = sorted(set(only) - set(models))
        if missing:
            raise TritonUnavailable(
                f"no servable versions for {missing}: publish with `python -m trainer run`"
            )
        models = {m: models[m] for m in only}
    for name, versions in models.items():
        write_model_config(
            settings.registry.model_repository, name, versions, settings.engine, settings.triton
        )
    return models


def server_for(settings: HostingSettings, models: list[str]) -> TritonServer:
    install = ensure_tritonserver(settings.triton_path, settings.triton.pytriton_version)
    return TritonServer(
        install=install,
        settings=settings.triton,
        repository=settings.registry.model_repository,
        log_path=settings.triton_path / "logs" / "tritonserver.log",
        models=models,
        environment={"TOLLGATE_PYTHONPATH": python_path()},
    )


ModelOption = Annotated[
    list[str] | None, typer.Option("--model", help="Only these models (repeatable).")
]


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _select(settings: HostingSettings, model: list[str] | None) -> dict[str, list[int]]:
    """Write the configurations of the models to serve (all, or the named ones)."""
    models = prepare(settings, model)
    if not models:
        raise TritonUnavailable(
            "no model has a ready version to serve: run `python -m trainer run` first"
        )
    return models


@app.command()
def configure(model: ModelOption = None) -> None:
    """Write each model's config.pbtxt (the versions to serve and the engine settings), then
    exit: for a Triton started elsewhere, such as NVIDIA's image with --load-model."""
    settings = HostingSettings()
    try:
        models = _select(settings, model)
    except (RegistryError, TritonUnavailable) as exc:
        raise _fail(exc) from None
    for name, versions in sorted(models.items()):
        out.print(f"{name}: versions {versions} in {settings.registry.model_repository / name}")


@app.command()
def serve(model: ModelOption = None) -> None:
    """Start Triton on the model repository; stop cleanly on Ctrl-C or SIGTERM."""
    settings = HostingSettings()
    try:
        models = _select(settings, model)
        server = server_for(settings, sorted(models))
        server.start()
    except (RegistryError, TritonUnavailable) as exc:
        raise _fail(exc) from None
    for name, versions in sorted(models.items()):
        out.print(f"serving {name} versions {versions}")
    out.print(
        f"Triton ready: HTTP {server.http_url}, gRPC {server.grpc_url}; log {server.log_path}"
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if not server.running:
            err.print(f"[red]error:[/] tritonserver exited: {server.log_tail()}", highlight=False)
            raise typer.Exit(1)
    out.print("stopping: in-flight requests get the grace period")
    server.stop()
