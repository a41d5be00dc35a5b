"""One `titok sample` request, checked and run: what the command line asks for, as data.

`run_sample(SampleRequest(...))` loads the generator and its paired tokenizer, builds the
sampling settings (the model's, overridden by the request), then writes PNGs
(`sample_images.sample_pngs`) or the FID archive (`sample_job.sample_to_npz`), and returns a
`SampleReport` for the caller to print. Flag mistakes raise UsageError before a model loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import UsageError
from .outputs import check_output_file
from .sample_images import Progress, SamplePlan, check_output_folder
from .sampling_params import SamplingParams
from .seeds import SEED_RULE


def check_draws(classes: Sequence[str | int], all_classes: bool, per_class: int, batch_size: int) -> None:
    """UsageError (naming the flag) for a class choice, count or batch size that cannot sample."""
    if bool(classes) == all_classes:
        raise UsageError("give --class (repeatable) or --all-classes")
    if per_class < 1:
        raise UsageError(f"--num must be >= 1, not {per_class}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, not {batch_size}")


@dataclass(frozen=True)
class SampleRequest:
    """Everything `titok sample` takes; `overrides` holds SamplingParams fields (None = the model's)."""

    classes: Sequence[str | int] = ()  # ids or ImageNet names
    all_classes: bool = False
    per_class: int = 4
    folder: Path = Path("samples")  # PNG output
    model: str = "titok-l32"
    preset: str | None = None  # architecture of a lone generator weights file
    tokenizer: str | None = None
    seed: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)
    npz: Path | None = None  # FID archive instead of PNGs
    grid: Path | None = None
    save_tokens: Path | None = None
    batch_size: int = 16
    device: str = "auto"
    dtype: str = "float32"

    def check(self) -> None:
        """UsageError (naming the flag) for values and combinations that cannot work."""
        check_draws(self.classes, self.all_classes, self.per_class, self.batch_size)
        SamplingParams.check(**self.overrides)
        check_output_file(self.grid, (".png",), "--grid")
        check_output_file(self.save_tokens, (".npy",), "--save-tokens")
        if self.npz is not None:
            check_output_file(self.npz, (".npz",), "--npz")
            if self.grid is not None or self.save_tokens is not None:
                raise UsageError("--npz writes only the archive; drop --grid and --save-tokens")
        else:
            check_output_folder(self.folder)


@dataclass
class SampleReport:
    """What a run made, for the caller to print (`as_json` is the `--json` document)."""

    request: SampleRequest
    generator: dict[str, Any]
    tokenizer: dict[str, Any]
    device: str
    dtype: str
    classes: list[int]
    params: SamplingParams
    count: int
    images: list[Path] = field(default_factory=list)
    rank: int = 0
    ranks: int = 1
    batches_done_before: int = 0

    def as_json(self) -> dict[str, Any]:
        r = self.request
        if r.npz is not None:
            return {"generator": self.generator, "tokenizer": self.tokenizer, "output": str(r.npz),
                    "count": self.count, "classes": len(self.classes), "per_class": r.per_class, "seed": r.seed,
                    "seed_rule": SEED_RULE, "sampling": self.params.to_dict(), "ranks": self.ranks,
                    "batches_done_before": self.batches_done_before}  # fmt: skip
        return {"generator": self.generator, "tokenizer": self.tokenizer, "device": self.device, "dtype": self.dtype,
                "seed": r.seed, "seed_rule": SEED_RULE, "classes": self.classes, "per_class": r.per_class,
                "sampling": self.params.to_dict(), "images": [str(p) for p in self.images],
                "grid": str(r.grid) if r.grid else None,
                "tokens": str(r.save_tokens) if r.save_tokens else None}  # fmt: skip


def run_sample(
    request: SampleRequest, progress: Progress | None = None, notify: Callable[[str], None] | None = None
) -> SampleReport:
    """Check `request`, load the models, render, write; `progress(done, total)` is called on rank 0.

    `notify(line)` gets, on rank 0 and before any image is rendered, the note that a generator
    unknown to the registry samples with its config's values and the documented defaults.
    """
    request.check()
    from .devices import parse_dtype, pick_device
    from .distributed import dist_info, rank_device
    from .loading import load_generator
    from .pairing import pair_tokenizer
    from .sample_images import resolve_classes, sample_pngs
    from .sample_job import sample_to_npz

    r = request
    rank, world = dist_info() if r.npz is not None else (0, 1)
    dev = pick_device(rank_device(r.device) if r.npz is not None else r.device)
    dt = parse_dtype(r.dtype)
    gen = load_generator(r.model, device=dev, dtype=dt, preset=r.preset)
    num_classes = gen.config.condition_num_classes
    class_ids = list(range(num_classes)) if r.all_classes else resolve_classes(r.classes, num_classes)
    tok = pair_tokenizer(gen, r.tokenizer, r.model, dt)
    params = gen.sampling_params(**r.overrides)
    if notify is not None and rank == 0 and gen.source.sampling_note:
        notify(gen.source.sampling_note)
    report = SampleReport(request=r, generator=gen.source.describe(), tokenizer=tok.source.describe(),
                          device=str(dev), dtype=str(dt).removeprefix("torch."), classes=class_ids, params=params,
                          count=len(class_ids) * r.per_class, rank=rank, ranks=world)  # fmt: skip
    if r.npz is not None:
        result = sample_to_npz(gen, tok, r.npz, class_ids, r.per_class, params, batch_size=r.batch_size,
                               seed=r.seed, progress=progress)  # fmt: skip
        report.batches_done_before = result.batches_done_before
        return report

    plan = SamplePlan.build(class_ids, r.per_class, r.seed)
    pngs = sample_pngs(gen, tok, r.folder, plan, params, batch_size=r.batch_size, grid=r.grid,
                       grid_columns=r.per_class if len(class_ids) > 1 else None, progress=progress)  # fmt: skip
    report.images = pngs.images
    if r.save_tokens is not None:
        _save_tokens(r.save_tokens, pngs.tokens, gen, tok, plan, params, [p.name for p in pngs.images])
    return report


def _save_tokens(path: os.PathLike, tokens, gen, tok, plan: SamplePlan, params: SamplingParams, names) -> None:
    """A regular token file with its manifest, so `titok decode` finds the tokenizer by itself."""
    from . import __version__
    from .token_file import model_header, token_dtype
    from .token_writers import save_tokens

    generator = gen.source.describe()
    generator.pop("weights", None)
    header = {"tool": f"titok-cli {__version__}", "model": model_header(tok),
              "sampling": {**params.to_dict(), "seed": plan.seed, "seed_rule": SEED_RULE},
              "generator": generator}  # fmt: skip
    save_tokens(path, tokens.astype(token_dtype(tok.codebook_size)), header, names, labels=plan.labels)


__all__ = ["SampleRequest", "SampleReport", "run_sample"]
