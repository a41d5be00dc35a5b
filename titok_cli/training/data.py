"""Token rows for training: token files -> (ids, labels), and the order they are visited in.

`TokenDataset` opens every file with `load_tokens(as_stored=True)` (a `.npy` stays memory-mapped)
and checks, before any training, that the files fit together and fit the model: one tokenizer
(the manifests' `model` headers agree), the model's token count and codebook, and a label for
every row when the run is class-conditional.

`EpochSampler` fixes the order: epoch e visits the rows in a permutation seeded by (seed, e);
optimizer step s takes the global batch at positions [s*G, (s+1)*G) of the endless sequence of
epochs (a batch may span two epochs). Each torchrun rank takes its contiguous slice of that batch.
When the files hold mirrored copies (`titok encode --hflip`), each row is read as its original or
its mirror, a fair coin per row and epoch from its own seeded stream (seed, e, 1), which is how
the official pipeline's random flip acts on pre-tokenized data.
Everything is a pure function of the step, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import TokenFileError, UsageError
from ..token_file import TokenFile, load_tokens

_SCAN_ROWS = 1 << 16  # rows checked per slice when scanning ids (bounded memory on big files)


_IDENTITY_KEYS = ("name", "repo", "quantize_mode", "num_tokens", "codebook_size", "token_size", "image_size")


def tokenizer_identity(header: dict[str, Any]) -> dict[str, Any] | None:
    """What identifies the tokenizer a manifest's tokens came from (None: no manifest header).

    The manifest's `model` record without where it was read from this time (`local_path`,
    `revision`): the same checkpoint reached by another spelling still has the same name."""
    model = header.get("model")
    return {k: model.get(k) for k in _IDENTITY_KEYS} if isinstance(model, dict) else None


@dataclass(frozen=True)
class DataFacts:
    """What the model must agree with: token count, ids range, classes seen, and the tokenizer."""

    rows: int
    num_tokens: int
    max_id: int
    num_classes_seen: int | None
    tokenizer: dict[str, Any] | None


class TokenDataset:
    """The rows of one or more token files, read on demand (memory-mapped `.npy` stays on disk)."""

    def __init__(self, paths: Sequence[str | os.PathLike], *, need_labels: bool = True, hflip: bool = True) -> None:
        if not paths:
            raise UsageError("no token files given")
        self.files: list[TokenFile] = [load_tokens(p, as_stored=True) for p in paths]
        self.need_labels = need_labels
        self._check_files()
        self.hflip = hflip and self._mirrored()  # read mirrored copies (every file has them)
        sizes = [len(tf.tokens) for tf in self.files]
        self.offsets = np.cumsum([0] + sizes)  # (F+1,) first row of each file
        self.facts = self._facts()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def paths(self) -> list[Path]:
        return [tf.path for tf in self.files if tf.path is not None]

    def _check_files(self) -> None:
        first = self.files[0]
        ref = tokenizer_identity(first.header)
        for tf in self.files:
            if tf.is_latent:
                raise TokenFileError(f"{tf.path}: holds continuous VAE latents; a MaskGIT generator trains "
                                     "on the token ids of a VQ tokenizer")  # fmt: skip
            if len(tf.tokens) == 0:
                raise TokenFileError(f"{tf.path}: holds no rows")
            if tf.tokens.shape[1] != first.tokens.shape[1]:
                raise TokenFileError(f"{tf.path}: {tf.tokens.shape[1]} tokens per row, but {first.path} has "
                                     f"{first.tokens.shape[1]}: the files come from different tokenizers")  # fmt: skip
            mine = tokenizer_identity(tf.header)
            if (ref is None) != (mine is None) or (ref is not None and mine != ref):
                raise TokenFileError(
                    f"{tf.path} and {first.path} were written by different tokenizers "
                    f"({_describe(mine)} vs {_describe(ref)}); train on tokens of one tokenizer"
                )
            if self.need_labels:
                if tf.labels is None:
                    raise TokenFileError(
                        f"{tf.path}: no class labels (neither in the .npz nor in its manifest); a class-"
                        "conditional generator needs one per row (encode ImageNet-style class folders "
                        "such as train/n01440764/*.JPEG, or webdataset shards with .cls)"
                    )
                missing = np.flatnonzero(tf.labels < 0)
                if missing.size:
                    row = int(missing[0])
                    name = tf.names[row] if tf.names else f"row {row}"
                    raise TokenFileError(f"{tf.path}: {missing.size} of {len(tf.labels)} rows have no class label "
                                         f"(first: {name}); every row needs one for class-conditional training")  # fmt: skip

    def _mirrored(self) -> bool:
        """Whether the files hold mirrored copies; a mix of files with and without is refused."""
        have = [tf.tokens_hflip is not None for tf in self.files]
        if any(have) and not all(have):
            lacking = self.files[have.index(False)].path
            holding = self.files[have.index(True)].path
            raise TokenFileError(f"{lacking}: has no mirrored copies but {holding} has (titok encode --hflip); "
                                 "re-encode it with --hflip, or train with --no-hflip")  # fmt: skip
        return all(have)

    def _facts(self) -> DataFacts:
        max_id = 0
        for tf in self.files:
            arrays = [tf.tokens] + ([tf.tokens_hflip] if self.hflip else [])
            for arr in arrays:
                for start in range(0, len(arr), _SCAN_ROWS):
                    max_id = max(max_id, int(np.max(arr[start : start + _SCAN_ROWS])))
        classes = None
        if self.need_labels:
            classes = max(int(tf.labels.max()) for tf in self.files if tf.labels is not None) + 1
        return DataFacts(len(self), int(self.files[0].tokens.shape[1]), max_id, classes,
                         tokenizer_identity(self.files[0].header))  # fmt: skip

    def check_model(self, num_tokens: int, codebook_size: int, num_classes: int | None) -> None:
        """Refuse data the generator cannot train on (one TokenFileError naming the first problem)."""
        f, where = self.facts, self.files[0].path
        if f.num_tokens != num_tokens:
            raise TokenFileError(f"{where}: rows of {f.num_tokens} tokens, but the generator models {num_tokens} "
                                 "(image_seq_len); pick a generator config made for this tokenizer")  # fmt: skip
        header_codebook = (f.tokenizer or {}).get("codebook_size")
        if header_codebook is not None and header_codebook != codebook_size:
            raise TokenFileError(f"{where}: written by a tokenizer with codebook {header_codebook}, but the generator "
                                 f"predicts {codebook_size} ids (codebook_size); they must match")  # fmt: skip
        if f.max_id >= codebook_size:
            raise TokenFileError(f"{where}: holds token id {f.max_id}, outside the generator's codebook "
                                 f"0..{codebook_size - 1}")  # fmt: skip
        if num_classes is not None and f.num_classes_seen is not None and f.num_classes_seen > num_classes:
            raise TokenFileError(f"{where}: class label {f.num_classes_seen - 1} is outside the generator's classes "
                                 f"0..{num_classes - 1} (condition_num_classes)")  # fmt: skip

    def rows(self, indices: np.ndarray, mirrored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Global row indices [B] -> (int64 ids [B,K], int64 labels [B]; -1 without labels).

        `mirrored` [B] bool picks the mirrored copy of those rows (only with `self.hflip`)."""
        which = np.searchsorted(self.offsets, indices, side="right") - 1  # (B,) file of each row
        ids = np.empty((len(indices), self.facts.num_tokens), dtype=np.int64)
        labels = np.full(len(indices), -1, dtype=np.int64)
        for f in np.unique(which):
            sel = which == f
            local = indices[sel] - self.offsets[f]
            tf = self.files[f]
            ids[sel] = tf.tokens[local]
            if mirrored is not None and self.hflip:
                flip = mirrored[sel]
                ids[np.flatnonzero(sel)[flip]] = tf.tokens_hflip[local[flip]]
            if tf.labels is not None:
                labels[sel] = tf.labels[local]
        return ids, labels

    def identity(self) -> list[dict[str, Any]]:
        """Per file: path, rows and the array's hash from its manifest (part of a run's fingerprint)."""
        out = []
        for tf in self.files:
            array = tf.header.get("array") if isinstance(tf.header.get("array"), dict) else {}
            item = {"path": str(Path(tf.path).resolve()) if tf.path else None, "rows": len(tf.tokens),
                    "sha256": array.get("sha256")}  # fmt: skip
            if self.hflip:
                item["hflip_sha256"] = array.get("hflip_sha256")
            out.append(item)
        return out


def _describe(identity: dict[str, Any] | None) -> str:
    if identity is None:
        return "no manifest"
    return json.dumps({k: identity.get(k) for k in ("name", "codebook_size", "num_tokens") if k in identity})


class EpochSampler:
    """Row order: a seeded permutation per epoch, G rows per optimizer step, sliced per rank."""

    def __init__(self, num_rows: int, global_batch: int, seed: int) -> None:
        if num_rows < 1 or global_batch < 1:
            raise ValueError("the sampler needs at least one row and a batch of at least one")
        self.num_rows, self.global_batch, self.seed = num_rows, global_batch, seed
        self._cached: tuple[int, np.ndarray] | None = None
        self._cached_flips: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cached = (epoch, rng.permutation(self.num_rows))
        return self._cached[1]

    def mirrored(self, epoch: int) -> np.ndarray:
        """[num_rows] bool: which rows epoch `epoch` reads mirrored (a stream apart from the order's)."""
        if self._cached_flips is None or self._cached_flips[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 1])
            self._cached_flips = (epoch, rng.random(self.num_rows) < 0.5)
        return self._cached_flips[1]

    def global_batch_indices(self, step: int) -> np.ndarray:
        """Row indices [G] of optimizer step `step` (positions step*G .. step*G+G-1)."""
        return self.step_rows(step)[0]

    def step_rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(row indices [G], mirrored [G] bool) of optimizer step `step`."""
        positions = np.arange(step * self.global_batch, (step + 1) * self.global_batch)
        rows = np.empty(self.global_batch, dtype=np.int64)
        flips = np.empty(self.global_batch, dtype=bool)
        for epoch in np.unique(positions // self.num_rows):
            sel = positions // self.num_rows == epoch
            rows[sel] = self.permutation(int(epoch))[positions[sel] % self.num_rows]
            flips[sel] = self.mirrored(int(epoch))[rows[sel]]
        return rows, flips

    def epoch_of(self, step: int) -> float:
        """Epochs completed (fractional) after `step` optimizer steps."""
        return step * self.global_batch / self.num_rows

    @staticmethod
    def shard(global_rows: np.ndarray, rank: int, world: int) -> slice:
        """This rank's contiguous slice of a global batch (the batch divides evenly; checked earlier)."""
        per = len(global_rows) // world
        return slice(rank * per, (rank + 1) * per)
