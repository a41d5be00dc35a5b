"""What a weights file holds (tensor count, parameters, dtypes), read without loading its tensors.

`titok info` reports this for any checkpoint: a .safetensors header is plain JSON after an
8-byte length; a pickled state dict is memory-mapped with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from .errors import CheckpointError


def weights_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Tensors, parameters, dtypes and bytes of a weights file, without loading its tensors."""
    p = Path(path)
    if p.suffix == ".safetensors":
        shapes, dtypes = _safetensors_header(p)
    else:
        shapes, dtypes = _pickle_shapes(p)
    return {
        "format": "safetensors" if p.suffix == ".safetensors" else "pytorch pickle (read with weights_only)",
        "tensors": len(shapes),
        "parameters": sum(math.prod(s) for s in shapes.values()),
        "dtypes": sorted(set(dtypes)),
        "bytes": p.stat().st_size,
    }


def _safetensors_header(path: Path) -> tuple[dict[str, list[int]], list[str]]:
    """Tensor shapes and dtypes from the JSON header of a .safetensors file (8-byte length first)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: too short for a safetensors file")
            (length,) = struct.unpack("<Q", raw)
            if length > min(path.stat().st_size, 100_000_000):
                raise CheckpointError(f"{path}: header length {length} does not fit the file: not safetensors")
            header = json.loads(fh.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    header.pop("__metadata__", None)
    shapes = {k: [int(x) for x in v["shape"]] for k, v in header.items()}
    return shapes, [v["dtype"] for v in header.values()]


def _pickle_shapes(path: Path) -> tuple[dict[str, list[int]], list[str]]:
    """A pickled state dict memory-mapped (no tensor data read) with torch.load(weights_only)."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable pickle is the same error for us
        raise CheckpointError(f"{path}: not a readable PyTorch state dict ({one_line(exc)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return ({k: list(v.shape) for k, v in tensors.items()},
            [str(v.dtype).removeprefix("torch.") for v in tensors.values()])  # fmt: skip


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
