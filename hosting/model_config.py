"""The Triton side of the model repository: each model's `config.pbtxt`, and the entry point.

A version directory (written by `python -m trainer publish`) holds `model.py`, the entry point
copied from `workers/triton_entry.py`, beside the artifacts. The model-level `config.pbtxt`
declares the decoupled python-backend model with the generate I/O contract, the versions to
serve (a specific version policy) and the engine's settings as parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hosting.config import EngineSettings, TritonSettings

# The worker's entry point, copied into each version directory as `model.py` at publish. It is
# named by path, not imported: hosting never loads the worker code (it runs inside Triton).
ENTRY_POINT = Path(__file__).resolve().parent.parent / "workers" / "triton_entry.py"

_CONFIG = """\
# Written by `python -m hosting serve` (or `configure`); the versions follow the registry.
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


def model_parameters(engine: EngineSettings, triton: TritonSettings) -> dict[str, str]:
    """The engine's settings as the model configuration carries them (see workers.serving)."""
    parameters = {
        **engine.model_dump(),
        "grace_s": triton.exit_timeout_s,
        # Where a version that fails reaches the server's model control (see triton_model).
        "control_url": f"http://{_loopback(triton.host)}:{triton.http_port}",
    }
    return {key: str(value) for key, value in parameters.items()}


def model_config(
    name: str, versions: Iterable[int], engine: EngineSettings, triton: TritonSettings
) -> str:
    lines = "\n".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
        for k, v in model_parameters(engine, triton).items()
    )
    return _CONFIG.format(
        name=name, versions=", ".join(str(v) for v in sorted(versions)), parameters=lines
    )


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", ""} else host  # noqa: S104 (an address we read)


def write_model_config(
    repository: Path,
    name: str,
    versions: Iterable[int],
    engine: EngineSettings,
    triton: TritonSettings,
) -> Path:
    path = repository / name / "config.pbtxt"
    tmp = path.with_suffix(".pbtxt.tmp")
    tmp.write_text(model_config(name, versions, engine, triton))
    tmp.replace(path)
    return path
