"""torch.distributed helpers shared by the jobs (encode, sample, later ones): rank, device, barrier.

Everything keys off torchrun's environment (WORLD_SIZE, LOCAL_RANK); a plain `python` run is
rank 0 of 1 and never touches torch.distributed.
"""

from __future__ import annotations

import atexit
import os

import torch

from . import runtime


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, initializing the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = runtime.dist_backend() or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":  # bind this rank to its GPU before NCCL picks one for barriers
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group(backend=backend)
        atexit.register(_destroy_process_group)
    return dist.get_rank(), dist.get_world_size()


def _destroy_process_group() -> None:
    """Tear the process group down while the interpreter is still whole: left to interpreter
    shutdown, gloo's worker threads can abort the process ("terminate called without an active
    exception", exit -6) after the job itself succeeded."""
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - exiting anyway; a failed teardown must not mask the result
            pass


def rank_device(preferred: str = "auto") -> str:
    """Under torchrun each rank takes its own GPU (LOCAL_RANK); elsewhere `preferred` stands."""
    if preferred in ("auto", "cuda") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    return preferred


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()

