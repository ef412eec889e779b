"""The version a benchmark measures: the newest ready one of a model, or a clear exit."""

from __future__ import annotations

from registry import catalog
from registry.config import RegistrySettings
from registry.db import connect, reading
from registry.errors import RegistryError
from registry.tables import VersionStatus


def newest_ready(settings: RegistrySettings, model: str) -> int:
    """The newest ready version of `model`; exits with what to do when there is none."""
    how = f"train one first: python -m trainer run --preset tiny --model {model} (or make run)"
    db = connect(settings)
    try:
        with reading(db) as session:
            found = catalog.list_versions(
                session=session, model=model, status=VersionStatus.READY, limit=1
            ).items
    except RegistryError as exc:
        raise SystemExit(f"no version of {model} to measure ({exc}): {how}") from None
    finally:
        db.dispose()
    if not found:
        raise SystemExit(f"{model} has no ready version to measure: {how}")
    return found[0].version
