"""One rank's share of a job's inputs, as batches of crops, with the scratch log's commit points.

Shared by the jobs that stream images through a model (`encode`, `eval recon`): the inputs are
streamed by `inputs.CropStream` (rank r of W takes input numbers = r mod W, DataLoader workers
split that share), bad files are logged to the scratch's failures file (or raised with
`strict`), and the caller's `flush` handles each full batch. A commit follows a flush at most
every `runtime.commit_seconds()`, so a rerun restarts at a batch boundary and forms the same
batches as an uninterrupted run: results do not depend on where a run was stopped.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from . import runtime
from .errors import ImageError
from .inputs import CropStream, rank_items_before
from .scratch import Scratch

FAILURES_FILE = "failures.jsonl"

Progress = Callable[[int, "int | None"], None]
Item = tuple[int, str, int, torch.Tensor]  # (input number, name, label, uint8 crop (3, S, S))


@dataclass(frozen=True)
class RankJob:
    """What one rank streams and how: its inputs, its slot, the batching and the callbacks."""

    inputs: Sequence[str]
    rank: int
    world: int
    image_size: int
    batch_size: int
    workers: int = 0
    strict: bool = False
    exif_transpose: bool = False
    progress: Progress | None = None
    total: int | None = None  # all inputs (every rank), when known
    on_failure: Callable[[str, str], None] | None = None


def resume_point(scratch: Scratch, rank: int, world: int, total: int | None,
                 on_resume: Callable[[int, int | None], None] | None) -> int:
    """How many of this rank's inputs an interrupted earlier run already handled (told to `on_resume`)."""
    rank_total = None if total is None else len(range(rank, total, world))
    if scratch.state["done"]:
        resumed_from = rank_total if rank_total is not None else scratch.state["rows"]
    else:
        resumed_from = rank_items_before(rank, world, scratch.state["next_index"])
    if resumed_from and on_resume is not None:
        on_resume(resumed_from, rank_total)
    return resumed_from


_CUT = (ConnectionError, EOFError)  # what a hand-over meets when the other side has exited


def quiet_worker(_: int) -> None:
    """DataLoader worker start: a connection cut by the main process's exit (Ctrl-C while a worker
    hands it a batch's shared memory) ends that hand-over quietly instead of printing a traceback
    under the command's one-line message. multiprocessing's fd-passing thread reports its errors
    through `sys.excepthook` (resource_sharer._serve), other threads through `threading.excepthook`;
    a worker's own failures reach the main process by the DataLoader, not through either hook."""
    default_sys, default_thread = sys.excepthook, threading.excepthook

    def sys_hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if not issubclass(kind, _CUT):
            default_sys(kind, value, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if not issubclass(args.exc_type, _CUT):
            default_thread(args)

    sys.excepthook, threading.excepthook = sys_hook, thread_hook


def run_batches(scratch: Scratch, job: RankJob, device: torch.device, flush: Callable[[list[Item]], None]) -> None:
    """Feed this rank's remaining inputs to `flush` in batches of `job.batch_size`, then commit as done.

    `flush(items)` must append its rows to the scratch files; the row count is kept here
    (`scratch.state["rows"]`). Starts at the scratch's committed `next_index`.
    """
    start = scratch.state["next_index"]
    workers, batch_size = job.workers, job.batch_size
    loader = DataLoader(
        CropStream(job.inputs, job.image_size, job.exif_transpose, job.rank, job.world, start),
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 * batch_size // max(workers, 1) + 2 if workers else None,
        worker_init_fn=quiet_worker if workers else None,
    )
    fail_fh = scratch.handles[FAILURES_FILE]
    rows = scratch.state["rows"]
    pending: list[Item] = []
    next_index = start
    last_commit = time.monotonic()
    done = rank_items_before(job.rank, job.world, start)  # inputs of this rank already handled
    rank_total = None if job.total is None else len(range(job.rank, job.total, job.world))

    def flush_pending() -> None:
        nonlocal rows
        flush(pending)
        rows += len(pending)
        pending.clear()

    for i, name, label, crop, reason in loader:
        done += 1
        if crop is None:
            if job.strict:
                raise ImageError(name, reason)
            fail_fh.write((json.dumps({"i": i, "failed": name, "reason": reason}) + "\n").encode())
            if job.on_failure is not None:
                job.on_failure(name, reason)
        else:
            pending.append((i, name, label, crop))
        if len(pending) >= batch_size:
            flush_pending()
            next_index = i + 1
            if time.monotonic() - last_commit >= runtime.commit_seconds():
                scratch.commit(next_index, rows)
                last_commit = time.monotonic()
        elif not pending:
            next_index = i + 1
        if job.progress is not None:
            job.progress(done, rank_total)
    if pending:
        flush_pending()
    scratch.commit(1 << 62, rows, done=True)
