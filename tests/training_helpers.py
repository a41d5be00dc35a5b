"""Shared by tests/test_training_*.py: a real token set and a tiny generator config.

The token set: every photo in ../shared/images as itself, mirrored and as two corner crops, laid out
in ImageNet class folders (photo i -> class i) and encoded by `encode_files` with the golden tiny
tokenizer (8 tokens, codebook 256), so labels come from the folders as for a real dataset. By
default with `hflip`, as users prepare training data: every run then also reads mirrored copies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageOps

from .conftest import GOLDEN, IMAGES, ROOT

TOKENIZER = GOLDEN / "tok_vq_legacy_tiny"
GENERATOR = GOLDEN / "gen_vit_tiny"


def photo_variants(folder: Path) -> int:
    """Write the variants into folder/train/<wnid>/...; returns the number of images."""
    from titok_cli.imagenet import _table

    wnids = _table().wnids
    photos = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    n = 0
    for i, photo in enumerate(photos):
        target = folder / "train" / wnids[i]
        target.mkdir(parents=True, exist_ok=True)
        img = Image.open(photo).convert("RGB")
        w, h = img.size
        side = int(min(w, h) * 0.75)
        variants = {"orig": img, "flip": ImageOps.mirror(img), "tl": img.crop((0, 0, side, side)),
                    "br": img.crop((w - side, h - side, w, h))}  # fmt: skip
        for name, im in variants.items():
            im.save(target / f"{photo.stem}_{name}.png")
            n += 1
    return n


def make_token_set(folder: Path, name: str = "tokens.npz", hflip: bool = True) -> Path:
    """Encode the variants with the golden tokenizer; returns the token file (labels in the .npz)."""
    from titok_cli import encode_files, load_tokenizer

    images = folder / "images"
    photo_variants(images)
    out = folder / name
    encode_files([images / "train"], out, load_tokenizer(TOKENIZER), batch_size=8, hflip=hflip)
    return out


def tiny_config(folder: Path, **generator: object) -> Path:
    """gen_vit_tiny's config.json with some generator keys replaced, written to folder/name."""
    doc = json.loads((GENERATOR / "config.json").read_text())
    doc["model"]["generator"].update(generator)
    path = folder / "gen_config.json"
    path.write_text(json.dumps(doc))
    return path


def titok(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m titok_cli ARGS` with this checkout first on the path."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full.pop("TITOK_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "titok_cli", *args], env=full, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
