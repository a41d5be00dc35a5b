"""Exact resume after kill -9, and torchrun (2 gloo ranks) == one process with the same global batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from titok_cli.training.loop import MetricsLog

from .conftest import ROOT
from .training_helpers import GENERATOR, make_token_set, tiny_config, titok

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name == "nt", reason="POSIX signals needed")]

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same float rounding in every process

# The interrupted run: the library call the command makes, killed with SIGKILL from inside at step 13
# (after the checkpoint of step 10, before the one of step 15).
KILLED = """
import os, signal, sys
from titok_cli.training.generator_job import train_generator
from titok_cli.training.generator_settings import TrainSettings
def step(m):
    if m["step"] == 13:
        os.kill(os.getpid(), signal.SIGKILL)
s = TrainSettings(steps=20, batch_size=8, lr=3e-3, checkpoint_every=5, device="cpu", deterministic=True)
train_generator([sys.argv[1]], sys.argv[2], sys.argv[3], settings=s, on_step=step)
"""


@pytest.fixture(scope="module")
def token_set(tmp_path_factory, golden, images_dir) -> Path:
    return make_token_set(tmp_path_factory.mktemp("tokens"))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def test_kill_9_then_rerun_ends_with_the_same_weights(token_set, tmp_path):
    config = str(GENERATOR / "config.json")  # dropout 0.1: the restored RNG states matter
    args = ["--generator", config, "--steps", "20", "-b", "8", "--lr", "3e-3", "--checkpoint-every", "5",
            "--device", "cpu", "--deterministic", "-q"]  # fmt: skip
    ref = tmp_path / "ref"
    res = titok("train", str(token_set), "-o", str(ref), *args, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), **ONE_THREAD}
    killed = subprocess.run([sys.executable, "-c", KILLED, str(token_set), str(run), config], env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "final").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-00000005.safetensors",
                                                                        "checkpoint-00000010.safetensors"]  # fmt: skip
    assert [r["step"] for r in MetricsLog.read(run / "metrics.jsonl")][-1] == 13

    res = titok("train", str(token_set), "-o", str(run), *args[:-1], env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    assert "resuming at step 10 of 20" in res.stderr + res.stdout
    a, b = _weights(run), _weights(ref)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    resumed, reference = MetricsLog.read(run / "metrics.jsonl"), MetricsLog.read(ref / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 21))
    assert [(r["loss"], r["masked_accuracy"], r["lr"]) for r in resumed] == [
        (r["loss"], r["masked_accuracy"], r["lr"]) for r in reference
    ]


def test_torchrun_two_ranks_with_accumulation_match_one_process(token_set, tmp_path):
    pytest.importorskip("torch.distributed")
    config = str(tiny_config(tmp_path, dropout=0.0, attn_drop=0.0))  # dropout noise is per rank by design
    args = ["train", str(token_set), "--generator", config, "--steps", "5", "-b", "8", "--lr", "3e-3",
            "--device", "cpu", "-q", "-o"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TITOK_DIST_BACKEND": "gloo", **ONE_THREAD}
    env.pop("TITOK_DEBUG", None)
    one = subprocess.run([sys.executable, "-m", "titok_cli", *args, str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr
    # 2 ranks x 2 accumulated micro-batches of 2 rows: the same global batch of 8
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29583",
           "-m", "titok_cli", *args, str(tmp_path / "two"), "--grad-accum", "2"]  # fmt: skip
    two = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    losses_two = [r["loss"] for r in MetricsLog.read(tmp_path / "two" / "metrics.jsonl")]
    losses_one = [r["loss"] for r in MetricsLog.read(tmp_path / "one" / "metrics.jsonl")]
    assert losses_two == pytest.approx(losses_one, rel=1e-5)


def test_compiled_training_matches_eager(token_set, tmp_path):
    from titok_cli.training import TrainSettings, train_generator

    config = tiny_config(tmp_path, dropout=0.0, attn_drop=0.0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for compile_ in (False, True):
            settings = TrainSettings(steps=3, batch_size=8, lr=3e-3, device="cpu", compile=compile_)
            train_generator([token_set], tmp_path / str(compile_), config, settings=settings)
    finally:
        torch.set_num_threads(before)
    a, b = _weights(tmp_path / "True"), _weights(tmp_path / "False")
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
