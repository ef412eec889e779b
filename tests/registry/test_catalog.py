"""Models and versions: numbering, lifecycle, validation, pagination."""

from __future__ import annotations

import pytest

from registry import catalog
from registry.db import RegistryDatabase, reading, writing
from registry.errors import InvalidInput, InvalidState, ModelNotFound, VersionNotFound
from registry.manifest import ArtifactRecord, VersionRef
from registry.tables import VersionStatus
from tests.registry.conftest import DATASET, ReadyFactory

ARTIFACT = ArtifactRecord(path="model.int8.onnx", format="onnx-int8", size=10, sha256="a" * 64)


def test_register_records_everything_and_numbers_from_one(db: RegistryDatabase) -> None:
    with writing(db) as session:
        v = catalog.register_version(
            session=session,
            model="code-gpt",
            dataset_sha256=DATASET,
            dataset_uri="python-stdlib:3.11.7",
            data_report={"kept": 10, "dropped": {"duplicate": 2}},
            hyperparameters={"n_layer": 4, "lr": 3e-4},
            code_revision="abc123",
            tags={"preset": "tiny"},
            created_by="trainer",
        )
    assert (v.version, v.status) == (1, "registering")
    with writing(db) as session:
        done = catalog.complete_version(
            session=session,
            model="code-gpt",
            version=1,
            artifacts=[ARTIFACT],
            metrics={"ppl": 70.5},
        )
    with reading(db) as session:
        shown = catalog.get_version(session=session, model="code-gpt", version=1)
    assert shown == done
    assert shown.status == "ready"
    assert shown.data_report == {"kept": 10, "dropped": {"duplicate": 2}}
    assert shown.hyperparameters == {"n_layer": 4, "lr": 3e-4}
    assert shown.metrics == {"ppl": 70.5}
    assert shown.artifacts == [ARTIFACT]
    assert (shown.code_revision, shown.created_by, shown.tags) == (
        "abc123",
        "trainer",
        {"preset": "tiny"},
    )
    assert shown.created_at.tzinfo is not None


def test_numbers_increase_per_model_and_failed_numbers_are_not_reused(db: RegistryDatabase) -> None:
    with writing(db) as session:
        a1 = catalog.register_version(session=session, model="a", dataset_sha256=DATASET)
        b1 = catalog.register_version(session=session, model="b", dataset_sha256=DATASET)
    with writing(db) as session:
        catalog.fail_version(session=session, model="a", version=1, reason="export failed")
        a2 = catalog.register_version(session=session, model="a", dataset_sha256=DATASET)
    assert (a1.version, b1.version, a2.version) == (1, 1, 2)
    with reading(db) as session:
        failed = catalog.get_version(session=session, model="a", version=1)
    assert (failed.status, failed.status_reason) == ("failed", "export failed")


def test_lineage_records_the_parent_version(db: RegistryDatabase, make_ready: ReadyFactory) -> None:
    teacher = make_ready("teacher")
    student = make_ready("student", parent=VersionRef(model="teacher", version=teacher.version))
    assert student.parent == VersionRef(model="teacher", version=1)
    with writing(db) as session, pytest.raises(VersionNotFound):
        catalog.register_version(
            session=session,
            model="student",
            dataset_sha256=DATASET,
            parent=VersionRef(model="teacher", version=9),
        )


@pytest.mark.parametrize("name", ["", "Upper", "has space", "-lead", "x" * 65, "dot.name", "ünï"])
def test_model_names_are_validated(db: RegistryDatabase, name: str) -> None:
    with writing(db) as session, pytest.raises(InvalidInput, match="invalid model name"):
        catalog.register_version(session=session, model=name, dataset_sha256=DATASET)


def test_bad_input_writes_nothing(db: RegistryDatabase) -> None:
    with writing(db) as session, pytest.raises(InvalidInput, match="dataset_sha256"):
        catalog.register_version(session=session, model="m", dataset_sha256="not-a-hash")
    with writing(db) as session:
        catalog.register_version(session=session, model="m", dataset_sha256=DATASET)
    with writing(db) as session, pytest.raises(InvalidInput, match="repeat"):
        catalog.complete_version(
            session=session, model="m", version=1, artifacts=[ARTIFACT, ARTIFACT]
        )
    with writing(db) as session, pytest.raises(InvalidInput, match="at least one artifact"):
        catalog.complete_version(session=session, model="m", version=1, artifacts=[])
    with reading(db) as session:
        v = catalog.get_version(session=session, model="m", version=1)
        assert catalog.list_models(session=session).items[0].name == "m"
    assert (v.status, v.artifacts) == ("registering", [])


def test_lifecycle_transitions_are_enforced(db: RegistryDatabase, make_ready: ReadyFactory) -> None:
    make_ready()
    with writing(db) as session, pytest.raises(InvalidState, match="only registering"):
        catalog.complete_version(session=session, model="demo", version=1, artifacts=[ARTIFACT])
    with writing(db) as session, pytest.raises(InvalidState, match="only registering"):
        catalog.fail_version(session=session, model="demo", version=1, reason="late")
    with writing(db) as session:
        archived = catalog.archive_version(session=session, model="demo", version=1, reason="old")
    assert archived.status == "archived"
    with writing(db) as session, pytest.raises(InvalidState):
        catalog.archive_version(session=session, model="demo", version=1, reason="again")


def test_unknown_model_and_version_raise_typed_errors(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    make_ready()
    with reading(db) as session:
        with pytest.raises(ModelNotFound):
            catalog.get_version(session=session, model="nope", version=1)
        with pytest.raises(VersionNotFound):
            catalog.get_version(session=session, model="demo", version=2)
        with pytest.raises(ModelNotFound):
            catalog.list_versions(session=session, model="nope")


def test_listings_are_ordered_paginated_and_bounded(
    db: RegistryDatabase, make_ready: ReadyFactory
) -> None:
    for name in ["c", "a", "b"]:
        make_ready(name)
    for _ in range(4):
        make_ready("a")
    with reading(db) as session:
        first = catalog.list_models(session=session, limit=2)
        second = catalog.list_models(session=session, limit=2, cursor=first.next_cursor)
        assert [m.name for m in first.items + second.items] == ["a", "b", "c"]
        assert second.next_cursor is None
        seen: list[int] = []
        cursor: str | None = None
        while True:
            page = catalog.list_versions(session=session, model="a", limit=2, cursor=cursor)
            seen += [v.version for v in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [5, 4, 3, 2, 1]
        ready = catalog.list_versions(session=session, model="a", status=VersionStatus.READY)
        assert len(ready.items) == 5
        with pytest.raises(InvalidInput, match="limit"):
            catalog.list_models(session=session, limit=0)
        with pytest.raises(InvalidInput, match="limit"):
            catalog.list_models(session=session, limit=100_000)
        with pytest.raises(InvalidInput, match="cursor"):
            catalog.list_versions(session=session, model="a", cursor="x'; drop")
