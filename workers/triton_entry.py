"""Triton entry point of a Tollgate generate model version: the code lives in `workers/`.

Published as `model.py` into every version directory. Triton runs it in isolated mode, which
ignores PYTHONPATH, so `python -m hosting serve` passes the project's paths in
TOLLGATE_PYTHONPATH; where the `workers` package is installed (the production image), that
variable is unset and nothing changes.
"""

import os
import sys

sys.path[:0] = [
    p
    for p in os.environ.get("TOLLGATE_PYTHONPATH", "").split(os.pathsep)
    if p and p not in sys.path
]

from workers.triton_model import TritonPythonModel  # noqa: E402

__all__ = ["TritonPythonModel"]
