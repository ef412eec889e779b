"""Which versions a Triton worker should hold, read from the registry.

The versions aliases name, the version a rollback would return to, versions an alias stopped
naming a moment ago, and (for a worker started on its own) the newest ready one. The gateway's
reconciler and `python -m hosting serve` both ask here.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from pathlib import Path

from registry.db import RegistryDatabase, reading
from registry.errors import ModelNotFound
from registry.serving import left_since, rollback_versions, serving_state
from registry.tables import utcnow


def versions_to_serve(
    db: RegistryDatabase, model: str, *, grace_s: float = 0.0, newest: bool = True
) -> list[int]:
    """What a worker should hold: the versions aliases name, the version a rollback of
    `production` would return to (so rolling back is instant), versions an alias stopped
    naming less than `grace_s` ago (gateway replicas may still route there until they next
    read the registry), and, with `newest`, the newest ready version (a worker started on its
    own serves it for trying out; the gateway's reconciler leaves it out). Only ready versions;
    `ModelNotFound` when there is no such model."""
    found = versions_to_serve_all(db, grace_s=grace_s, newest=newest, models=[model])
    if model not in found:
        raise ModelNotFound(f"no model named {model!r}")
    return found[model]


def versions_to_serve_all(
    db: RegistryDatabase,
    *,
    grace_s: float = 0.0,
    newest: bool = True,
    models: Collection[str] | None = None,
) -> dict[str, list[int]]:
    """`versions_to_serve` of every model (or of `models`), in at most five queries however
    many models there are (`registry.serving`); models that do not exist are left out."""
    with reading(db) as session:
        state = serving_state(session=session, models=models)
        wanted = {
            model: {target.version for target in targets.values()}
            for model, targets in state.aliases.items()
        }
        for model, version in rollback_versions(session=session, state=state).items():
            wanted[model].add(version)
        if grace_s > 0:
            since = utcnow() - timedelta(seconds=grace_s)
            for model, versions in left_since(session=session, since=since, models=models).items():
                if model in wanted:  # else a model created since the first query
                    wanted[model] |= versions
    found: dict[str, list[int]] = {}
    for model, ready in state.ready.items():
        if newest and ready:
            wanted[model].add(max(ready))
        found[model] = sorted(wanted[model] & ready.keys())
    return found


def servable_models(db: RegistryDatabase, repository: Path) -> dict[str, list[int]]:
    """Every registered model with versions to serve whose directories hold the entry point."""
    found: dict[str, list[int]] = {}
    for model, wanted in sorted(versions_to_serve_all(db).items()):
        versions = [v for v in wanted if (repository / model / str(v) / "model.py").is_file()]
        if versions:
            found[model] = versions
    return found
