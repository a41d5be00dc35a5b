"""Codebook usage of a VQ tokenizer over a set of token sequences.

Everything is derived from one count table of shape (K, codebook_size): how often each code
appears at each of the K token positions. The table is an integer sum, so it can be filled
batch by batch, saved, and added across processes (`torch.distributed.all_reduce` on `counts`,
or `merge`) with the same result as one pass over the whole set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CodebookStats:
    """Usage figures of one token set (all ratios are over the codebook size)."""

    codebook_size: int
    tokens: int  # token occurrences counted (sequences x positions)
    distinct: int  # codes seen at least once, any position
    usage: float  # distinct / codebook_size
    entropy_bits: float  # Shannon entropy of the pooled code histogram, in bits
    perplexity: float  # 2 ** entropy_bits: the number of equally used codes with that entropy
    position_usage: tuple[float, ...]  # per position: distinct codes there / codebook_size

    @property
    def mean_position_usage(self) -> float:
        return sum(self.position_usage) / len(self.position_usage) if self.position_usage else 0.0


def entropy_bits(counts: torch.Tensor) -> float:
    """Entropy in bits of the distribution a count vector describes (0 for an empty one).

    Zero counts contribute nothing (p log p -> 0). Computed in float64.
    """
    c = counts.to(torch.float64).flatten()
    total = c.sum()
    if total <= 0:
        return 0.0
    p = c[c > 0] / total
    return float(-(p * torch.log2(p)).sum())


class CodebookCounter:
    """Accumulates the (K, codebook_size) count table of VQ token ids, batch by batch."""

    def __init__(self, codebook_size: int, num_tokens: int, device: str | torch.device = "cpu") -> None:
        if codebook_size < 1 or num_tokens < 1:
            raise ValueError(f"codebook_size and num_tokens must be positive, got {codebook_size} and {num_tokens}")
        self.codebook_size = int(codebook_size)
        self.num_tokens = int(num_tokens)
        self.counts = torch.zeros(num_tokens, codebook_size, dtype=torch.int64, device=device)  # (K, C)

    def update(self, ids: torch.Tensor) -> None:
        """Count a batch of token ids (N, K), integers in [0, codebook_size)."""
        if ids.dim() != 2 or ids.shape[1] != self.num_tokens:
            raise ValueError(f"expected token ids of shape (N, {self.num_tokens}), got {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise ValueError(f"token ids must be integers, got {ids.dtype}")
        if ids.numel() == 0:
            return
        ids = ids.to(self.counts.device, torch.int64)
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.codebook_size:
            raise ValueError(f"token ids must lie in [0, {self.codebook_size}), found {lo if lo < 0 else hi}")
        pos = torch.arange(self.num_tokens, device=ids.device) * self.codebook_size  # (K,)
        flat = (ids + pos).flatten()  # (N * K,): position-major index into the table
        self.counts += torch.bincount(flat, minlength=self.counts.numel()).view_as(self.counts)

    @classmethod
    def from_counts(cls, counts: torch.Tensor) -> CodebookCounter:
        """A counter that resumes from a saved (K, codebook_size) table."""
        if counts.dim() != 2 or counts.dtype.is_floating_point:
            raise ValueError(f"expected an integer (K, codebook_size) count table, got {counts.dtype} {tuple(counts.shape)}")
        counter = cls(counts.shape[1], counts.shape[0], device=counts.device)
        counter.counts += counts.to(torch.int64)
        return counter

    def all_reduce(self) -> CodebookCounter:
        """Sum the tables of every rank in place (a no-op without a process group); returns self.

        With NCCL the table must live on this rank's GPU (`device=` at construction).
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.counts, op=dist.ReduceOp.SUM)
        return self

    def merge(self, other: CodebookCounter) -> CodebookCounter:
        """Add another counter's table into this one (same shape); returns self."""
        if other.counts.shape != self.counts.shape:
            raise ValueError(f"cannot merge count tables {tuple(other.counts.shape)} into {tuple(self.counts.shape)}")
        self.counts += other.counts.to(self.counts.device)
        return self

    def stats(self) -> CodebookStats:
        """The usage figures of everything counted so far."""
        return stats_from_counts(self.counts)


def stats_from_counts(counts: torch.Tensor) -> CodebookStats:
    """Usage figures from a (K, codebook_size) count table (or a pooled (codebook_size,) one,
    which gives no per-position usage)."""
    table = counts.detach().to("cpu", torch.int64)
    per_position = table if table.dim() == 2 else table.new_zeros(0, table.shape[-1])
    pooled = table.sum(dim=0) if table.dim() == 2 else table  # (C,)
    size = int(pooled.numel())
    distinct = int((pooled > 0).sum())
    h = entropy_bits(pooled)
    return CodebookStats(
        codebook_size=size,
        tokens=int(pooled.sum()),
        distinct=distinct,
        usage=distinct / size,
        entropy_bits=h,
        perplexity=math.pow(2.0, h),
        position_usage=tuple(float(n) / size for n in (per_position > 0).sum(dim=1).tolist()),
    )


def codebook_stats(ids: torch.Tensor, codebook_size: int) -> CodebookStats:
    """One-shot usage figures of token ids (N, K) for a codebook of `codebook_size` codes."""
    counter = CodebookCounter(codebook_size, ids.shape[-1], device=ids.device)
    counter.update(ids.reshape(-1, ids.shape[-1]))
    return counter.stats()
