"""The Triton side of the model repository: each model's `config.pbtxt` and its versions.

A version directory (written by `python -m trainer publish`) holds `model.py`, the entry point
copied from `workers/triton_entry.py`, beside the artifacts. The model-level `config.pbtxt`
declares the decoupled python-backend model with the generate I/O contract, the versions to
serve (a specific version policy) and the engine's settings as parameters.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import timedelta
from pathlib import Path

from registry.db import RegistryDatabase, reading
from registry.errors import ModelNotFound
from registry.serving import left_since, rollback_versions, serving_state
from registry.tables import utcnow
from workers.config import WorkerSettings

ENTRY_POINT = Path(__file__).with_name("triton_entry.py")

_CONFIG = """\
# Written by `python -m workers serve` (or `configure`); the versions follow the registry.
name: "{name}"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
version_policy: {{ specific: {{ versions: [ {versions} ] }} }}
input [
  {{ name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true }},
  {{ name: "temperature" data_type: TYPE_FP32 dims: [ 1 ] optional: true }},
  {{ name: "top_p" data_type: TYPE_FP32 dims: [ 1 ] optional: true }},
  {{ name: "top_k" data_type: TYPE_INT32 dims: [ 1 ] optional: true }},
  {{ name: "seed" data_type: TYPE_UINT64 dims: [ 1 ] optional: true }},
  {{ name: "stop" data_type: TYPE_STRING dims: [ -1 ] optional: true }},
  {{ name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true }},
  {{ name: "truncate" data_type: TYPE_BOOL dims: [ 1 ] optional: true }}
]
output [
  {{ name: "text_output" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "token_ids" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "finish_reason" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "prompt_tokens" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "completion_tokens" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "queue_ms" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "first_token_ms" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "total_ms" data_type: TYPE_FP32 dims: [ 1 ] }}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
{parameters}
"""


def model_parameters(settings: WorkerSettings) -> dict[str, str]:
    """The engine's settings as the model configuration carries them (see workers.serving)."""
    parameters = {
        "artifact": settings.worker_artifact,
        "device": settings.worker_device,
        "max_active": settings.worker_max_active,
        "max_queue": settings.worker_max_queue,
        "tokens_per_response": settings.worker_tokens_per_response,
        "response_interval_ms": settings.worker_response_interval_ms,
        "responses_per_s": settings.worker_responses_per_s,
        "senders": settings.worker_senders,
        "lanes": settings.worker_lanes,
        "threads": settings.worker_threads,
        "grace_s": settings.triton_exit_timeout_s,
        # Where a version that fails reaches the server's model control (see triton_model).
        "control_url": f"http://{_loopback(settings.triton_host)}:{settings.triton_http_port}",
    }
    return {key: str(value) for key, value in parameters.items()}


def model_config(name: str, versions: Iterable[int], settings: WorkerSettings) -> str:
    lines = "\n".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
        for k, v in model_parameters(settings).items()
    )
    return _CONFIG.format(
        name=name, versions=", ".join(str(v) for v in sorted(versions)), parameters=lines
    )


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", ""} else host  # noqa: S104 (an address we read)


def write_model_config(
    repository: Path, name: str, versions: Iterable[int], settings: WorkerSettings
) -> Path:
    path = repository / name / "config.pbtxt"
    tmp = path.with_suffix(".pbtxt.tmp")
    tmp.write_text(model_config(name, versions, settings))
    tmp.replace(path)
    return path


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
