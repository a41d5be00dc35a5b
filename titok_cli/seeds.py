"""The seed rule: image j of class c, under seed S, draws its noise from a generator of its own.

    image_seed(S, c, j) = first 8 bytes (little endian) of sha256("titok-sample:S:c:j"), top bit cleared

j counts the images of class c in request order (0, 1, 2, ...), which is also the number in the
file name (`class3_002.png` is j = 2). Each image's torch.Generator is seeded with that value,
so a picture depends only on (S, c, j), the sampling settings and the model, never on which
other images share its batch, the batch size, the output format or the number of ranks.
The text of the mix is fixed: changing it changes every picture, so `SEED_RULE` names it in
token-file headers and FID job fingerprints.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

SEED_RULE = "titok-sample-v1: per image, sha256(seed:class:index)"


def image_seed(seed: int, class_id: int, index: int) -> int:
    """The 63-bit seed of image `index` of class `class_id` under `seed` (stable across versions)."""
    digest = hashlib.sha256(f"titok-sample:{int(seed)}:{int(class_id)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def class_indices(labels: Sequence[int]) -> list[int]:
    """j for every entry: how many earlier entries have the same class ([3, 3, 5, 3] -> [0, 1, 0, 2])."""
    seen: dict[int, int] = {}
    out = []
    for label in labels:
        out.append(seen.get(int(label), 0))
        seen[int(label)] = out[-1] + 1
    return out


def image_seeds(seed: int, labels: Sequence[int]) -> list[int]:
    """One seed per entry of `labels` by the rule above (pass to `generate(..., seeds=...)`)."""
    return [image_seed(seed, c, j) for c, j in zip(labels, class_indices(labels))]


__all__ = ["SEED_RULE", "image_seed", "class_indices", "image_seeds"]
