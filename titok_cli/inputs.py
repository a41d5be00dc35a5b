"""Inputs of a job, streamed: image files and folders (sorted walk) or webdataset tar shards.

Inputs are numbered in a deterministic order and never listed into memory. Input i belongs
to rank i mod W (torchrun), and DataLoader worker w of N takes every N-th input of its rank,
so every input is read exactly once and the stream can restart at any input number.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .errors import ImageError, TitokError
from .imagenet import class_from_wnid
from .preprocess import iter_image_files, load_image, read_image

WDS_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm")
_TAR = re.compile(r"\.tar(\.gz)?$|\{.*\.\..*\}.*\.tar")


def is_webdataset(inputs: Sequence[str]) -> bool:
    return any(_TAR.search(os.fspath(x)) for x in inputs)


def _folder_label(name: str) -> int:
    """ImageNet-style class folders: `[train/]n02099601/x.JPEG` -> 207; anything else -> -1."""
    parent = name.rsplit("/", 2)[-2] if "/" in name else ""
    cls = class_from_wnid(parent) if parent else None
    return -1 if cls is None else cls


def iter_sources(inputs: Sequence[str]) -> Iterator[tuple[str, int, Callable[[int, bool], Any]]]:
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


class CropStream(IterableDataset):
    """Yields (index, name, label, uint8 [3,S,S] crop or None, failure reason) in index order."""

    def __init__(self, inputs: Sequence[str], size: int, exif: bool, rank: int, world: int, start: int) -> None:
        self.inputs, self.size, self.exif = list(inputs), size, exif
        self.rank, self.world, self.start = rank, world, start

    def __iter__(self) -> Iterator[tuple[int, str, int, torch.Tensor | None, str]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        first = rank_items_before(self.rank, self.world, self.start)  # this rank's items already done
        for i, (name, label, load) in enumerate(iter_sources(self.inputs)):
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


def rank_items_before(rank: int, world: int, index: int) -> int:
    """How many inputs numbered below `index` belong to `rank` (input i goes to rank i mod world)."""
    return len(range(rank, index, world))


def has_inputs(inputs: Sequence[str]) -> bool:
    """Whether there is anything to encode: one image found is enough (tar shards: assumed)."""
    return is_webdataset(inputs) or next(iter(iter_image_files(inputs)), None) is not None


def count_inputs(inputs: Sequence[str]) -> int | None:
    """Number of candidate files (a streaming walk); None for tar shards (not known up front)."""
    if is_webdataset(inputs):
        return None
    return sum(1 for _ in iter_image_files(inputs))




def inputs_changed_since(inputs: Sequence[str], mtime_ns: int, names: set[str] | None) -> bool:
    """Whether any input is newer than `mtime_ns`, or (folders) the set of files differs from `names`.

    Lets a rerun of a finished command be reported as already done only when its result is
    still what the same command would write now. Tar shards are compared by their own mtimes.
    """
    if is_webdataset(inputs):
        return any(not os.path.exists(p) or os.stat(p).st_mtime_ns > mtime_ns for p in inputs)
    seen = set()
    for path, name in iter_image_files(inputs):
        seen.add(name)
        try:
            if os.stat(path).st_mtime_ns > mtime_ns:
                return True
        except OSError:
            return True
    return names is not None and seen != names
