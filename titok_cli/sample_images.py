"""Class ids -> PNG files: the library behind `titok sample` (importable without typer or rich).

Every image is rendered by the seed rule (`seeds.py`): its noise comes from its own generator,
so the PNG loop here and the FID job (`sample_job.py`) give the same picture for the same
(seed, class, index), in any batch size.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import UsageError
from .imagenet import NUM_CLASSES as IMAGENET_CLASSES
from .models.generator import TiTokGenerator
from .models.tokenizer import TiTokTokenizer, to_uint8
from .png import PngWriter, contact_sheet, save_png
from .sampling_params import SamplingParams
from .seeds import SEED_RULE, class_indices, image_seeds

Progress = Callable[[int, int], None]  # (done, total)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".npz", ".npy")


def resolve_classes(values: Sequence[str | int], num_classes: int) -> list[int]:
    """Class ids or ImageNet names -> ids, checked against the generator's class count (UsageError)."""
    from .imagenet import resolve_class

    ids = []
    for value in values:
        text = str(value).strip()
        if re.fullmatch(r"[+-]?\d+", text):
            class_id = int(text)
        elif num_classes != IMAGENET_CLASSES:
            raise UsageError(
                f"class {value!r}: names are ImageNet-1k class names, but this generator has "
                f"{num_classes} classes; give a class id 0..{num_classes - 1}"
            )
        else:
            class_id = resolve_class(text)
        if not 0 <= class_id < num_classes:
            raise UsageError(f"class id {class_id} is out of range: this generator has classes 0..{num_classes - 1}")
        ids.append(class_id)
    return ids


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def file_stem(class_id: int, index: int, num_classes: int) -> str:
    """`class207_golden_retriever_000` (ImageNet generators) or `class3_000`: only [0-9a-z_] characters."""
    stem = f"class{int(class_id)}"
    if num_classes == IMAGENET_CLASSES:
        from .imagenet import class_name

        stem += "_" + _slug(class_name(class_id))
    return f"{stem}_{int(index):03d}"


@dataclass(frozen=True)
class SamplePlan:
    """What to render: one entry per image, in output order."""

    labels: list[int]  # class of each image
    indices: list[int]  # j: its number within its class (the seed rule's index, the file name's number)
    seeds: list[int]  # its generator's seed
    seed: int

    @classmethod
    def build(cls, classes: Sequence[int], per_class: int, seed: int) -> "SamplePlan":
        """`per_class` images of each class, class by class (a class given twice continues its count)."""
        labels = [int(c) for c in classes for _ in range(per_class)]
        return cls(labels, class_indices(labels), image_seeds(seed, labels), int(seed))

    def stems(self, num_classes: int) -> list[str]:
        return [file_stem(c, j, num_classes) for c, j in zip(self.labels, self.indices)]


def decode_images(tok: TiTokTokenizer, ids: torch.Tensor) -> np.ndarray:
    """Token ids [B,K] -> uint8 [B,S,S,3].

    On the CPU, one image at a time: batched CPU convolutions and matrix products round the
    last bit differently with the batch size, and a picture must not depend on its batch.
    """
    rows = ids.split(1) if ids.device.type == "cpu" else (ids,)
    return np.concatenate([to_uint8(tok.decode(r)).cpu().numpy() for r in rows])  # (B, S, S, 3)


def render_batch(
    gen: TiTokGenerator, tok: TiTokTokenizer, labels: Sequence[int], seeds: Sequence[int], params: SamplingParams
) -> tuple[np.ndarray, np.ndarray]:
    """One batch of the plan -> (int64 token ids [B,K], uint8 images [B,S,S,3])."""
    classes = torch.as_tensor(list(labels), dtype=torch.long, device=gen.device)
    ids = gen.generate(classes, params=params, seeds=list(seeds))  # (B, K)
    return ids.cpu().numpy(), decode_images(tok, ids)


def check_output_folder(folder: Path) -> None:
    """`-o` names the folder the PNG files go in; refuse a file, or a name that looks like one."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {folder} is a file; -o names the folder the PNG files go in")
    if not folder.exists() and folder.suffix.lower() in IMAGE_SUFFIXES:
        hint = "--grid FILE.png for one contact sheet" if folder.suffix.lower() != ".npz" else "--npz FILE.npz"
        raise UsageError(
            f"-o {folder} looks like a file name, but -o is the folder the PNG files go in "
            f"(class3_000.png, ...); use -o {folder.with_suffix('')}/ or {hint}"
        )


def _inside(folder: Path, stem: str) -> Path:
    """folder/stem.png, refusing a stem that would leave the folder (stems are slugs; this is the guard)."""
    if not re.fullmatch(r"[0-9a-z_]+", stem):
        raise UsageError(f"{stem!r} is not a safe file name")
    return folder / f"{stem}.png"


@dataclass
class PngResult:
    images: list[Path] = field(default_factory=list)
    tokens: np.ndarray | None = None  # int64 [N,K]
    grid: Path | None = None


def sample_pngs(
    gen: TiTokGenerator,
    tok: TiTokTokenizer,
    folder: str | os.PathLike,
    plan: SamplePlan,
    params: SamplingParams,
    *,
    batch_size: int = 16,
    grid: Path | None = None,
    grid_columns: int | None = None,
    progress: Progress | None = None,
) -> PngResult:
    """Render `plan` into folder/<stem>.png (written atomically, compressed on background threads)."""
    folder = Path(folder)
    check_output_folder(folder)
    names = [_inside(folder, s) for s in plan.stems(gen.config.condition_num_classes)]
    folder.mkdir(parents=True, exist_ok=True)
    result, all_ids, all_pixels, n = PngResult(grid=grid), [], [], len(plan.labels)
    with PngWriter() as pngs:
        for start in range(0, n, batch_size):
            end = min(start + batch_size, n)
            ids, pixels = render_batch(gen, tok, plan.labels[start:end], plan.seeds[start:end], params)
            for image, path in zip(pixels, names[start:end]):
                pngs.submit(image, path)
                result.images.append(path)
            all_ids.append(ids)
            if grid is not None:
                all_pixels.append(pixels)
            if progress is not None:
                progress(end, n)
    result.tokens = np.concatenate(all_ids)  # (N, K)
    if grid is not None:
        save_png(contact_sheet(np.concatenate(all_pixels), columns=grid_columns), grid)
    return result


__all__ = [
    "SEED_RULE",
    "SamplePlan",
    "PngResult",
    "resolve_classes",
    "file_stem",
    "decode_images",
    "render_batch",
    "check_output_folder",
    "sample_pngs",
]
