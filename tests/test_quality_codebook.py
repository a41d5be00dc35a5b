"""Codebook usage on real tokens (golden tok_vq_tiny on the test photos) against plain numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import titok_cli
from titok_cli.preprocess import load_image, to_tensor
from titok_cli.quality.codebook import (
    CodebookCounter,
    codebook_stats,
    entropy_bits,
    stats_from_counts,
)


@pytest.fixture(scope="module")
def tokens(golden, images_dir) -> tuple[torch.Tensor, int]:
    """Token ids (N, K) of every photo and its flipped / rotated copies, and the codebook size."""
    tok = titok_cli.load_tokenizer(golden / "tok_vq_tiny")
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    x = to_tensor([load_image(p, tok.image_size) for p in paths])  # (P, 3, S, S)
    x = torch.cat([x, x.flip(-1), x.rot90(1, (2, 3)), x.rot90(2, (2, 3))])  # (4P, 3, S, S)
    ids = tok.encode(x)  # (4P, K) int64
    return ids, tok.codebook_size


def numpy_figures(ids: np.ndarray, size: int) -> dict:
    """The same figures, independently: np.unique and np.bincount."""
    hist = np.bincount(ids.ravel(), minlength=size)
    p = hist[hist > 0] / hist.sum()
    h = float(-(p * np.log2(p)).sum())
    return {
        "distinct": len(np.unique(ids)),
        "entropy": h,
        "position": [len(np.unique(ids[:, k])) / size for k in range(ids.shape[1])],
        "table": np.stack([np.bincount(ids[:, k], minlength=size) for k in range(ids.shape[1])]),
    }


def test_usage_entropy_and_positions_match_numpy(tokens):
    ids, size = tokens
    want = numpy_figures(ids.numpy(), size)
    s = codebook_stats(ids, size)
    assert s.codebook_size == size and s.tokens == ids.numel()
    assert s.distinct == want["distinct"] and s.usage == want["distinct"] / size
    assert 1 < s.distinct < min(size, ids.numel())  # real tokens: neither one code nor all distinct
    assert s.entropy_bits == pytest.approx(want["entropy"], abs=1e-12)
    assert s.perplexity == pytest.approx(2 ** want["entropy"], rel=1e-12)
    assert s.position_usage == pytest.approx(want["position"], abs=0)
    assert s.mean_position_usage == pytest.approx(np.mean(want["position"]))


def test_streaming_and_merging_equal_one_pass(tokens):
    ids, size = tokens
    whole = CodebookCounter(size, ids.shape[1])
    whole.update(ids)
    assert np.array_equal(whole.counts.numpy(), numpy_figures(ids.numpy(), size)["table"])
    # Uneven batches, split over two "ranks", then summed (what all_reduce on `counts` does).
    ranks = [CodebookCounter(size, ids.shape[1]) for _ in range(2)]
    for i, start in enumerate(range(0, ids.shape[0], 3)):
        ranks[i % 2].update(ids[start : start + 3])
    ranks[1].update(ids[:0])  # an empty batch counts nothing
    merged = ranks[0].merge(ranks[1])
    assert torch.equal(merged.counts, whole.counts)
    assert merged.stats() == whole.stats()
    summed = stats_from_counts(ranks[0].counts)
    assert summed == whole.stats()


def _rank_counts(rank: int, world: int, init_file: str, ids: torch.Tensor, size: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        counter = CodebookCounter(size, ids.shape[1])
        counter.update(ids[rank::world])  # each rank sees every world-th sequence
        counter.all_reduce()
        torch.save(counter.counts, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_gloo_ranks_equals_one_pass(tokens, tmp_path):
    import torch.multiprocessing as mp

    ids, size = tokens
    out = str(tmp_path / "counts")
    mp.start_processes(_rank_counts, args=(2, str(tmp_path / "init"), ids, size, out), nprocs=2, start_method="spawn")
    whole = CodebookCounter(size, ids.shape[1])
    whole.update(ids)
    for rank in range(2):
        assert torch.equal(torch.load(f"{out}.{rank}", weights_only=True), whole.counts)
    # Without a process group it is a no-op; a saved table resumes counting.
    alone = CodebookCounter.from_counts(whole.counts.clone()).all_reduce()
    alone.update(ids[:1])
    assert alone.counts.sum().item() == whole.counts.sum().item() + ids.shape[1]


def test_pooled_histogram_gives_no_positions(tokens):
    ids, size = tokens
    pooled = torch.bincount(ids.flatten(), minlength=size)  # (C,)
    s, full = stats_from_counts(pooled), codebook_stats(ids, size)
    assert s.position_usage == () and s.mean_position_usage == 0.0
    assert (s.distinct, s.entropy_bits, s.tokens) == (full.distinct, full.entropy_bits, full.tokens)


def test_entropy_extremes():
    assert entropy_bits(torch.full((512,), 7)) == pytest.approx(math.log2(512))
    assert entropy_bits(torch.tensor([0, 5, 0])) == 0.0
    assert entropy_bits(torch.zeros(4, dtype=torch.int64)) == 0.0


def test_bad_ids_are_refused():
    c = CodebookCounter(8, 4)
    with pytest.raises(ValueError, match=r"\[0, 8\), found 8"):
        c.update(torch.tensor([[0, 1, 2, 8]]))
    with pytest.raises(ValueError, match="found -1"):
        c.update(torch.tensor([[0, -1, 2, 3]]))
    with pytest.raises(ValueError, match="integers"):
        c.update(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        c.update(torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="merge"):
        c.merge(CodebookCounter(8, 5))
    assert c.counts.sum().item() == 0  # nothing half-counted
