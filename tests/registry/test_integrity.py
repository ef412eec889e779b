"""verify re-hashes files against the record; rebuild recreates rows from manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry import catalog, integrity
from registry.config import RegistrySettings
from registry.db import RegistryDatabase, connect, reading, writing
from registry.errors import ManifestError
from registry.integrity import ProblemKind, RebuildOutcome
from registry.manifest import (
    DatasetRecord,
    Manifest,
    VersionRef,
    describe_file,
    read_manifest,
    write_manifest,
)
from registry.migrate import upgrade
from registry.tables import utcnow
from tests.registry.conftest import DATASET


def publish(
    db: RegistryDatabase, repo: Path, model: str, *, parent: VersionRef | None = None
) -> Path:
    """Register a version, write its files and manifest, complete it (as the trainer does)."""
    with writing(db) as session:
        v = catalog.register_version(
            session=session,
            model=model,
            dataset_sha256=DATASET,
            hyperparameters={"lr": 0.1},
            parent=parent,
        )
    version_dir = repo / model / str(v.version)
    version_dir.mkdir(parents=True)
    (version_dir / "model.onnx").write_bytes(b"weights" * 100)
    (version_dir / "tokenizer.json").write_text('{"vocab": {}}')
    artifacts = [
        describe_file(version_dir, "model.onnx", "onnx"),
        describe_file(version_dir, "tokenizer.json", "tokenizer"),
    ]
    write_manifest(
        version_dir,
        Manifest(
            model=model,
            version=v.version,
            created_at=utcnow(),
            created_by="trainer",
            dataset=DatasetRecord(sha256=DATASET, uri="python-stdlib", report={"kept": 3}),
            hyperparameters={"lr": 0.1},
            metrics={"val_perplexity": 70.0},
            parent=parent,
            artifacts=artifacts,
        ),
    )
    with writing(db) as session:
        catalog.complete_version(
            session=session,
            model=model,
            version=v.version,
            artifacts=artifacts,
            metrics={"val_perplexity": 70.0},
        )
    return version_dir


def _problems(
    db: RegistryDatabase, repo: Path, model: str = "demo", version: int = 1
) -> set[tuple[str, ProblemKind]]:
    with reading(db) as session:
        report = integrity.verify_version(
            session=session, repository=repo, model=model, version=version
        )
    return {(p.path, p.kind) for p in report.problems}


def test_verify_passes_on_intact_files(db: RegistryDatabase, settings: RegistrySettings) -> None:
    publish(db, settings.model_repository, "demo")
    assert _problems(db, settings.model_repository) == set()


def test_verify_reports_every_mismatch(db: RegistryDatabase, settings: RegistrySettings) -> None:
    version_dir = publish(db, settings.model_repository, "demo")
    (version_dir / "model.onnx").write_bytes(b"tampered" * 100)
    (version_dir / "tokenizer.json").unlink()
    (version_dir / "extra.bin").write_bytes(b"?")
    assert _problems(db, settings.model_repository) == {
        ("model.onnx", ProblemKind.SIZE),
        ("tokenizer.json", ProblemKind.MISSING),
        ("extra.bin", ProblemKind.UNRECORDED),
    }
    (version_dir / "model.onnx").write_bytes(b"WEIGHTS" * 100)  # same size, other bytes
    (version_dir / "manifest.json").unlink()
    problems = _problems(db, settings.model_repository)
    assert ("model.onnx", ProblemKind.SHA256) in problems
    assert ("manifest.json", ProblemKind.MANIFEST) in problems


def test_rebuild_recreates_rows_from_manifests(
    db: RegistryDatabase, settings: RegistrySettings, tmp_path: Path
) -> None:
    repo = settings.model_repository
    publish(db, repo, "teacher")
    publish(db, repo, "student", parent=VersionRef(model="teacher", version=1))
    broken = publish(db, repo, "student")
    (broken / "model.onnx").write_bytes(b"corrupt")
    (repo / "student" / "9").mkdir()  # a directory without a manifest
    # A brand-new, empty database: the disaster-recovery case.
    fresh = connect(RegistrySettings(var_dir=tmp_path / "fresh", model_repository=repo))
    upgrade(fresh)
    with writing(fresh) as session:
        report = integrity.rebuild_from_repository(session=session, repository=repo)
    assert (report.count(RebuildOutcome.CREATED), report.count(RebuildOutcome.CREATED_FAILED)) == (
        2,
        1,
    )
    assert report.count(RebuildOutcome.SKIPPED) == 1
    with reading(fresh) as session:
        student = catalog.get_version(session=session, model="student", version=1)
        failed = catalog.get_version(session=session, model="student", version=2)
        original = catalog.get_version(session=session, model="teacher", version=1)
    with reading(db) as session:
        assert (
            original.artifacts
            == catalog.get_version(session=session, model="teacher", version=1).artifacts
        )
    assert student.parent == VersionRef(model="teacher", version=1)
    assert (student.status, student.dataset_sha256, student.metrics) == (
        "ready",
        DATASET,
        {"val_perplexity": 70.0},
    )
    assert failed.status == "failed"
    assert "model.onnx size_mismatch" in failed.status_reason
    with writing(fresh) as session:
        again = integrity.rebuild_from_repository(session=session, repository=repo)
        nxt = catalog.register_version(session=session, model="student", dataset_sha256=DATASET)
    assert again.count(RebuildOutcome.EXISTS) == 3
    assert nxt.version == 3, "numbers continue after the highest rebuilt version"
    fresh.dispose()


def test_manifest_round_trip_and_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="unreadable"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"model": "m"}')
    with pytest.raises(ManifestError, match="invalid manifest"):
        read_manifest(tmp_path)
