"""Reading weights files safely and loading them strictly.

Safetensors headers are checked against the model before any tensor is read, so a file that
lies about its sizes is refused without allocating; pickled `.bin` files are opened only with
`torch.load(weights_only=True)`. Missing, unexpected,
mis-shaped or mis-typed keys are listed together in one error.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .config import has_generator, has_tokenizer
from .errors import CheckpointError

IGNORED_KEYS = ("model.embeddings.position_ids",)  # a buffer some BERT checkpoints carry


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_safetensors(path: Path, model: nn.Module | None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            if model is not None:
                shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
                check_state_dict(model, shapes, str(path))  # before reading any tensor
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None


def read_state_dict(path: str | os.PathLike, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a pickled state dict loaded with weights_only.

    With `model`, a safetensors file's keys and shapes are checked against it first.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, model)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds more than tensors ({_first_line(exc)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({_first_line(exc)})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(obj)


def check_state_dict(model: nn.Module, state: Mapping[str, Any], where: str) -> None:
    """Raise one CheckpointError naming every missing, unexpected, mis-shaped or mis-typed key.

    `state` maps names to tensors, or (for a header check) to shapes.
    """
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes, dtypes = [], []
    for k in expected:
        if k not in state:
            continue
        given = state[k]
        shape = tuple(given.shape) if isinstance(given, torch.Tensor) else tuple(given)
        if shape != tuple(expected[k].shape):
            shapes.append(f"{k} {list(shape)} (expected {list(expected[k].shape)})")
        elif isinstance(given, torch.Tensor) and given.dtype.is_floating_point != expected[k].dtype.is_floating_point:
            dtypes.append(f"{k} {str(given.dtype).removeprefix('torch.')}")
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes),
                        ("wrong dtype", dtypes)):  # fmt: skip
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
            problems.append(f"{len(keys)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{where}: weights do not fit the architecture: " + "; ".join(problems))


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> nn.Module:
    """Strictly load `state` into `model` (which may live on the meta device)."""
    state = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
    check_state_dict(model, state, where)
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if v.dtype != ref[k].dtype else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model


def has_kind(config: Mapping[str, Any], kind: str) -> bool:
    return has_tokenizer(config) if kind == "tokenizer" else has_generator(config)
