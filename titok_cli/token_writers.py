"""Writing token files: rows streamed into `.npy`, `.npz` or `.tar` plus the file's own manifest.

One writer serves `titok encode` (rows streamed from the scratch log, never all in memory) and
`save_tokens` (an array already in memory). Both files go to temporary names and are renamed
only when complete; the manifest header gets the sha256 of the rows as they stream by, so a
manifest names the exact array it describes (see `token_file`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .atomic_files import atomic_path, zip_member
from .errors import TokenFileError
from .token_file import TOKEN_SUFFIXES, manifest_failure, manifest_header, manifest_path, manifest_row

# add(row bytes in C order, source name, label or -1, mirrored crop's row bytes when the file has them)
AddRow = Callable[..., None]


@contextmanager
def row_writer(
    target: str | os.PathLike,
    dtype: np.dtype,
    row_shape: Sequence[int],
    count: int,
    header: dict[str, Any],
    failures: Sequence[tuple[str, str]] = (),
    hflip: bool = False,
) -> Iterator[AddRow]:
    """Yield `add(data, name, label, flipped)`; exactly `count` rows must be added before the block ends.

    `.npy` gets the rows as one [count, *row_shape] array; `.npz` the same as `tokens` plus
    `names` (and `labels` when any is known); `.tar` one webdataset sample per row. With `hflip`
    every row also brings the ids of its mirrored crop: `.npz` stores them as `tokens_hflip`,
    `.tar` as `<key>.tokens_hflip.npy` (a `.npy` holds one array, so it cannot).
    """
    target = Path(target)
    if target.suffix not in TOKEN_SUFFIXES:
        raise TokenFileError(f"{target}: a token file must end in .npy, .npz or .tar")
    if hflip and target.suffix == ".npy":
        raise TokenFileError(f"{target}: a .npy file holds one array; write .npz or .tar to keep mirrored copies")
    dtype, shape = np.dtype(dtype), (int(count), *(int(x) for x in row_shape))
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    digest = hashlib.sha256()
    flip_digest = hashlib.sha256() if hflip else None
    names: list[str] = []
    labels: list[int] = []
    with ExitStack() as stack:
        tmp_tokens = stack.enter_context(atomic_path(target))
        tmp_manifest = stack.enter_context(atomic_path(manifest_path(target)))
        body = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8", dir=target.parent))
        flips = stack.enter_context(tempfile.TemporaryFile("w+b", dir=target.parent)) if hflip and \
            target.suffix == ".npz" else None  # the mirrored rows, copied into the archive at the end
        out = stack.enter_context(open(tmp_tokens, "wb"))
        if target.suffix == ".tar":
            from .token_tar import TarRows

            sink: Any = stack.enter_context(TarRows(out, dtype, shape[1:], header.get("model", {}).get("name")))
        else:
            if target.suffix == ".npz":
                zf = stack.enter_context(zipfile.ZipFile(out, "w", allowZip64=True))
                out = stack.enter_context(zip_member(zf, "tokens.npy"))
            np.lib.format.write_array_header_1_0(
                out, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
            )
            sink = None

        def add(data: bytes, name: str, label: int = -1, flipped: bytes | None = None) -> None:
            if len(data) != row_bytes or (flipped is not None and len(flipped) != row_bytes):
                raise ValueError(f"row of {len(data)} bytes, expected {row_bytes}")
            if (flipped is not None) != hflip:
                raise ValueError("mirrored rows go with hflip=True, and only there")
            if len(names) >= shape[0]:
                raise ValueError(f"more than the {shape[0]} rows announced")
            digest.update(data)
            if flip_digest is not None:
                flip_digest.update(flipped)
            if sink is not None:
                sink.add(len(names), data, name, label, flipped)
            else:
                out.write(data)
                if flips is not None:
                    flips.write(flipped)
            body.write(manifest_row(len(names), name, label))
            names.append(name)
            labels.append(int(label))

        yield add
        if len(names) != shape[0]:
            raise ValueError(f"{len(names)} rows written, {shape[0]} announced")
        if target.suffix == ".npz":
            out.close()  # the tokens member; names and labels follow in the same archive
            if flips is not None:
                with zip_member(zf, "tokens_hflip.npy") as dst:
                    np.lib.format.write_array_header_1_0(
                        dst, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
                    flips.seek(0)
                    shutil.copyfileobj(flips, dst, 1 << 20)
            _zip_array(zf, "names", np.asarray(names, dtype=np.str_))
            if any(x >= 0 for x in labels):
                _zip_array(zf, "labels", np.asarray(labels, dtype=np.int64))
        with open(tmp_manifest, "w", encoding="utf-8") as mfh:
            mfh.write(manifest_header(header, dtype, shape, digest.hexdigest(), file=target.name,
                                      hflip_sha256=flip_digest.hexdigest() if flip_digest is not None else None))
            body.seek(0)
            shutil.copyfileobj(body, mfh, 1 << 20)
            for name, reason in failures:
                mfh.write(manifest_failure(name, reason))


def save_tokens(
    path: str | os.PathLike,
    tokens: np.ndarray,
    header: dict[str, Any],
    names: Sequence[str],
    labels: Sequence[int] | None = None,
    failures: Sequence[tuple[str, str]] = (),
    tokens_hflip: np.ndarray | None = None,
) -> tuple[Path, Path]:
    """Write tokens [N, ...] (.npy, .npz or .tar) and their manifest, each atomically. Returns both paths.

    `tokens_hflip` [N, ...]: the ids of each row's mirrored crop (.npz and .tar only)."""
    path = Path(path)
    if path.suffix not in TOKEN_SUFFIXES:
        raise TokenFileError(f"{path}: output must end in .npy, .npz or .tar")
    if len(names) != len(tokens):
        raise ValueError("one name per token row is required")
    tokens = np.ascontiguousarray(tokens)
    if tokens_hflip is not None:
        tokens_hflip = np.ascontiguousarray(tokens_hflip, dtype=tokens.dtype)
        if tokens_hflip.shape != tokens.shape:
            raise ValueError(f"mirrored rows {list(tokens_hflip.shape)} do not match tokens {list(tokens.shape)}")
    hflip = tokens_hflip is not None
    with row_writer(path, tokens.dtype, tokens.shape[1:], len(tokens), header, failures, hflip=hflip) as add:
        for i, name in enumerate(names):
            add(tokens[i].tobytes(), name, -1 if labels is None else int(labels[i]),
                tokens_hflip[i].tobytes() if hflip else None)  # fmt: skip
    return path, manifest_path(path)


def _zip_array(zf: zipfile.ZipFile, key: str, arr: np.ndarray) -> None:
    with zip_member(zf, f"{key}.npy") as dst:
        np.lib.format.write_array(dst, arr, allow_pickle=False)
