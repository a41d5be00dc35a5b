"""Token rows as webdataset tar shards: `<key>.tokens.npy` + `<key>.json` per row
(+ `<key>.tokens_hflip.npy`, the mirrored crop's ids, from `titok encode --hflip`).

Written by `titok encode -o X.tar` (through `token_writers.row_writer`) and read back by
`token_file.load_tokens` with the standard library alone (no webdataset needed), arrays with
allow_pickle=False. Member metadata is fixed (mode, mtime), so equal rows give equal bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from .errors import TokenFileError


def wds_key(name: str, taken: set[str]) -> str:
    """A webdataset sample key for a row name: no extension, no dots in the base name, unique."""
    folder, _, base = name.rpartition("/")
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    key = (folder + "/" if folder else "") + (stem.replace(".", "_") or "sample")
    unique, k = key, 1
    while unique in taken:
        unique, k = f"{key}_{k}", k + 1
    taken.add(unique)
    return unique


class TarRows:
    """Append one webdataset sample per token row to an open binary file."""

    def __init__(self, fh: BinaryIO, dtype: np.dtype, row_shape: Sequence[int], model_name: str | None) -> None:
        self.tar = tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT)
        self.dtype, self.row_shape, self.model_name = dtype, tuple(row_shape), model_name
        self.taken: set[str] = set()

    def _member(self, name: str, payload: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(payload), 0o644, 0  # fixed metadata: stable bytes
        self.tar.addfile(info, io.BytesIO(payload))

    def _array(self, data: bytes) -> bytes:
        buf = io.BytesIO()
        np.save(buf, np.frombuffer(data, dtype=self.dtype).reshape(self.row_shape), allow_pickle=False)
        return buf.getvalue()

    def add(self, row: int, data: bytes, name: str, label: int, flipped: bytes | None = None) -> None:
        key = wds_key(name, self.taken)
        meta: dict[str, Any] = {"row": row, "path": name, "model": self.model_name}
        if label >= 0:
            meta["label"] = int(label)
        self._member(f"{key}.tokens.npy", self._array(data))
        if flipped is not None:
            self._member(f"{key}.tokens_hflip.npy", self._array(flipped))
        self._member(f"{key}.json", json.dumps(meta).encode())

    def __enter__(self) -> "TarRows":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.tar.close()


def read_tar(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str], np.ndarray | None, dict[str, Any]]:
    """A webdataset shard written by `titok encode -o X.tar`: `<key>.tokens.npy` + `<key>.json` per row.

    Rows come in tar order; names and labels from each row's JSON; the model name too, so a
    shard without its manifest still says which tokenizer made it. Read with the standard
    library (no webdataset needed), arrays with allow_pickle=False.
    """

    arrays: dict[str, np.ndarray] = {}
    flipped: dict[str, np.ndarray] = {}
    metas: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if ext not in ("tokens.npy", "tokens_hflip.npy", "json"):
                    raise TokenFileError(f"{path}: member {member.name!r} is not <key>.tokens.npy, "
                                         "<key>.tokens_hflip.npy or <key>.json")  # fmt: skip
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if key not in arrays and key not in metas:
                    order.append(key)
                try:
                    if ext == "json":
                        metas[key] = json.loads(data)
                    else:
                        (arrays if ext == "tokens.npy" else flipped)[key] = np.load(io.BytesIO(data), allow_pickle=False)
                except (ValueError, EOFError) as exc:
                    raise TokenFileError(f"{path}: member {member.name!r} is unreadable ({exc})") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise TokenFileError(f"{path}: not a readable tar shard ({exc})") from None
    if not order:
        raise TokenFileError(f"{path}: no rows (an empty tar)")
    rows, names, labels = [], [], []
    for i, key in enumerate(order):
        if key not in arrays or key not in metas:
            missing = "tokens.npy" if key not in arrays else "json"
            raise TokenFileError(f"{path}: row {key!r} has no {key}.{missing}")
        meta, arr = metas[key], arrays[key]
        if not isinstance(meta, dict) or meta.get("row", i) != i:
            raise TokenFileError(f"{path}: {key}.json is not row {i} of this shard")
        if rows and (arr.shape != rows[0].shape or arr.dtype != rows[0].dtype):
            raise TokenFileError(f"{path}: {key}.tokens.npy is {arr.dtype}{list(arr.shape)}, "
                                 f"the first row {rows[0].dtype}{list(rows[0].shape)}")  # fmt: skip
        if flipped and (key not in flipped or flipped[key].shape != arr.shape or flipped[key].dtype != arr.dtype):
            raise TokenFileError(f"{path}: row {key!r} has no matching {key}.tokens_hflip.npy, though other rows do")
        rows.append(arr)
        names.append(str(meta.get("path", key)))
        labels.append(int(meta.get("label", -1)))
    label_arr = np.asarray(labels, dtype=np.int64) if any(x >= 0 for x in labels) else None
    model = {"name": metas[order[0]].get("model")} if metas[order[0]].get("model") else {}
    mirrored = np.stack([flipped[key] for key in order]) if flipped else None
    return np.stack(rows), mirrored, names, label_arr, {"model": model} if model else {}
