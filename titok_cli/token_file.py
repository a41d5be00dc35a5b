"""Token files on disk: `tokens.npy` / `.npz` / `.tar` plus a JSON-lines manifest beside each.

Layout (documented in the README):
  tokens.npy                 [N,K] smallest unsigned int dtype that holds the codebook
                             (VAE models: [N,C,K] float32 posterior means)
  tokens.npz                 the same array as `tokens`, plus `names` (and `labels` if known);
                             `encode --hflip` adds `tokens_hflip`, the ids of each mirrored crop
  tokens.tar                 webdataset samples `<key>.tokens.npy` + `<key>.json`
                             (+ `<key>.tokens_hflip.npy` with --hflip)
  tokens.npy.manifest.jsonl  line 1: run header (model, preprocessing, tool version, and the
                             array's count, dtype, shape and sha256), then one
                             {"row": i, "path": ..., ["label": c]} per row, then one
                             {"failed": path, "reason": ...} per skipped input.
Each token file owns its manifest: the name carries the whole file name (so `t.npy` and `t.npz`
never share one) and the header's sha256 of the array's C-order bytes proves which array it
describes. Older releases wrote `tokens.manifest.jsonl`; it is still read when it provably
belongs to the file. Reading never unpickles anything. Writing lives in `token_writers`.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import TokenFileError

FORMAT = "titok-tokens"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.jsonl"
TOKEN_SUFFIXES = (".npy", ".npz", ".tar")
_HASH_ROWS = 1 << 16  # rows hashed (and checked for NaN) per step: bounded memory on big files


@dataclass
class TokenFile:
    """A loaded token array with its manifest (names/labels/header are empty without one).

    `tokens` holds int64 ids [N,K] or float32 latents [N,C,K]; with `load_tokens(as_stored=True)`
    it keeps the file's own dtype (`.npy` memory-mapped) and `stored_dtype` says which that is.
    """

    tokens: np.ndarray
    names: list[str] | None = None
    labels: np.ndarray | None = None
    header: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None
    manifest: Path | None = None
    stored_dtype: np.dtype | None = None
    tokens_hflip: np.ndarray | None = None  # ids of the mirrored crops, row for row (`encode --hflip`)

    @property
    def is_latent(self) -> bool:
        return self.tokens.dtype.kind == "f"


def token_dtype(codebook_size: int | None) -> np.dtype:
    """Smallest unsigned integer dtype that holds ids 0..codebook_size-1 (float32 for VAE)."""
    if codebook_size is None:
        return np.dtype(np.float32)
    return np.min_scalar_type(max(codebook_size - 1, 0))


def manifest_path(path: str | os.PathLike) -> Path:
    """`out/tokens.npy` -> `out/tokens.npy.manifest.jsonl` (one manifest per token file)."""
    path = Path(path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def legacy_manifest_path(path: str | os.PathLike) -> Path:
    """The name releases before 0.2 used: `out/tokens.manifest.jsonl` (shared by .npy/.npz/.tar)."""
    path = Path(path)
    return path.with_name(path.stem + MANIFEST_SUFFIX)


def manifest_header(
    header: dict[str, Any], dtype: np.dtype, shape: Sequence[int], sha256: str | None = None, file: str | None = None,
    hflip_sha256: str | None = None,
) -> str:
    """The manifest's first line: run header plus the array's row count, dtype, shape and hash
    (and the hash of the mirrored crops' array, when the file holds one)."""
    array: dict[str, Any] = {"dtype": str(np.dtype(dtype)), "shape": [int(x) for x in shape]}
    if sha256 is not None:
        array["sha256"] = sha256
    if hflip_sha256 is not None:
        array["hflip_sha256"] = hflip_sha256
    full = {"format": FORMAT, "version": FORMAT_VERSION, **header, "count": int(shape[0]), "array": array}
    if file is not None:
        full["file"] = file
    return json.dumps(full) + "\n"


def manifest_row(row: int, path: str, label: int | None = None) -> str:
    """One manifest line per token row; the label only when it is known (>= 0)."""
    line: dict[str, Any] = {"row": row, "path": path}
    if label is not None and label >= 0:
        line["label"] = int(label)
    return json.dumps(line) + "\n"


def manifest_failure(path: str, reason: str) -> str:
    """One manifest line per input that could not be encoded."""
    return json.dumps({"failed": path, "reason": reason}) + "\n"


def array_sha256(tokens: np.ndarray) -> str:
    """sha256 of the array's C-order bytes, read in slices (a memory-mapped file stays on disk)."""
    digest = hashlib.sha256()
    for start in range(0, len(tokens), _HASH_ROWS):
        digest.update(np.ascontiguousarray(tokens[start : start + _HASH_ROWS]).tobytes())
    return digest.hexdigest()


def _read_manifest(path: Path) -> tuple[dict[str, Any], list[str], np.ndarray | None, list[dict[str, Any]]]:
    header: dict[str, Any] | None = None
    names: list[str] = []
    labels: list[int] = []
    failures: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    raise TokenFileError(f"{path}: line {lineno} is not valid JSON") from None
                if header is None:
                    if not isinstance(item, dict) or item.get("format") != FORMAT:
                        raise TokenFileError(f"{path}: not a titok manifest (first line lacks format={FORMAT!r})")
                    header = item
                elif not isinstance(item, dict):
                    raise TokenFileError(f"{path}: line {lineno}: neither a row nor a failure record")
                elif "failed" in item:
                    failures.append({"path": str(item["failed"]), "reason": str(item.get("reason", ""))})
                elif "row" in item and isinstance(item.get("path"), str):
                    if item["row"] != len(names):
                        raise TokenFileError(f"{path}: line {lineno}: rows out of order")
                    label = item.get("label", -1)
                    if not isinstance(label, int) or isinstance(label, bool):
                        raise TokenFileError(f"{path}: line {lineno}: label {label!r} is not an integer")
                    names.append(item["path"])
                    labels.append(label)
                else:
                    raise TokenFileError(f"{path}: line {lineno}: neither a row nor a failure record")
    except UnicodeDecodeError:
        raise TokenFileError(f"{path}: not a text manifest (invalid UTF-8)") from None
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read manifest ({exc.strerror or exc})") from None
    if header is None:
        raise TokenFileError(f"{path}: empty manifest")
    label_arr = np.asarray(labels, dtype=np.int64) if any(x >= 0 for x in labels) else None
    return header, names, label_arr, failures


def _unreadable(path: Path, exc: BaseException) -> TokenFileError:
    """One line for a file numpy or zipfile could not read; pickles are named, never loaded."""
    text = str(exc)
    if "pickle" in text.lower() or "python objects" in text.lower():
        return TokenFileError(f"{path}: holds pickled Python objects; refusing to unpickle (token files are plain arrays)")
    if isinstance(exc, EOFError) or "mmap length" in text or "cannot reshape" in text or "truncated" in text.lower():
        return TokenFileError(f"{path}: truncated (the file is shorter than its header says)")
    return TokenFileError(f"{path}: not a readable .npy/.npz token file ({text or type(exc).__name__})")


def _read_array(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None, np.ndarray | None, dict]:
    """(tokens as stored, mirrored-crop tokens or None, names, labels, header) from a .npy, .npz or .tar;
    allow_pickle=False throughout."""
    if path.suffix == ".tar":
        from .token_tar import read_tar

        return read_tar(path)
    names: list[str] | None = None
    labels: np.ndarray | None = None
    flipped: np.ndarray | None = None
    try:
        if path.suffix != ".npz":
            return np.load(path, mmap_mode="r", allow_pickle=False), None, None, None, {}
        with np.load(path, allow_pickle=False) as data:
            if "tokens" not in data.files:
                keys = ", ".join(data.files) or "none"
                raise TokenFileError(f"{path}: .npz has no 'tokens' array (keys: {keys})")
            tokens = data["tokens"]
            if "tokens_hflip" in data.files:
                flipped = data["tokens_hflip"]
                if flipped.shape != tokens.shape or flipped.dtype != tokens.dtype:
                    raise TokenFileError(f"{path}: 'tokens_hflip' is {flipped.dtype}{list(flipped.shape)}, but "
                                         f"'tokens' is {tokens.dtype}{list(tokens.shape)}; they must match")  # fmt: skip
            if "names" in data.files:
                raw = data["names"]
                if raw.ndim != 1 or raw.dtype.kind not in "US":
                    raise TokenFileError(f"{path}: 'names' must be a 1-D string array, got {raw.dtype}{list(raw.shape)}")
                names = [str(x) for x in raw]
            if "labels" in data.files:
                labels = data["labels"]
                if labels.ndim != 1 or labels.dtype.kind not in "iu":
                    raise TokenFileError(f"{path}: 'labels' must be a 1-D integer array, got {labels.dtype}{list(labels.shape)}")
                labels = labels.astype(np.int64)
    except TokenFileError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _unreadable(path, exc) from None
    return tokens, flipped, names, labels, {}


def _check_array(path: Path, tokens: np.ndarray) -> None:
    if not isinstance(tokens, np.ndarray):
        raise TokenFileError(f"{path}: expected one array")
    kind = tokens.dtype.kind
    if kind in "iu":
        if tokens.ndim != 2:
            raise TokenFileError(f"{path}: token ids must be a 2-D array [N,K], got shape {list(tokens.shape)}")
    elif kind == "f":
        if tokens.ndim != 3:
            raise TokenFileError(f"{path}: latents must be a 3-D float array [N,C,K], got shape {list(tokens.shape)}")
        for start in range(0, len(tokens), _HASH_ROWS):
            if not np.isfinite(tokens[start : start + _HASH_ROWS]).all():
                raise TokenFileError(f"{path}: latents contain NaN or infinity")
    else:
        raise TokenFileError(f"{path}: dtype {tokens.dtype} is neither integer ids nor float latents")


def _check_belongs(mpath: Path, header: dict[str, Any], rows: int, path: Path, tokens: np.ndarray,
                   flipped: np.ndarray | None = None) -> None:  # fmt: skip
    """Refuse a manifest written for another array (another run, an edited file, a shared name)."""
    array = header.get("array") if isinstance(header.get("array"), dict) else {}
    recorded = [("rows", header.get("count", rows)), ("dtype", array.get("dtype")), ("shape", array.get("shape"))]
    actual = {"rows": len(tokens), "dtype": str(tokens.dtype), "shape": list(tokens.shape)}
    if rows != len(tokens):
        raise TokenFileError(f"{mpath}: lists {rows} rows but {path.name} holds {len(tokens)}")
    for key, value in recorded:
        if value is not None and value != actual[key]:
            raise TokenFileError(f"{mpath} does not belong to {path.name}: it records {key} {value}, "
                                 f"the file has {actual[key]}; re-encode, or delete the stray manifest")  # fmt: skip
    if array.get("sha256") and array["sha256"] != array_sha256(tokens):
        raise TokenFileError(f"{mpath} does not belong to {path.name}: the array's sha256 differs from the one "
                             "recorded (the file was changed or replaced); re-encode, or delete the stray manifest")  # fmt: skip
    recorded_flip = array.get("hflip_sha256")
    if (recorded_flip is not None) != (flipped is not None):
        which = (f"it records mirrored copies (--hflip) that {path.name} lacks" if flipped is None
                 else f"{path.name} holds mirrored copies (--hflip) that it does not record")  # fmt: skip
        raise TokenFileError(f"{mpath} does not belong to {path.name}: {which}; re-encode, or delete the stray manifest")
    if flipped is not None and recorded_flip != array_sha256(flipped):
        raise TokenFileError(f"{mpath} does not belong to {path.name}: the mirrored copies' sha256 differs from the "
                             "one recorded (the file was changed or replaced); re-encode")  # fmt: skip


def _own_manifest(path: Path, tokens: np.ndarray, flipped: np.ndarray | None) -> tuple[Path, tuple] | None:
    """The manifest that belongs to `path`: its own name, else the legacy shared name if provably its."""
    new, old = manifest_path(path), legacy_manifest_path(path)
    if new.is_file():
        mpath = new
    elif old.is_file():
        mpath = old
    else:
        return None
    parsed = _read_manifest(mpath)
    header = parsed[0]
    if mpath == old and not (header.get("array") or {}).get("sha256"):
        others = [p.name for p in (path.with_suffix(s) for s in TOKEN_SUFFIXES) if p != path and p.is_file()]
        if others:
            raise TokenFileError(f"{old} may describe {others[0]} rather than {path.name} (older titok-cli releases "
                                 f"gave both one manifest); rename it to {manifest_path(path).name} if it is this "
                                 "file's, or re-encode")  # fmt: skip
    _check_belongs(mpath, header, len(parsed[1]), path, tokens, flipped)
    return mpath, parsed


def load_tokens(path: str | os.PathLike, *, as_stored: bool = False) -> TokenFile:
    """Read a token file (.npy, .npz or .tar shard) and the manifest that belongs to it.

    Ids come back as int64 (latents as float32), ready for `torch.from_numpy`; `as_stored`
    keeps the file's dtype instead (a `.npy` stays memory-mapped: for files larger than RAM).
    Anything malformed, or a manifest written for another array, raises TokenFileError naming
    the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise TokenFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise TokenFileError(f"{path}: empty file")
    tokens, flipped, names, labels, tar_header = _read_array(path)
    _check_array(path, tokens)
    if flipped is not None and tokens.dtype.kind == "f":
        raise TokenFileError(f"{path}: holds mirrored copies of VAE latents; only token ids have them")
    tf = TokenFile(tokens=tokens, names=names, labels=labels, header=tar_header, path=path, stored_dtype=tokens.dtype,
                   tokens_hflip=flipped)  # fmt: skip
    found = _own_manifest(path, tokens, flipped)
    if found is not None:
        tf.manifest, (tf.header, tf.names, mlabels, tf.failures) = found
        if tf.labels is None:
            tf.labels = mlabels
    if tf.names is not None and len(tf.names) != len(tokens):
        raise TokenFileError(f"{path}: {len(tf.names)} names for {len(tokens)} rows")
    if tf.labels is not None and len(tf.labels) != len(tokens):
        raise TokenFileError(f"{path}: {len(tf.labels)} labels for {len(tokens)} rows")
    if not as_stored:
        tf.tokens = np.array(tokens, dtype=np.float32 if tokens.dtype.kind == "f" else np.int64)
        if flipped is not None:
            tf.tokens_hflip = np.array(flipped, dtype=np.int64)
    return tf


def model_header(tokenizer: Any) -> dict[str, Any]:
    """The manifest's description of a tokenizer: where it came from and its token shape."""
    src = tokenizer.source
    cfg = tokenizer.config
    out = src.describe() if src is not None else {"name": None, "repo": None, "revision": None, "local_path": None}
    out.pop("weights", None)
    out.update(
        quantize_mode=cfg.quantize_mode,
        num_tokens=cfg.num_latent_tokens,
        codebook_size=cfg.codebook_size,
        token_size=cfg.token_size,
        image_size=cfg.image_size,
    )
    return out
