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
import json
import os
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
from .sweep_grid import TITLES, build_grid, parse_axes
from .seeds import SEED_RULE

RESULTS = "results.jsonl"
METRICS = ("fid", "inception_score", "inception_score_std", "precision", "recall")
OnPoint = Callable[[int, int, str, bool], None]  # (index, count, label, reused)
Progress = Callable[[str, int, int], None]  # (phase "sampling" / "features", done, total), rank 0


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
        from .sample_request import check_draws

        check_draws(self.classes, self.all_classes, self.per_class, self.batch_size)
        if self.classes and len(self.classes) * self.per_class < 4:  # k=3 neighbours need 4 points
            n = len(self.classes)
            raise UsageError(f"{n} class{'es' if n != 1 else ''} x {self.per_class} images per class is too few: "
                             "gFID and precision/recall need at least 4 images per grid point")  # fmt: skip
        parse_axes(self.axes)
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
    from .quality.reference_npz import read_reference_npz
    from .sample_images import resolve_classes
    from .sample_job import sample_to_npz
    from .atomic_files import atomic_path

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
            from .sweep_plot import plot_gfid

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
    from .quality.fid import feature_stats
    from .quality.reference_npz import read_reference_npz
    from .atomic_files import atomic_path

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


__all__ = ["SweepRequest", "SweepResult", "SweepRow",
           "read_results", "results_csv", "run_sweep"]  # fmt: skip
