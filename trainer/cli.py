"""`python -m trainer`: the whole pipeline (`run`), or one step at a time.

Errors print one line on stderr and exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from registry import aliases, catalog, integrity, migrate
from registry.aliases import FIRST_VERSION_REASON
from registry.db import RegistryDatabase, connect, reading, writing
from registry.errors import InvalidInput, ModelNotFound, RegistryError
from registry.schemas import VersionPublic
from registry.tables import VersionStatus
from trainer.checkpoint import load_model
from trainer.config import TrainerSettings
from trainer.data.pipeline import EmptyDatasetError
from trainer.data.sources import InputError
from trainer.distill import DistillError
from trainer.export_hf import export_hf
from trainer.export_onnx import ExportParityError
from trainer.presets import PresetError, load_preset
from trainer.publish import PublishError, model_lock, recover
from trainer.rundir import Run, RunSpec, StepError
from trainer.runs import (
    step_data,
    step_export,
    step_publish,
    step_quantize,
    step_train,
)

app = typer.Typer(
    help="Train, export, quantize and publish model versions.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

_EXPECTED = (
    RegistryError,
    StepError,
    PresetError,
    EmptyDatasetError,
    InputError,
    DistillError,
    ExportParityError,
    PublishError,
)

Preset = Annotated[str, typer.Option(help="Preset name (tiny, small) or path to a preset .toml.")]
Data = Annotated[
    list[str] | None,
    typer.Option("--data", help="JSONL, text file, directory or glob; repeatable."),
]
ModelName = Annotated[str, typer.Option("--model", help="Registry model name to publish as.")]
RunDir = Annotated[Path, typer.Option(help="The run directory (see `run --help`).")]
MaxMinutes = Annotated[float | None, typer.Option(help="Training time budget in minutes.")]
MaxSteps = Annotated[int | None, typer.Option(help="Training budget in optimizer steps.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the published version as JSON.")]


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except _EXPECTED as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _settings() -> TrainerSettings:
    settings = TrainerSettings()
    if settings.trainer_threads:
        torch.set_num_threads(settings.trainer_threads)
    return settings


@contextmanager
def _registry(settings: TrainerSettings) -> Iterator[RegistryDatabase]:
    """The registry, migrated first: the trainer can be the first to use a fresh one."""
    db = connect(settings.registry)
    try:
        migrate.upgrade(db)
        yield db
    finally:
        db.dispose()


def _training_overrides(max_minutes: float | None, max_steps: int | None) -> dict[str, Any]:
    given = {"max_minutes": max_minutes, "max_steps": max_steps}
    return {"training": {k: v for k, v in given.items() if v is not None}}


def _new_run(
    settings: TrainerSettings, *, model: str, preset: str, run_dir: Path | None, **spec: Any
) -> Run:
    catalog.validate_model_name(model)
    load_preset(preset)  # fail before any work if the preset is bad
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = run_dir or settings.runs_path / f"{model}-{Path(preset).stem}-{stamp}"
    if (path / "run.json").exists():
        return Run(path)
    return Run.create(path, RunSpec(model=model, preset=preset, **spec))


def _show(version: VersionPublic, as_json: bool) -> None:
    if as_json:
        typer.echo(version.model_dump_json(indent=2))
        return
    table = Table(
        "metric",
        "value",
        title=f"{version.model} v{version.version} ({version.status})",
        title_justify="left",
    )
    for key, value in version.metrics.items():
        if not isinstance(value, dict):
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(table)
    out.print(f"dataset sha256 {version.dataset_sha256}; code {version.code_revision}")


def _pipeline(run: Run, settings: TrainerSettings) -> VersionPublic:
    if not (run.ids_dir / "val.npy").exists():
        step_data(run, out)
    if not run.result.exists():
        step_train(run, out, device=settings.trainer_device)
    if not (run.export_dir / "parity.json").exists():
        step_export(run, out)
    if not (run.export_dir / "quantization.json").exists():
        step_quantize(run, out)
    with _registry(settings) as db:
        if run.published.exists():
            ref = json.loads(run.published.read_text())
            with reading(db) as session:
                return catalog.get_version(
                    session=session, model=ref["model"], version=ref["version"]
                )
        return step_publish(run, out, db=db, repository=settings.registry.model_repository)


def _latest_ready(settings: TrainerSettings, model: str) -> VersionPublic | None:
    try:
        with _registry(settings) as db, reading(db) as session:
            ready = catalog.list_versions(
                session=session, model=model, status=VersionStatus.READY, limit=1
            )
    except ModelNotFound:
        return None
    return ready.items[0] if ready.items else None


@app.command()
def run(
    preset: Preset = "tiny",
    data: Data = None,
    model: ModelName = "code-gpt",
    max_minutes: MaxMinutes = None,
    max_steps: MaxSteps = None,
    run_dir: Annotated[Path | None, typer.Option(help="Resume this run directory.")] = None,
    skip_if_published: Annotated[
        bool, typer.Option(help="Do nothing if MODEL already has a ready version; print it.")
    ] = False,
    production_if_none: Annotated[
        bool,
        typer.Option(
            help="Then, if MODEL has never had a production version, make its newest ready "
            "version production (a fresh deployment serves its first trained version)."
        ),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Data → tokenizer → train → ONNX export → INT8 → publish, then print the version.

    Runs live in $TOLLGATE_RUNS_DIR (default var/runs). Give --run-dir to resume one: finished
    steps are skipped and training continues from its last checkpoint.
    """
    with _errors():
        settings = _settings()
        if skip_if_published and (existing := _latest_ready(settings, model)) is not None:
            out.print(f"{model} already has a ready version; not training")
            _show(existing, as_json)
        else:
            overrides = _training_overrides(max_minutes, max_steps)
            current = _new_run(
                settings,
                model=model,
                preset=preset,
                run_dir=run_dir,
                preset_config=overrides,
                inputs=data,
            )
            out.print(f"run directory: {current.path}")
            _show(_pipeline(current, settings), as_json)
        if production_if_none:
            _adopt_first_version(settings, model)


def _adopt_first_version(settings: TrainerSettings, model: str) -> None:
    with _registry(settings) as db, writing(db) as session:
        adopted = aliases.adopt_first_version(
            session=session, model=model, actor="trainer", reason=FIRST_VERSION_REASON
        )
    if adopted is not None:
        out.print(f"{model} v{adopted} is now production")


@app.command("data")
def data_step(
    run_dir: RunDir, preset: Preset = "tiny", data: Data = None, model: ModelName = "code-gpt"
) -> None:
    """Clean, hash and split the data, train the tokenizer and encode (creates the run)."""
    with _errors():
        current = _new_run(
            _settings(), model=model, preset=preset, run_dir=run_dir, preset_config={}, inputs=data
        )
        step_data(current, out)


@app.command("train")
def train_step(
    run_dir: RunDir,
    max_minutes: MaxMinutes = None,
    max_steps: MaxSteps = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = True,
) -> None:
    """Train (or resume training) the run's model."""
    with _errors():
        settings, current = _settings(), Run.open(run_dir)
        spec = current.spec()
        overrides = _training_overrides(max_minutes, max_steps)["training"]
        if overrides:
            training = {**spec.preset_config.get("training", {}), **overrides}
            Run.create(
                run_dir,
                RunSpec(
                    **{**vars(spec), "preset_config": {**spec.preset_config, "training": training}}
                ),
            )
        step_train(current, out, device=settings.trainer_device, resume=resume)


@app.command("export")
def export_step(run_dir: RunDir) -> None:
    """Export the trained model to ONNX and check it against PyTorch."""
    with _errors():
        step_export(Run.open(run_dir), out)


@app.command("quantize")
def quantize_step(run_dir: RunDir) -> None:
    """INT8-quantize the ONNX model and measure size, speed and perplexity against fp32."""
    with _errors():
        step_quantize(Run.open(run_dir), out)


@app.command("publish")
def publish_step(run_dir: RunDir, as_json: AsJson = False) -> None:
    """Publish the run atomically into the model repository and the registry."""
    with _errors():
        settings = _settings()
        with _registry(settings) as db:
            version = step_publish(
                Run.open(run_dir), out, db=db, repository=settings.registry.model_repository
            )
        _show(version, as_json)


def _version_files(settings: TrainerSettings, ref: str) -> tuple[str, int, Path]:
    """Resolve MODEL:VERSION to a ready version whose files verify; return its directory."""
    model, _, number = ref.partition(":")
    if not number.isdigit():
        raise InvalidInput(f"name a version as MODEL:VERSION, got {ref!r}")
    with _registry(settings) as db, reading(db) as session:
        version = catalog.get_version(session=session, model=model, version=int(number))
        if version.status != "ready":
            raise StepError(f"{model} v{number} is {version.status}, not ready")
        report = integrity.verify_version(
            session=session,
            repository=settings.registry.model_repository,
            model=model,
            version=int(number),
        )
    if not report.ok:
        raise StepError(
            f"{model} v{number} fails verification: {[p.model_dump() for p in report.problems]}"
        )
    return model, int(number), settings.registry.model_repository / model / number


@app.command()
def distill(
    teacher: Annotated[str, typer.Option(help="Teacher version as MODEL:VERSION.")],
    preset: Preset = "tiny",
    data: Data = None,
    model: ModelName = "code-gpt-student",
    temperature: Annotated[float, typer.Option(help="Softening temperature.")] = 2.0,
    alpha: Annotated[float, typer.Option(help="Weight of the distillation term (0-1).")] = 0.5,
    max_minutes: MaxMinutes = None,
    max_steps: MaxSteps = None,
    as_json: AsJson = False,
) -> None:
    """Train a student preset from a teacher version and publish it with the teacher as parent."""
    with _errors():
        settings = _settings()
        name, number, directory = _version_files(settings, teacher)
        spec_teacher = {
            "model": name,
            "version": number,
            "weights": str(directory / "model.pt"),
            "tokenizer": str(directory / "tokenizer.json"),
            "distill": {"temperature": temperature, "alpha": alpha},
        }
        overrides = _training_overrides(max_minutes, max_steps)
        current = _new_run(
            settings,
            model=model,
            preset=preset,
            run_dir=None,
            preset_config=overrides,
            inputs=data,
            teacher=spec_teacher,
        )
        out.print(f"run directory: {current.path}; teacher {name} v{number}")
        _show(_pipeline(current, settings), as_json)


@app.command("export-hf")
def export_hf_command(
    model: str,
    version: int,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write.")],
) -> None:
    """Write a published version as a Hugging Face transformers GPT-2 directory."""
    with _errors():
        _, _, directory = _version_files(_settings(), f"{model}:{version}")
        export_hf(
            model=load_model(directory / "model.pt"),
            tokenizer_path=directory / "tokenizer.json",
            out_dir=out_dir,
        )
        out.print(
            f"wrote {out_dir}: load it with AutoModelForCausalLM.from_pretrained({str(out_dir)!r})"
        )


@app.command("recover")
def recover_command(model: str) -> None:
    """Clean up after a publish of MODEL that was killed (publish also does this first)."""
    with _errors():
        settings = _settings()
        lock = model_lock(settings.registry.model_repository / catalog.validate_model_name(model))
        with _registry(settings) as db, lock:
            report = recover(db=db, repository=settings.registry.model_repository, model=model)
        for action in report.actions or ["nothing to recover"]:
            out.print(action)
