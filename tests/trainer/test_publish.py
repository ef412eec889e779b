"""Atomic publish: killed at every stage, a later run leaves only ready, intact versions."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from registry import catalog, integrity, migrate
from registry.config import RegistrySettings
from registry.db import RegistryDatabase, connect, reading
from registry.schemas import VersionPublic
from trainer.publish import (
    ArtifactSource,
    PublishError,
    PublishRequest,
    PublishStage,
    model_lock,
    publish,
    recover,
)

CHILD = Path(__file__).with_name("publish_child.py")


@pytest.fixture
def settings(tmp_path: Path) -> RegistrySettings:
    return RegistrySettings(var_dir=tmp_path / "var", model_repository=tmp_path / "repo")


@pytest.fixture
def db(settings: RegistrySettings) -> RegistryDatabase:
    database = connect(settings)
    migrate.upgrade(database)
    return database


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "build"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"\x08\x01" * 5000)
    (src / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    return src


def _versions(db: RegistryDatabase) -> list[VersionPublic]:
    with reading(db) as session:
        return catalog.list_versions(session=session, model="crashy").items


def _assert_consistent(db: RegistryDatabase, repo: Path) -> None:
    """No ready version without intact files; no version directory that is not a ready version."""
    ready = {v.version for v in _versions(db) if v.status == "ready"}
    with reading(db) as session:
        for number in ready:
            report = integrity.verify_version(
                session=session, repository=repo, model="crashy", version=number
            )
            assert report.ok, report.problems
    on_disk = (
        {int(p.name) for p in (repo / "crashy").iterdir() if p.name.isdigit()}
        if (repo / "crashy").exists()
        else set()
    )
    assert on_disk <= ready | _registering(db), (
        f"directories {on_disk - ready} are not ready versions"
    )


def _registering(db: RegistryDatabase) -> set[int]:
    return {v.version for v in _versions(db) if v.status == "registering"}


def _run_child(settings: RegistrySettings, source: Path, kill_at: str) -> int:
    result = subprocess.run(
        [
            sys.executable,
            str(CHILD),
            settings.database_url,
            str(settings.model_repository),
            str(source),
            kill_at,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode


def test_publish_writes_files_manifest_and_a_ready_row(
    db: RegistryDatabase, settings: RegistrySettings, source: Path
) -> None:
    seen: list[PublishStage] = []
    version = publish(
        db=db,
        repository=settings.model_repository,
        request=PublishRequest(
            model="crashy",
            files={"model.onnx": ArtifactSource(path=source / "model.onnx", format="onnx")},
            dataset_sha256="e" * 64,
            hyperparameters={"n_layer": 2},
            metrics={"val_perplexity": 9.0},
        ),
        on_stage=lambda stage, _n: seen.append(stage),
    )
    assert seen == list(PublishStage)
    assert (version.version, version.status, version.metrics) == (
        1,
        "ready",
        {"val_perplexity": 9.0},
    )
    version_dir = settings.model_repository / "crashy" / "1"
    assert sorted(p.name for p in version_dir.iterdir()) == ["manifest.json", "model.onnx"]
    assert [
        p.name
        for p in (settings.model_repository / "crashy").iterdir()
        if p.name.startswith(".staging")
    ] == []
    _assert_consistent(db, settings.model_repository)


@pytest.mark.parametrize("stage", [s.value for s in PublishStage])
def test_killed_at_any_stage_recovers_to_a_consistent_state(
    db: RegistryDatabase, settings: RegistrySettings, source: Path, stage: str
) -> None:
    assert _run_child(settings, source, stage) == -signal.SIGKILL
    repo = settings.model_repository
    _assert_consistent(db, repo)
    statuses = {v.version: v.status for v in _versions(db)}
    assert statuses == {1: "ready" if stage == "ready" else "registering"}

    assert _run_child(settings, source, "never") == 0  # the next publish recovers first
    _assert_consistent(db, repo)
    statuses = {v.version: v.status for v in _versions(db)}
    expected_first = "ready" if stage in {"moved", "ready"} else "failed"
    assert statuses == {1: expected_first, 2: "ready"}
    assert not list((repo / "crashy").glob(".staging-*"))
    assert (repo / "crashy" / "1").exists() == (expected_first == "ready")


def test_recovery_removes_files_that_differ_from_the_manifest(
    db: RegistryDatabase, settings: RegistrySettings, source: Path
) -> None:
    assert _run_child(settings, source, "moved") == -signal.SIGKILL
    (settings.model_repository / "crashy" / "1" / "model.onnx").write_bytes(b"bit rot")
    with model_lock(settings.model_repository / "crashy"):
        report = recover(db=db, repository=settings.model_repository, model="crashy")
    assert report.actions == ["marked v1 failed: its publish was interrupted"]
    assert not (settings.model_repository / "crashy" / "1").exists()
    _assert_consistent(db, settings.model_repository)


def test_a_failure_while_staging_fails_the_version_and_leaves_no_files(
    db: RegistryDatabase, settings: RegistrySettings, source: Path
) -> None:
    request = PublishRequest(
        model="crashy",
        files={"model.onnx": ArtifactSource(path=source / "model.onnx", format="onnx")},
        dataset_sha256="e" * 64,
    )

    def vanish(stage: PublishStage, _n: int) -> None:
        if stage is PublishStage.REGISTERED:
            (source / "model.onnx").unlink()

    with pytest.raises(FileNotFoundError):
        publish(db=db, repository=settings.model_repository, request=request, on_stage=vanish)
    (v,) = _versions(db)
    assert (v.status, v.status_reason.startswith("publish failed")) == ("failed", True)
    assert [p.name for p in (settings.model_repository / "crashy").iterdir()] == [".publish.lock"]


@pytest.mark.parametrize("name", ["../escape.onnx", "/abs.onnx", "manifest.json"])
def test_artifact_names_are_checked_before_anything_is_written(
    db: RegistryDatabase, settings: RegistrySettings, source: Path, name: str
) -> None:
    request = PublishRequest(
        model="crashy",
        files={name: ArtifactSource(path=source / "model.onnx", format="onnx")},
        dataset_sha256="e" * 64,
    )
    with pytest.raises(PublishError, match="invalid artifact name"):
        publish(db=db, repository=settings.model_repository, request=request)
    with reading(db) as session:
        assert catalog.list_models(session=session).items == []
