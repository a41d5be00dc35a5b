"""Token files on disk: `tokens.npy` / `tokens.npz` plus a JSON-lines manifest beside them.

Layout (documented in the README):
  tokens.npy                 [N,K] smallest unsigned int dtype that holds the codebook
                             (VAE models: [N,C,K] float32 posterior means)
  tokens.npz                 the same array as `tokens`, plus `names` (and `labels` if known)
  tokens.manifest.jsonl      line 1: run header (model, preprocessing, dtype, tool version, ...)
                             then one {"row": i, "path": ..., ["label": c]} per row,
                             then one {"failed": path, "reason": ...} per skipped input.
Every file is written to a temporary name and renamed, so a crash leaves no half file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import TokenFileError

FORMAT = "titok-tokens"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.jsonl"


@dataclass
class TokenFile:
    """A loaded token array with its manifest (names/labels/header are empty without one)."""

    tokens: np.ndarray
    names: list[str] | None = None
    labels: np.ndarray | None = None
    header: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None

    @property
    def is_latent(self) -> bool:
        return self.tokens.dtype.kind == "f"


def token_dtype(codebook_size: int | None) -> np.dtype:
    """Smallest unsigned integer dtype that holds ids 0..codebook_size-1 (float32 for VAE)."""
    if codebook_size is None:
        return np.dtype(np.float32)
    for dt in (np.uint8, np.uint16, np.uint32):
        if codebook_size - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def manifest_path(path: str | os.PathLike) -> Path:
    """`out/tokens.npy` -> `out/tokens.manifest.jsonl`."""
    path = Path(path)
    return path.with_name(path.stem + MANIFEST_SUFFIX) if path.suffix in (".npy", ".npz", ".tar") else Path(str(path) + MANIFEST_SUFFIX)


@contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "", durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it into place.

    `durable` fsyncs first (token files, scratch state); per-image PNGs skip that cost.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial" + suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; a result file gets normal permissions
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def manifest_header(header: dict[str, Any], dtype: np.dtype, shape: Sequence[int]) -> str:
    """The manifest's first line: run header plus the array's row count, dtype and shape."""
    full = {"format": FORMAT, "version": FORMAT_VERSION, **header, "count": int(shape[0]),
            "array": {"dtype": str(np.dtype(dtype)), "shape": [int(x) for x in shape]}}  # fmt: skip
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


def write_manifest(
    path: str | os.PathLike,
    header: dict[str, Any],
    tokens: np.ndarray,
    names: Sequence[str],
    labels: Sequence[int] | None = None,
    failures: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write the JSON-lines manifest for `tokens` atomically; returns its path."""
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(manifest_header(header, tokens.dtype, tokens.shape))
        for i, name in enumerate(names):
            fh.write(manifest_row(i, name, None if labels is None else labels[i]))
        for name, reason in failures:
            fh.write(manifest_failure(name, reason))
    return target


def save_tokens(
    path: str | os.PathLike,
    tokens: np.ndarray,
    header: dict[str, Any],
    names: Sequence[str],
    labels: Sequence[int] | None = None,
    failures: Sequence[tuple[str, str]] = (),
) -> tuple[Path, Path]:
    """Write tokens (.npy or .npz) and the manifest, each atomically. Returns both paths."""
    path = Path(path)
    if path.suffix not in (".npy", ".npz"):
        raise TokenFileError(f"{path}: output must end in .npy or .npz")
    if len(names) != len(tokens):
        raise ValueError("one name per token row is required")
    manifest = write_manifest(manifest_path(path), header, tokens, names, labels, failures)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            if path.suffix == ".npy":
                np.save(fh, tokens, allow_pickle=False)
            else:
                extra = {} if labels is None else {"labels": np.asarray(labels, dtype=np.int64)}
                np.savez(fh, tokens=tokens, names=np.asarray(list(names), dtype=np.str_), **extra)
    return path, manifest


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
                elif "failed" in item:
                    failures.append({"path": item["failed"], "reason": item.get("reason", "")})
                elif "row" in item and "path" in item:
                    if item["row"] != len(names):
                        raise TokenFileError(f"{path}: line {lineno}: rows out of order")
                    names.append(str(item["path"]))
                    labels.append(int(item.get("label", -1)))
                else:
                    raise TokenFileError(f"{path}: line {lineno}: neither a row nor a failure record")
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read manifest ({exc.strerror or exc})") from None
    if header is None:
        raise TokenFileError(f"{path}: empty manifest")
    label_arr = np.asarray(labels, dtype=np.int64) if any(x >= 0 for x in labels) else None
    return header, names, label_arr, failures


def _read_tar(path: Path) -> tuple[np.ndarray, list[str], np.ndarray | None, dict[str, Any]]:
    """A webdataset shard written by `titok encode -o X.tar`: `<key>.tokens.npy` + `<key>.json` per row.

    Rows come in tar order; names and labels from each row's JSON; the model name too, so a
    shard without its manifest still says which tokenizer made it. Read with the standard
    library (no webdataset needed), arrays with allow_pickle=False.
    """
    import tarfile

    arrays: dict[str, np.ndarray] = {}
    metas: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if ext not in ("tokens.npy", "json"):
                    raise TokenFileError(f"{path}: member {member.name!r} is not <key>.tokens.npy or <key>.json")
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if key not in arrays and key not in metas:
                    order.append(key)
                try:
                    if ext == "json":
                        metas[key] = json.loads(data)
                    else:
                        arrays[key] = np.load(io.BytesIO(data), allow_pickle=False)
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
        rows.append(arr)
        names.append(str(meta.get("path", key)))
        labels.append(int(meta.get("label", -1)))
    label_arr = np.asarray(labels, dtype=np.int64) if any(x >= 0 for x in labels) else None
    model = {"name": metas[order[0]].get("model")} if metas[order[0]].get("model") else {}
    return np.stack(rows), names, label_arr, {"model": model} if model else {}


def load_tokens(path: str | os.PathLike) -> TokenFile:
    """Read a token file (.npy, .npz or .tar shard) and its manifest (if present).

    Anything malformed raises TokenFileError naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise TokenFileError(f"{path}: no such file")
    names_from_npz: list[str] | None = None
    labels: np.ndarray | None = None
    tar_header: dict[str, Any] = {}
    try:
        if path.suffix == ".tar":
            tokens, names_from_npz, labels, tar_header = _read_tar(path)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "tokens" not in data.files:
                    raise TokenFileError(f"{path}: .npz has no 'tokens' array (keys: {', '.join(data.files)})")
                tokens = data["tokens"]
                if "names" in data.files:
                    names_from_npz = [str(x) for x in data["names"]]
                if "labels" in data.files:
                    labels = data["labels"]
        else:
            tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except TokenFileError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise TokenFileError(f"{path}: not a readable .npy/.npz token file ({exc})") from None
    if not isinstance(tokens, np.ndarray):
        raise TokenFileError(f"{path}: expected one array")
    kind = tokens.dtype.kind
    if kind in "iu":
        if tokens.ndim != 2:
            raise TokenFileError(f"{path}: token ids must be a 2-D array [N,K], got shape {list(tokens.shape)}")
    elif kind == "f":
        if tokens.ndim != 3:
            raise TokenFileError(f"{path}: latents must be a 3-D float array [N,C,K], got shape {list(tokens.shape)}")
    else:
        raise TokenFileError(f"{path}: dtype {tokens.dtype} is neither integer ids nor float latents")

    tf = TokenFile(tokens=tokens, names=names_from_npz, labels=labels, header=tar_header, path=path)
    mpath = manifest_path(path)
    if mpath.is_file():
        tf.header, names, mlabels, tf.failures = _read_manifest(mpath)
        if len(names) != len(tokens):
            raise TokenFileError(f"{mpath}: lists {len(names)} rows but {path.name} holds {len(tokens)}")
        tf.names = names
        if tf.labels is None:
            tf.labels = mlabels
    if tf.names is not None and len(tf.names) != len(tokens):
        raise TokenFileError(f"{path}: {len(tf.names)} names for {len(tokens)} rows")
    return tf


def model_source_from_header(header: dict[str, Any]) -> str | None:
    """What to pass to load_tokenizer to get the model a token file was made with."""
    model = header.get("model") or {}
    if model.get("local_path"):
        return str(model["local_path"])
    if model.get("repo"):
        rev = model.get("revision")
        return model["repo"] + (f"@{rev}" if rev else "")
    return model.get("name")


def model_header(tokenizer: Any) -> dict[str, Any]:
    """The manifest's description of a tokenizer: where it came from and its token shape."""
    src = getattr(tokenizer, "source", None)
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


def check_tokens_fit(tf: TokenFile, tokenizer: Any) -> None:
    """Refuse a token file that this tokenizer cannot decode, before anything is written."""
    cfg = tokenizer.config
    where = str(tf.path) if tf.path else "tokens"
    recorded = tf.header.get("model") or {}
    for key, ours in (("quantize_mode", cfg.quantize_mode), ("num_tokens", cfg.num_latent_tokens),
                      ("codebook_size", cfg.codebook_size), ("token_size", cfg.token_size)):  # fmt: skip
        if key in recorded and recorded[key] != ours:
            raise TokenFileError(
                f"{where}: made with {recorded.get('name') or 'another model'} ({key}={recorded[key]}), "
                f"but the chosen model has {key}={ours}"
            )
    t = tf.tokens
    if cfg.is_vae:
        if t.dtype.kind != "f":
            raise TokenFileError(f"{where}: holds integer ids, but {cfg.quantize_mode.upper()} model needs float latents")
        if tuple(t.shape[1:]) != (cfg.token_size, cfg.num_latent_tokens):
            raise TokenFileError(
                f"{where}: latents are [N,{t.shape[1]},{t.shape[2]}], the model needs [N,{cfg.token_size},{cfg.num_latent_tokens}]"
            )
        if len(t) and not np.isfinite(np.asarray(t)).all():
            raise TokenFileError(f"{where}: latents contain NaN or infinity")
        return
    if t.dtype.kind not in "iu":
        raise TokenFileError(f"{where}: holds float values ({t.dtype}), but a VQ model needs integer token ids")
    if t.shape[1] != cfg.num_latent_tokens:
        raise TokenFileError(f"{where}: rows have {t.shape[1]} tokens, the model needs {cfg.num_latent_tokens}")
    if len(t):
        lo, hi = int(np.min(t)), int(np.max(t))
        if lo < 0 or hi >= cfg.codebook_size:
            raise TokenFileError(f"{where}: token ids span {lo}..{hi}, outside the codebook 0..{cfg.codebook_size - 1}")


def zip_member(zf: "zipfile.ZipFile", name: str):
    """A writable .npz member with a fixed timestamp, so equal content gives equal bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return zf.open(info, "w", force_zip64=True)
