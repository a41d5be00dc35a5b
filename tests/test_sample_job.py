"""FID-style sampling to .npz: reproducible, resumable, and identical under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import titok_cli
from titok_cli.sample_job import sample_to_npz
from titok_cli.sampling import SamplingParams

ROOT = Path(__file__).resolve().parents[1]
PARAMS = SamplingParams(num_steps=8, guidance_scale=3.0, guidance_decay="linear", guidance_scale_pow=3.0,
                        randomize_temperature=4.5, softmax_temperature_annealing=True)  # fmt: skip


@pytest.fixture(scope="module")
def models(golden):
    return titok_cli.load_generator(golden / "gen_vit_tiny"), titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny")


def test_npz_layout_and_repeatability(models, tmp_path):
    gen, tok = models
    a = sample_to_npz(gen, tok, tmp_path / "a.npz", range(10), 3, PARAMS, batch_size=4, seed=5)
    sample_to_npz(gen, tok, tmp_path / "b.npz", range(10), 3, PARAMS, batch_size=4, seed=5)
    sample_to_npz(gen, tok, tmp_path / "c.npz", range(10), 3, PARAMS, batch_size=4, seed=6)
    with np.load(tmp_path / "a.npz") as f, np.load(tmp_path / "b.npz") as g, np.load(tmp_path / "c.npz") as h:
        assert f["arr_0"].dtype == np.uint8 and f["arr_0"].shape == (30, 64, 64, 3)
        assert f["labels"].tolist() == [c for c in range(10) for _ in range(3)]
        assert np.array_equal(f["arr_0"], g["arr_0"])
        assert not np.array_equal(f["arr_0"], h["arr_0"])
        assert len({f["arr_0"][i].tobytes() for i in range(30)}) > 20  # real variety, not one image
    assert a.count == 30 and not (tmp_path / "a.npz.partial").exists()


@pytest.mark.slow
def test_resume_skips_finished_batches(models, tmp_path):
    gen, tok = models
    ref = tmp_path / "ref.npz"
    sample_to_npz(gen, tok, ref, range(10), 2, PARAMS, batch_size=4, seed=1)
    out = tmp_path / "out.npz"
    partial = tmp_path / "out.npz.partial"
    # simulate an interrupted run: do it fully, then put back two of its batch files and the job file
    sample_to_npz(gen, tok, out, range(10), 2, PARAMS, batch_size=4, seed=1)
    out.unlink()
    import titok_cli.sample_job as sj

    calls = []
    original = sj.render_batch
    sj.render_batch = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    try:
        partial.mkdir()
        first = sj.sample_to_npz  # run once with two batches pre-rendered
        plan = sj.SamplePlan.build(range(10), 2, seed=1)
        for b in (0, 3):
            rows = slice(b * 4, (b + 1) * 4)
            np.save(partial / f"batch-{b:06d}.npy", original(gen, tok, plan.labels[rows], plan.seeds[rows], PARAMS)[1])
        res = first(gen, tok, out, range(10), 2, PARAMS, batch_size=4, seed=1)
    finally:
        sj.render_batch = original
    assert res.batches_done_before == 2 and len(calls) == 3
    assert out.read_bytes() == ref.read_bytes()


@pytest.mark.slow
def test_torchrun_matches_single_process(golden, tmp_path):
    """`torchrun -m titok_cli sample --npz` (the command users run) on 2 ranks = one process."""
    # both runs use one thread per process: conv kernels round differently with other thread counts
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TITOK_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    args = ["-m", "titok_cli", "sample", "-c", "1", "-c", "2", "-c", "3", "-n", "3", "-b", "4", "--annealing",
            "--model", str(golden / "gen_vit_tiny"), "--tokenizer", str(golden / "tok_vq_legacy_tiny"),
            "--device", "cpu", "--npz"]  # fmt: skip
    single, multi = tmp_path / "single.npz", tmp_path / "multi.npz"
    res = subprocess.run([sys.executable, *args, str(single)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29578", *args,
           str(multi)]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("9 images (3 classes x 3, seed 0)") == 1  # rank 0 reports, rank 1 stays quiet
    assert multi.read_bytes() == single.read_bytes()
    with np.load(multi) as f:
        assert f["arr_0"].shape == (9, 64, 64, 3) and f["labels"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
