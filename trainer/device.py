"""Where training runs and in what precision: the device, the precision, and its autocast."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch


def resolve_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 where the hardware does it natively (CUDA with bf16, or a CPU with
    AVX512-BF16/AMX), else fp16 on CUDA, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for the forward pass; nothing to do in fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
