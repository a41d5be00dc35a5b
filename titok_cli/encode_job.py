"""Images (folders, files or webdataset tar shards) -> token files, at dataset scale.

How a run works:
  * Inputs are streamed in a deterministic order (sorted folder walk, or tar order) and
    numbered; nothing is listed into memory. Rank r of W (torchrun) and DataLoader worker w
    of N take the inputs whose number is congruent to their slot, so every input is read once.
  * The main process batches the crops, runs the tokenizer and appends rows to scratch files
    in `<output>.partial/rank-<r>-of-<W>/`. Every few seconds, right after a batch, it fsyncs
    them and atomically rewrites `state.json` (byte lengths + next input number): that is the
    commit point. A rerun of the same command truncates the scratch files back to the last
    commit and continues, so a kill -9 or power loss loses at most a few seconds of work.
  * When all ranks are done, rank 0 merges the scratch rows by input number (so the result
    does not depend on the number of ranks or workers), writes the final .npy/.npz (or
    numbered shards) and manifests through temp files + rename, then removes the scratch.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .errors import ImageError, TitokError
from .imagenet import class_from_wnid
from .preprocess import iter_image_files, load_image, read_image
from .token_file import (
    atomic_path,
    manifest_failure,
    manifest_header,
    manifest_path,
    manifest_row,
    model_header,
    token_dtype,
    zip_member,
)

Progress = Callable[[int, "int | None"], None]
COMMIT_SECONDS = float(os.environ.get("TITOK_COMMIT_SECONDS", "2.0"))  # how much work a crash may lose
WDS_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm")
_TAR = re.compile(r"\.tar(\.gz)?$|\{.*\.\..*\}.*\.tar")


@dataclass
class EncodeResult:
    """What an encode run produced: rows written and the inputs that were skipped (path, reason)."""

    output: Path
    manifest: Path
    count: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    written: bool = True
    outputs: list[Path] = field(default_factory=list)  # every token file (several with shards)
    resumed_from: int = 0  # inputs already done by an earlier, interrupted run


# -- inputs -------------------------------------------------------------------------------


def is_webdataset(inputs: Sequence[str]) -> bool:
    return any(_TAR.search(os.fspath(x)) for x in inputs)


def _folder_label(name: str) -> int:
    """ImageNet-style class folders: `[train/]n02099601/x.JPEG` -> 207; anything else -> -1."""
    parent = name.rsplit("/", 2)[-2] if "/" in name else ""
    cls = class_from_wnid(parent) if parent else None
    return -1 if cls is None else cls


def _iter_sources(inputs: Sequence[str]) -> Iterator[tuple[str, int, Callable[[int, bool], Any]]]:
    """(name, label, load(size, exif)) per input, in a stable order."""
    if is_webdataset(inputs):
        yield from _iter_webdataset(inputs)
        return
    for path, name in iter_image_files(inputs):
        yield name, _folder_label(name), (lambda size, exif, p=path: load_image(p, size, exif))


def _iter_webdataset(inputs: Sequence[str]) -> Iterator[tuple[str, int, Callable[[int, bool], Any]]]:
    try:
        import webdataset as wds
    except ImportError:
        raise TitokError("reading .tar shards needs the webdataset package: pip install 'titok-cli[wds]'") from None
    urls: list[str] = []
    for item in inputs:
        urls.extend(wds.shardlists.expand_urls(os.fspath(item)))
    for url in urls:
        if "://" not in url and not os.path.exists(url):
            raise ImageError(url, "no such file or directory")
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    for sample in dataset:
        key = str(sample.get("__key__"))
        ext = next((e for e in WDS_IMAGE_EXTS if e in sample), None)
        label = -1
        if "cls" in sample:
            try:
                label = int(bytes(sample["cls"]).decode().strip())
            except ValueError:
                label = -1
        if ext is None:
            yield key, label, (lambda size, exif, k=key: _raise(ImageError(k, "no image in this sample")))
            continue
        data = bytes(sample[ext])
        name = f"{key}.{ext}"
        yield name, label, (lambda size, exif, d=data, n=name: read_image(io.BytesIO(d), n, size, exif))


def _raise(exc: Exception) -> Any:
    raise exc


class _CropStream(IterableDataset):
    """Yields (index, name, label, uint8 [3,S,S] crop or None, failure reason) in index order."""

    def __init__(self, inputs: Sequence[str], size: int, exif: bool, rank: int, world: int, start: int) -> None:
        self.inputs, self.size, self.exif = list(inputs), size, exif
        self.rank, self.world, self.start = rank, world, start

    def __iter__(self) -> Iterator[tuple[int, str, int, torch.Tensor | None, str]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        first = _rank_items_before(self.rank, self.world, self.start)  # this rank's items already done
        for i, (name, label, load) in enumerate(_iter_sources(self.inputs)):
            if i % self.world != self.rank or i < self.start:
                continue
            # Worker w takes every nw-th remaining item of this rank, starting with the first:
            # the DataLoader reads workers round-robin, so the merged stream stays in order.
            if (i // self.world - first) % nw != wid:
                continue
            try:
                img = load(self.size, self.exif)
                crop = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # (3, S, S)
                yield i, name, label, crop, ""
            except ImageError as exc:
                yield i, name, label, None, exc.reason


def _rank_items_before(rank: int, world: int, index: int) -> int:
    """How many inputs numbered below `index` belong to `rank` (input i goes to rank i mod world)."""
    return len(range(rank, index, world))


def count_inputs(inputs: Sequence[str]) -> int | None:
    """Number of candidate files (a streaming walk); None for tar shards (not known up front)."""
    if is_webdataset(inputs):
        return None
    return sum(1 for _ in iter_image_files(inputs))


# -- per-rank scratch with commit points -------------------------------------------------------


class _Scratch:
    """Append-only rows of one rank, committed by an atomically replaced state.json."""

    FILES = ("tokens.bin", "rows.jsonl", "failures.jsonl")

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.state_path = folder / "state.json"
        self.state = {"fingerprint": fingerprint, "next_index": 0, "rows": 0, "done": False,
                      **{f: 0 for f in self.FILES}}  # fmt: skip
        if self.state_path.is_file():
            old = json.loads(self.state_path.read_text())
            if old.get("fingerprint") != fingerprint:
                raise TitokError(
                    f"{folder.parent} holds an unfinished run with other inputs or settings; "
                    "rerun that exact command to finish it, or delete the folder to start over"
                )
            self.state = old
        folder.mkdir(parents=True, exist_ok=True)
        self.handles = {}
        for name in self.FILES:
            path = folder / name
            path.touch()
            with open(path, "rb+") as fh:  # drop anything written after the last commit
                fh.truncate(self.state[name])
            self.handles[name] = open(path, "ab")

    def commit(self, next_index: int, rows: int, done: bool = False) -> None:
        for name, fh in self.handles.items():
            fh.flush()
            os.fsync(fh.fileno())
            self.state[name] = fh.tell()
        self.state.update(next_index=next_index, rows=rows, done=done)
        tmp = self.state_path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(self.state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)
        _fsync_dir(self.folder)

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- distributed -------------------------------------------------------------------------------


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, initializing the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = os.environ.get("TITOK_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":  # bind this rank to its GPU before NCCL picks one for barriers
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def rank_device(preferred: str = "auto") -> str:
    """Under torchrun each rank takes its own GPU (LOCAL_RANK); elsewhere `preferred` stands."""
    if preferred in ("auto", "cuda") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    return preferred


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


# -- the job ---------------------------------------------------------------------------------------


def encode_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    tokenizer,
    *,
    batch_size: int = 16,
    workers: int = 0,
    strict: bool = False,
    exif_transpose: bool = False,
    progress: Progress | None = None,
    shard_size: int | None = None,
) -> EncodeResult:
    """Encode every image under `inputs` into `output` (.npy or .npz) plus its manifest.

    Bad files are skipped and listed in the result and the manifest; with `strict` the first
    one raises its ImageError and nothing is written. An interrupted run resumes when the
    same call is repeated. With `shard_size`, rows go to `<stem>-000000.npy`, ... instead.
    Under torchrun every rank calls this; rank 0 assembles the one final output.
    """
    output = Path(output)
    if output.suffix not in (".npy", ".npz", ".tar"):
        raise TitokError(f"{output}: output must end in .npy, .npz or .tar (webdataset shards)")
    if batch_size < 1:
        raise TitokError("batch size must be at least 1")
    if shard_size is not None and shard_size < 1:
        raise TitokError("shard size must be at least 1")
    inputs = [os.fspath(p) for p in inputs]
    rank, world = dist_info()
    # The full count is a second walk of the tree, paid only when a progress display wants the
    # total; otherwise finding one image is enough to refuse an empty input (and a missing path
    # raises ImageError either way).
    if progress is not None:
        total = count_inputs(inputs)
        empty = total == 0
    else:
        total = None
        empty = not is_webdataset(inputs) and next(iter(iter_image_files(inputs)), None) is None
    if empty:
        raise TitokError(f"no image files found in {', '.join(inputs)}")

    cfg = tokenizer.config
    header = {
        "tool": f"titok-cli {_version()}",
        "model": model_header(tokenizer),
        "preprocessing": {
            "method": "official ADM center crop (BOX halving, BICUBIC resize, floor-offset crop), /255 float32",
            "image_size": cfg.image_size,
            "exif_transpose": exif_transpose,
        },
        "compute_dtype": str(tokenizer.dtype).replace("torch.", ""),
        "inputs": inputs,
    }
    fingerprint = hashlib.sha256(
        json.dumps([header, [os.path.abspath(p) for p in inputs], world, shard_size, strict], sort_keys=True).encode()
    ).hexdigest()
    partial = output.with_name(output.name + ".partial")
    scratch = _Scratch(partial / f"rank-{rank:05d}-of-{world:05d}", fingerprint)
    resumed_from = scratch.state["next_index"]
    try:
        if not scratch.state["done"]:
            _encode_rank(scratch, inputs, tokenizer, rank, world, batch_size, workers, strict, exif_transpose,
                         progress, total)  # fmt: skip
    except ImageError:
        scratch.close()
        if world == 1:  # a strict failure would recur on rerun: leave nothing behind
            shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        scratch.close()

    _barrier()
    result = EncodeResult(output=output, manifest=manifest_path(output), count=0, resumed_from=resumed_from)
    if rank == 0:
        dtype = token_dtype(None if cfg.is_vae else cfg.codebook_size)
        row_shape = (cfg.token_size, cfg.num_latent_tokens) if cfg.is_vae else (cfg.num_latent_tokens,)
        ranks = [partial / f"rank-{r:05d}-of-{world:05d}" for r in range(world)]
        _assemble(ranks, output, header, dtype, row_shape, shard_size, result)
        shutil.rmtree(partial, ignore_errors=True)
    _barrier()
    return result


def _encode_rank(scratch, inputs, tokenizer, rank, world, batch_size, workers, strict, exif, progress, total) -> None:
    cfg = tokenizer.config
    device = tokenizer.device
    dtype = token_dtype(None if cfg.is_vae else cfg.codebook_size)
    start = scratch.state["next_index"]
    loader = DataLoader(
        _CropStream(inputs, cfg.image_size, exif, rank, world, start),
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 * batch_size // max(workers, 1) + 2 if workers else None,
    )
    tokens_fh, rows_fh, fail_fh = (scratch.handles[f] for f in _Scratch.FILES)
    rows = scratch.state["rows"]
    pending: list[tuple[int, str, int, torch.Tensor]] = []
    next_index = start
    last_commit = time.monotonic()
    done = _rank_items_before(rank, world, start)  # inputs of this rank already handled
    rank_total = None if total is None else len(range(rank, total, world))

    def flush() -> None:
        nonlocal rows
        batch = torch.stack([p[3] for p in pending]).to(device, non_blocking=True)  # (B, 3, S, S) uint8
        out = tokenizer.encode(batch.float() / 255.0)  # same float32 division as the official pipeline
        tokens_fh.write(np.ascontiguousarray(out.cpu().numpy().astype(dtype, copy=False)).tobytes())
        for i, name, label, _ in pending:
            rows_fh.write((json.dumps({"i": i, "path": name, "label": label}) + "\n").encode())
        rows += len(pending)
        pending.clear()

    for i, name, label, crop, reason in loader:
        done += 1
        if crop is None:
            if strict:
                raise ImageError(name, reason)
            fail_fh.write((json.dumps({"i": i, "failed": name, "reason": reason}) + "\n").encode())
        else:
            pending.append((i, name, label, crop))
        if len(pending) >= batch_size:
            flush()
            next_index = i + 1
            if time.monotonic() - last_commit >= COMMIT_SECONDS:
                scratch.commit(next_index, rows)
                last_commit = time.monotonic()
        elif not pending:
            next_index = i + 1
        if progress is not None:
            progress(done, rank_total)
    if pending:
        flush()
    scratch.commit(1 << 62, rows, done=True)


def _read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _assemble(ranks, output, header, dtype, row_shape, shard_size, result) -> None:
    """Merge the ranks' committed rows by input number into the final files."""
    row_bytes = int(np.prod(row_shape)) * dtype.itemsize
    failures = sorted((f for r in ranks for f in _read_jsonl(r / "failures.jsonl")), key=lambda f: f["i"])
    result.failures = [(f["failed"], f["reason"]) for f in failures]
    counts = [json.loads((r / "state.json").read_text())["rows"] for r in ranks]
    total = sum(counts)
    result.count = total
    if total == 0:
        result.written = False
        return

    def rank_rows(folder: Path, count: int) -> Iterator[tuple[dict, bytes]]:
        with open(folder / "tokens.bin", "rb") as tok:
            for row, _ in zip(_read_jsonl(folder / "rows.jsonl"), range(count)):
                yield row, tok.read(row_bytes)

    def merged() -> Iterator[tuple[dict, bytes]]:
        streams = [rank_rows(r, c) for r, c in zip(ranks, counts)]
        yield from heapq.merge(*streams, key=lambda item: item[0]["i"])

    size = shard_size or total
    n_shards = (total + size - 1) // size
    rows = merged()
    any_label = False
    for shard in range(n_shards):
        target = output if shard_size is None else output.with_name(f"{output.stem}-{shard:06d}{output.suffix}")
        n = min(size, total - shard * size)
        shard_header = dict(header)
        if shard_size is not None:
            shard_header.update(shard=shard, num_shards=n_shards, first_row=shard * size)
        any_label |= _write_one(target, rows, n, dtype, row_shape, shard_header,
                                result.failures if shard == n_shards - 1 or shard_size is None else [])  # fmt: skip
        result.outputs.append(target)
    if shard_size is not None:
        result.output = result.outputs[0]
        result.manifest = manifest_path(result.outputs[0])


def _write_one(target, rows, n, dtype, row_shape, header, failures) -> bool:
    """Write n rows (streamed) as target (.npy, .npz or .tar) and its manifest, both atomically."""
    if target.suffix == ".tar":
        return _write_tar(target, rows, n, dtype, row_shape, header, failures)
    names: list[str] = []
    labels: list[int] = []
    mpath = manifest_path(target)
    with atomic_path(target, ".npy") as tmp_tokens, atomic_path(mpath) as tmp_manifest:
        npy_path = tmp_tokens if target.suffix == ".npy" else tmp_tokens.with_suffix(".inner.npy")
        with open(npy_path, "wb") as tfh, open(tmp_manifest, "w", encoding="utf-8") as mfh:
            np.lib.format.write_array_header_1_0(
                tfh, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n, *row_shape)}
            )
            mfh.write(manifest_header(header, dtype, (n, *row_shape)))
            for k in range(n):
                row, data = next(rows)
                tfh.write(data)
                mfh.write(manifest_row(k, row["path"], row.get("label", -1)))
                if target.suffix == ".npz":
                    names.append(row["path"])
                labels.append(row.get("label", -1))
            for name, reason in failures:
                mfh.write(manifest_failure(name, reason))
        if target.suffix == ".npz":
            with zipfile.ZipFile(tmp_tokens, "w", allowZip64=True) as zf:
                with open(npy_path, "rb") as src, zip_member(zf, "tokens.npy") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
                _zip_array(zf, "names", np.asarray(names, dtype=np.str_))
                if any(x >= 0 for x in labels):
                    _zip_array(zf, "labels", np.asarray(labels, dtype=np.int64))
            npy_path.unlink()
    return any(x >= 0 for x in labels)


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


def _write_tar(target, rows, n, dtype, row_shape, header, failures) -> bool:
    """Rows as webdataset samples: `<key>.tokens.npy` + `<key>.json` (path, row, label, model)."""
    import tarfile

    mpath = manifest_path(target)
    model_name = header["model"].get("name")
    taken: set[str] = set()
    any_label = False
    with atomic_path(target) as tmp_tar, atomic_path(mpath) as tmp_manifest:
        with tarfile.open(tmp_tar, "w", format=tarfile.USTAR_FORMAT) as tar, open(tmp_manifest, "w") as mfh:
            mfh.write(manifest_header(header, dtype, (n, *row_shape)))

            def add(member: str, payload: bytes) -> None:
                info = tarfile.TarInfo(member)
                info.size, info.mode, info.mtime = len(payload), 0o644, 0  # fixed metadata: stable bytes
                tar.addfile(info, io.BytesIO(payload))

            for k in range(n):
                row, data = next(rows)
                key = wds_key(row["path"], taken)
                buf = io.BytesIO()
                np.save(buf, np.frombuffer(data, dtype=dtype).reshape(row_shape), allow_pickle=False)
                label = row.get("label", -1)
                meta = {"row": k, "path": row["path"], "model": model_name}
                if label >= 0:
                    meta["label"] = label
                    any_label = True
                add(f"{key}.tokens.npy", buf.getvalue())
                add(f"{key}.json", json.dumps(meta).encode())
                mfh.write(manifest_row(k, row["path"], label))
            for name, reason in failures:
                mfh.write(manifest_failure(name, reason))
    return any_label


def _zip_array(zf: zipfile.ZipFile, key: str, arr: np.ndarray) -> None:
    with zip_member(zf, f"{key}.npy") as dst:
        np.lib.format.write_array(dst, arr, allow_pickle=False)


def _version() -> str:
    from . import __version__

    return __version__


def _main(argv: list[str]) -> None:
    """`python -m titok_cli.encode_job MODEL INPUT OUT`: a bare entry point for torchrun tests and scripts."""
    from .loading import load_tokenizer

    model, src, out = argv[:3]
    _, _ = dist_info()
    tok = load_tokenizer(model, device=rank_device("cpu"))
    encode_files([src], out, tok, batch_size=5)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
