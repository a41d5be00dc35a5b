"""Device and dtype choice shared by the library and the CLI.

Both parse what a person typed (`--device`, `--dtype`), so every refusal is a UsageError (exit 2)
whose one line lists the values that would have worked.
"""

from __future__ import annotations

import re

import torch

from .errors import UsageError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}  # fmt: skip
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
DTYPE_CHOICES = "float32 (fp32), bfloat16 (bf16) or float16 (fp16)"

# What we accept: a device type we run on, optionally with an index (`cuda:1`, `cpu:0`, `mps:0`).
_DEVICE = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` prefers CUDA, then Apple MPS, then the CPU; an unavailable device is refused here.

    Refusing up front (instead of letting torch fail at the first `.to(...)`) gives one clean line
    naming the device and the choices, before any weights are read.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    match = _DEVICE.fullmatch(text)
    if match is None:
        raise UsageError(f"unknown device {str(name)!r} (use {DEVICE_CHOICES})")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {text} requested but no CUDA GPU is available (use --device cpu)")
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise UsageError(f"device {text} requested but this machine has {count} CUDA GPU(s): cuda:0..{count - 1}")
    elif kind == "mps":
        if not _mps_available():
            raise UsageError(f"device {text} requested but Apple MPS is not available here (use --device cpu)")
        if index is not None and int(index) != 0:
            raise UsageError(f"device {text} requested but MPS has only one device, mps:0")
    return torch.device(text)


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """`float32` / `fp32`, `bfloat16` / `bf16`, `float16` / `fp16` (any case) -> torch dtype."""
    if isinstance(name, torch.dtype):
        if name in DTYPES.values():
            return name
        name = str(name).replace("torch.", "")
    try:
        return DTYPES[str(name).strip().lower()]
    except KeyError:
        raise UsageError(f"unknown dtype {str(name)!r} (use {DTYPE_CHOICES})") from None
