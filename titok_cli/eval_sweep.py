"""Sample + gFID over a grid of sampling settings (`titok eval sweep`), resumable point by point.

Every grid point is the generator's own `SamplingParams` with the swept fields overridden (never
spelled-out defaults), so a sweep of guidance scale keeps the model's official temperature,
steps and schedule. Per point:
  1. samples: `sample_job.sample_to_npz` into RUN_DIR/points/<settings>-<hash>/samples.npz (an
     interrupted point resumes from its finished batches); `samples.json` beside it records what
     was sampled, so a point whose samples are complete is never sampled again;
  2. metrics: `eval_gen.evaluate_samples` against the reference, whose Inception features are
     computed once per run and cached in RUN_DIR/reference/;
  3. one line in RUN_DIR/results.jsonl with the point's fingerprint (model, tokenizer, classes,
     count, seed, settings, reference and Inception file): a rerun skips points found there.
The tables (results.csv, results.json) and the plot (gfid.png) are rewritten at the end from the
points of this grid, in grid order. Under torchrun every rank runs the loop (both steps are
sharded) and rank 0 writes the files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .eval_gen import (
    FeatureExtractor,
    GenEvalResult,
    ReferenceSet,
    evaluate_samples,
    load_reference,
    open_samples,
)
from .sampling_params import FLAGS, SamplingParams
from .seeds import SEED_RULE

RESULTS = "results.jsonl"
# column titles of the swept fields (tables, plot)
TITLES = {"num_steps": "steps", "guidance_scale": "guidance scale", "guidance_decay": "guidance decay",
          "guidance_scale_pow": "guidance pow", "randomize_temperature": "temperature",
          "softmax_temperature_annealing": "annealing"}  # fmt: skip
METRICS = ("fid", "inception_score", "inception_score_std", "precision", "recall")
OnPoint = Callable[[int, int, str, bool], None]  # (index, count, label, reused)
Progress = Callable[[str, int, int], None]  # (phase "sampling" / "features", done, total), rank 0


# -- the grid ----------------------------------------------------------------------------------


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "on", "yes", "1"):
        return True
    if low in ("false", "off", "no", "0"):
        return False
    raise ValueError(text)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "num_steps": int, "guidance_scale": float, "guidance_decay": str, "guidance_scale_pow": float,
    "randomize_temperature": float, "softmax_temperature_annealing": _parse_bool,
}  # fmt: skip


def parse_axis(name: str, values: Sequence[Any]) -> list[Any]:
    """One swept field's values (text from the command line, or already typed), checked; UsageError naming the flag."""
    if name not in FLAGS:
        raise UsageError(f"{name} is not a sampling setting; sweepable: {', '.join(FLAGS)}")
    flag = FLAGS[name]
    if not values:
        raise UsageError(f"{flag}: give at least one value")
    parsed = []
    for value in values:
        try:
            typed = _PARSERS[name](value) if isinstance(value, str) else value
        except ValueError:
            raise UsageError(f"{flag}: {value!r} is not a valid value") from None
        SamplingParams.check(**{name: typed})
        parsed.append(typed)
    canonical = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and _PARSERS[name] is float
                 else v for v in parsed]  # fmt: skip
    if len(set(canonical)) != len(canonical):
        raise UsageError(f"{flag}: a value is repeated in {', '.join(map(str, values))}")
    return canonical


@dataclass(frozen=True)
class GridPoint:
    """One combination of the swept settings, and the full sampling settings it stands for."""

    index: int
    settings: dict[str, Any]  # swept field -> value, in axis order
    params: SamplingParams

    @property
    def label(self) -> str:
        return ", ".join(f"{TITLES[k]} {v}" for k, v in self.settings.items())

    @property
    def slug(self) -> str:
        text = "_".join(f"{k}-{v}" for k, v in self.settings.items())
        return re.sub(r"[^0-9A-Za-z._-]+", "", text.lower())


def build_grid(base: SamplingParams, axes: Mapping[str, Sequence[Any]]) -> list[GridPoint]:
    """Every combination of `axes` (the first axis varies slowest), each `base.override(...)`."""
    if not axes:
        raise UsageError(f"nothing to sweep: give a list of values to at least one of {', '.join(FLAGS.values())}")
    typed = {name: parse_axis(name, values) for name, values in axes.items()}
    names = list(typed)
    return [GridPoint(i, dict(zip(names, combo)), base.override(**dict(zip(names, combo))))
            for i, combo in enumerate(itertools.product(*typed.values()))]  # fmt: skip


# -- the request and its result ----------------------------------------------------------------


@dataclass(frozen=True)
class SweepRequest:
    """Everything `titok eval sweep` takes; `axes` maps SamplingParams fields to value lists."""

    model: str | os.PathLike
    reference: Path
    axes: Mapping[str, Sequence[Any]]
    run_dir: Path
    tokenizer: str | os.PathLike | None = None
    classes: Sequence[str | int] = ()
    all_classes: bool = False
    per_class: int = 50
    seed: int = 0
    inception: Path | None = None
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "float32"
    is_split_size: int | None = None  # None: ADM's 5000

    def check(self) -> None:
        """UsageError (naming the flag) before any model loads."""
        if bool(self.classes) == self.all_classes:
            raise UsageError("give --class (repeatable) or --all-classes")
        if self.per_class < 1:
            raise UsageError(f"--num must be >= 1, not {self.per_class}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, not {self.batch_size}")
        if self.classes and len(self.classes) * self.per_class < 4:  # k=3 neighbours need 4 points
            n = len(self.classes)
            raise UsageError(f"{n} class{'es' if n != 1 else ''} x {self.per_class} images per class is too few: "
                             "gFID and precision/recall need at least 4 images per grid point")  # fmt: skip
        if not self.axes:
            raise UsageError(f"nothing to sweep: give a list of values to at least one of {', '.join(FLAGS.values())}")
        for name, values in self.axes.items():
            parse_axis(name, values)
        if Path(self.run_dir).is_file():
            raise UsageError(f"--output {self.run_dir} is a file; the run folder must be a folder")


@dataclass(frozen=True)
class SweepRow:
    """One grid point's settings and metrics; `reused` when read back from results.jsonl."""

    point: int
    settings: dict[str, Any]
    sampling: dict[str, Any]
    samples: str
    result: GenEvalResult
    reused: bool

    def as_json(self) -> dict[str, Any]:
        r = self.result
        return {"point": self.point, "settings": self.settings, "sampling": self.sampling, "samples": self.samples,
                "gfid": r.fid, "inception_score": r.inception_score, "inception_score_std": r.inception_score_std,
                "precision": r.precision, "recall": r.recall, "sample_count": r.sample_count,
                "reused": self.reused}  # fmt: skip


@dataclass
class SweepResult:
    """The whole grid's rows in grid order, and where the tables and the plot went."""

    rows: list[SweepRow]
    axis_names: list[str]
    run_dir: Path
    csv: Path
    json: Path
    plot: Path
    reference: str
    rank: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def axis_titles(self) -> dict[str, str]:
        return {n: TITLES[n] for n in self.axis_names}

    def as_json(self) -> dict[str, Any]:
        return {"axes": self.axis_names, "reference": self.reference, "run_dir": str(self.run_dir),
                "csv": str(self.csv), "json": str(self.json), "plot": str(self.plot), "notes": self.notes,
                "rows": [row.as_json() for row in self.rows]}  # fmt: skip


# -- fingerprints and the results file ---------------------------------------------------------


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _file_identity(path: Path | None) -> dict[str, Any] | None:
    """Which file, as cheaply as it can be told apart: resolved path, size, modification time."""
    if path is None:
        return None
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_results(run_dir: Path) -> dict[str, dict[str, Any]]:
    """fingerprint -> recorded line of RUN_DIR/results.jsonl (a torn last line is ignored)."""
    path = Path(run_dir) / RESULTS
    found: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return found
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            found[entry["fingerprint"]] = entry
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut by a crash: that point is simply measured again
    return found


def _append_result(run_dir: Path, entry: dict[str, Any]) -> None:
    with open(Path(run_dir) / RESULTS, "a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# -- the run -----------------------------------------------------------------------------------


def run_sweep(request: SweepRequest, on_point: OnPoint | None = None, progress: Progress | None = None) -> SweepResult:
    """Check, load, and measure every grid point not yet in results.jsonl; write the tables and plot."""
    request.check()
    from .devices import parse_dtype, pick_device
    from .distributed import barrier, dist_info, rank_device
    from .eval_gen import IS_SPLIT_SIZE, PR_NEIGHBOURS
    from .loading import load_generator
    from .pairing import pair_tokenizer
    from .quality.fid import read_reference_npz
    from .sample_images import resolve_classes
    from .sample_job import sample_to_npz
    from .token_file import atomic_path

    r = request
    run_dir = Path(r.run_dir)
    read_reference_npz(r.reference)  # a bad reference fails before any sampling
    rank, _ = dist_info()
    dev = pick_device(rank_device(r.device))
    dt = parse_dtype(r.dtype)
    gen = load_generator(r.model, device=dev, dtype=dt)
    num_classes = gen.config.condition_num_classes
    class_ids = list(range(num_classes)) if r.all_classes else resolve_classes(r.classes, num_classes)
    if len(class_ids) * r.per_class <= PR_NEIGHBOURS:
        raise UsageError(f"{len(class_ids)} classes x {r.per_class} images per class is too few: gFID and "
                         f"precision/recall need at least {PR_NEIGHBOURS + 1} images per grid point")  # fmt: skip
    tok = pair_tokenizer(gen, r.tokenizer, r.model, dt)
    grid = build_grid(gen.sampling_params(), r.axes)
    split = r.is_split_size or IS_SPLIT_SIZE
    inception_id = _file_identity(r.inception) if r.inception is not None else "cache"
    sampling_base = {"generator": gen.source.describe(), "tokenizer": tok.source.describe(), "dtype": r.dtype,
                     "classes": class_ids, "per_class": r.per_class, "seed": r.seed, "seed_rule": SEED_RULE}  # fmt: skip
    measure_base = {"reference": _file_identity(r.reference), "inception": inception_id, "is_split_size": split}
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    done = read_results(run_dir)
    extractor: FeatureExtractor | None = None
    reference: ReferenceSet | None = None
    rows: list[SweepRow] = []
    for point in grid:
        sampled = {**sampling_base, "sampling": point.params.to_dict()}
        fingerprint = _digest({**sampled, **measure_base})
        folder = run_dir / "points" / f"{point.slug}-{_digest(sampled)[:8]}"
        samples = folder / "samples.npz"
        entry = done.get(fingerprint)
        if on_point is not None and rank == 0:
            on_point(point.index, len(grid), point.label, entry is not None)
        if entry is not None:
            rows.append(SweepRow(point.index, point.settings, point.params.to_dict(), str(samples),
                                 GenEvalResult.from_json(entry["result"]), reused=True))  # fmt: skip
            continue
        marker = folder / "samples.json"
        if not (samples.is_file() and marker.is_file() and json.loads(marker.read_text()) == json.loads(
                json.dumps(sampled, sort_keys=True, default=str))):  # fmt: skip
            step = None if progress is None else lambda d, n: progress("sampling", d, n)
            sample_to_npz(gen, tok, samples, class_ids, r.per_class, point.params, batch_size=r.batch_size,
                          seed=r.seed, progress=step)  # fmt: skip
            if rank == 0:
                with atomic_path(marker) as tmp:
                    tmp.write_text(json.dumps(sampled, sort_keys=True, default=str))
            barrier()
        if extractor is None:
            extractor = FeatureExtractor.load(r.inception, device=dev, batch_size=r.batch_size)
            reference = _cached_reference(r.reference, extractor, run_dir, measure_base, progress)
        assert reference is not None
        step = None if progress is None else lambda d, n: progress("features", d, n)
        result = evaluate_samples(open_samples(samples, len(class_ids) * r.per_class), reference, extractor,
                                  is_split_size=split, progress=step)  # fmt: skip
        if rank == 0:
            _append_result(run_dir, {"fingerprint": fingerprint, "settings": point.settings,
                                     "sampling": point.params.to_dict(), "samples": str(samples),
                                     "result": result.as_json()})  # fmt: skip
        barrier()
        rows.append(SweepRow(point.index, point.settings, point.params.to_dict(), str(samples), result, reused=False))
    names = list(grid[0].settings)
    out = SweepResult(rows, names, run_dir, run_dir / "results.csv", run_dir / "results.json", run_dir / "gfid.png",
                      str(r.reference), rank=rank)  # fmt: skip
    out.notes = sorted({n for row in rows for n in row.result.notes})
    if rank == 0:
        with atomic_path(out.csv) as tmp:
            tmp.write_text(results_csv(out))
        with atomic_path(out.json) as tmp:
            tmp.write_text(json.dumps(out.as_json(), indent=2) + "\n")
        with atomic_path(out.plot) as tmp:
            plot_gfid(out).save(tmp, format="PNG")
    barrier()
    return out


def _cached_reference(path: Path, extractor: FeatureExtractor, run_dir: Path, measure: dict[str, Any],
                      progress: Progress | None) -> ReferenceSet:  # fmt: skip
    """The reference's features, computed once per run folder (RUN_DIR/reference/), else read back."""
    import numpy as np
    import torch

    from .distributed import barrier, dist_info
    from .eval_gen import PR_NEIGHBOURS
    from .quality.fid import feature_stats, read_reference_npz
    from .token_file import atomic_path

    rank, _ = dist_info()
    header = read_reference_npz(path)
    cache = run_dir / "reference"
    key = _digest(measure)
    feats_file, key_file = cache / "features.npy", cache / "features.json"
    if header.count is not None and feats_file.is_file() and key_file.is_file() and key_file.read_text() == key:
        features = torch.from_numpy(np.load(feats_file)) if rank == 0 else None
        stats = header.stats if header.stats is not None else (feature_stats(features) if features is not None else None)
        if features is not None and features.shape[0] <= PR_NEIGHBOURS:
            features = None
        return ReferenceSet(header.path, True, header.stats is not None, header.count, stats, features)
    step = None if progress is None else lambda d, n: progress("reference", d, n)
    ref = load_reference(path, extractor, step)
    if rank == 0 and ref.features is not None:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(feats_file) as tmp, open(tmp, "wb") as fh:
            np.save(fh, ref.features.numpy(), allow_pickle=False)
        with atomic_path(key_file) as tmp:
            tmp.write_text(key)
    barrier()
    return ref


# -- tables and plot ---------------------------------------------------------------------------


def results_csv(result: SweepResult) -> str:
    """One row per grid point: every sampling field, the metrics, the sample archive."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    sampling_fields = list(result.rows[0].sampling) if result.rows else []
    writer.writerow(["point", *sampling_fields, "gfid", "inception_score", "inception_score_std", "precision",
                     "recall", "sample_count", "samples"])  # fmt: skip
    for row in result.rows:
        r = row.result
        writer.writerow([row.point, *(row.sampling[f] for f in sampling_fields), repr(r.fid), repr(r.inception_score),
                         repr(r.inception_score_std), "" if r.precision is None else repr(r.precision),
                         "" if r.recall is None else repr(r.recall), r.sample_count, row.samples])  # fmt: skip
    return buf.getvalue()


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    return ticks


def plot_gfid(result: SweepResult, width: int = 720, height: int = 460):  # -> PIL.Image.Image
    """gFID against the first swept setting; one line per combination of the other settings."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 70, width - 190, 40, height - 60
    x_name = result.axis_names[0]
    x_values = list(dict.fromkeys(row.settings[x_name] for row in result.rows))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x_values)
    if numeric and len(x_values) > 1:
        x_low, x_high = min(x_values), max(x_values)
        pad = (x_high - x_low) * 0.05
        x_low, x_high = x_low - pad, x_high + pad
        to_x = lambda v: left + (v - x_low) / (x_high - x_low) * (right - left)
    else:
        slots = {v: i for i, v in enumerate(x_values)}
        to_x = lambda v: left + (slots[v] + 0.5) / len(x_values) * (right - left)
    fids = [row.result.fid for row in result.rows]
    ticks = _nice_ticks(min(fids), max(fids))
    y_low, y_high = ticks[0], ticks[-1] if ticks[-1] > ticks[0] else ticks[0] + 1
    to_y = lambda v: bottom - (v - y_low) / (y_high - y_low) * (bottom - top)
    # axes, grid lines and tick labels
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black", width=1)
    for t in ticks:
        y = to_y(t)
        draw.line([(left - 4, y), (right, y)], fill=(225, 225, 225))
        draw.line([(left - 4, y), (left, y)], fill="black")
        text = f"{t:g}"
        draw.text((left - 8 - draw.textlength(text, font=font), y - 6), text, fill="black", font=font)
    for v in x_values:
        x = to_x(v)
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        text = f"{v:g}" if numeric else str(v)
        draw.text((x - draw.textlength(text, font=font) / 2, bottom + 8), text, fill="black", font=font)
    x_title = TITLES[x_name]
    draw.text(((left + right) / 2 - draw.textlength(x_title, font=font) / 2, bottom + 30), x_title, fill="black",
              font=font)  # fmt: skip
    draw.text((10, top - 28), f"gFID vs {x_title}", fill="black", font=font)
    draw.text((10, top - 14), "gFID", fill="black", font=font)
    # one line per combination of the other settings
    others = result.axis_names[1:]
    lines: dict[tuple, list[tuple[Any, float]]] = {}
    for row in result.rows:
        lines.setdefault(tuple(row.settings[n] for n in others), []).append((row.settings[x_name], row.result.fid))
    for i, (key, points) in enumerate(lines.items()):
        colour = PALETTE[i % len(PALETTE)]
        xy = [(to_x(v), to_y(f)) for v, f in sorted(points, key=lambda p: x_values.index(p[0]))]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour, outline="black")
        label = ", ".join(f"{TITLES[n]} {v}" for n, v in zip(others, key)) or "gFID"
        ly = top + 8 + 18 * i
        draw.line([(right + 15, ly + 6), (right + 35, ly + 6)], fill=colour, width=2)
        draw.ellipse([right + 21, ly + 2, right + 29, ly + 10], fill=colour, outline="black")
        draw.text((right + 42, ly), label, fill="black", font=font)
    return image


__all__ = ["GridPoint", "SweepRequest", "SweepResult", "SweepRow", "build_grid", "parse_axis", "plot_gfid",
           "read_results", "results_csv", "run_sweep"]  # fmt: skip
