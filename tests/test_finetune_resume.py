"""`titok finetune`: exact resume after kill -9 (discriminator and loss buffers included), and
torchrun (2 gloo ranks) == one process with the same global batch."""

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

from .conftest import GOLDEN, ROOT
from .finetune_helpers import stripe_images
from .training_helpers import titok

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name == "nt", reason="POSIX signals needed")]

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same float rounding in every process
SINGLE, LEGACY = GOLDEN / "tok_vq_tiny", GOLDEN / "tok_vq_legacy_tiny"
# the GAN starts at step 5, so the killed run's checkpoints hold a trained discriminator and its optimizer
ARGS = ["--steps", "20", "-b", "8", "--lr", "1e-3", "--checkpoint-every", "5", "--device", "cpu", "--deterministic",
        "--perceptual-weight", "0", "--gan-weight", "0.5", "--gan-start", "5"]  # fmt: skip

# The interrupted run: the library call the command makes, killed with SIGKILL from inside at step 13
# (after the checkpoint of step 10, before the one of step 15).
KILLED = """
import os, signal, sys
from titok_cli.training.tokenizer_job import finetune_tokenizer
from titok_cli.training.tokenizer_losses import LossSettings
from titok_cli.training.tokenizer_settings import FinetuneSettings
def step(m):
    if m["step"] == 13:
        os.kill(os.getpid(), signal.SIGKILL)
s = FinetuneSettings(steps=20, batch_size=8, lr=1e-3, checkpoint_every=5, device="cpu", deterministic=True)
losses = LossSettings(perceptual_weight=0.0, discriminator_weight=0.5, discriminator_start=5)
finetune_tokenizer([sys.argv[1]], sys.argv[2], sys.argv[3], settings=s, losses=losses, on_step=step)
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory, golden) -> Path:
    return stripe_images(tmp_path_factory.mktemp("stripes") / "train", 40, seed=1)


def test_kill_9_then_rerun_ends_with_the_same_weights_and_discriminator(images, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    res = titok("finetune", str(images), "-o", str(ref), "--model", str(SINGLE), *ARGS, "-q", env=ONE_THREAD)
    assert res.returncode == 0, res.stderr

    env = {**os.environ, "PYTHONPATH": str(ROOT), **ONE_THREAD}
    killed = subprocess.run([sys.executable, "-c", KILLED, str(images), str(run), str(SINGLE)], env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "final").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-00000005.safetensors",
                                                                        "checkpoint-00000010.safetensors"]  # fmt: skip
    assert [r["step"] for r in MetricsLog.read(run / "metrics.jsonl")][-1] == 13

    res = titok("finetune", str(images), "-o", str(run), "--model", str(SINGLE), *ARGS, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    assert "resuming at step 10 of 20" in res.stderr + res.stdout
    a, b = load_file(str(run / "final" / "model.safetensors")), load_file(str(ref / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last_a = load_file(str(run / "checkpoints" / "checkpoint-00000020.safetensors"))
    last_b = load_file(str(ref / "checkpoints" / "checkpoint-00000020.safetensors"))
    extra = [k for k in last_b if k.startswith(("extra.", "extra_optim."))]
    assert any(k.startswith("extra_optim.objective.") for k in extra)  # the discriminator's optimizer is saved
    for key in extra:
        assert torch.equal(last_a[key], last_b[key]), key
    resumed, reference = MetricsLog.read(run / "metrics.jsonl"), MetricsLog.read(ref / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 21))
    drop = ("images_per_s", "steps_per_s", "memory_mb")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == [
        {k: v for k, v in r.items() if k not in drop} for r in reference
    ]
    assert "discriminator_loss" in reference[-1]


GAN_FROM_STEP_1 = ["--gan-weight", "0.5", "--gan-start", "1"]  # discriminator steps 1..3, LeCAM averages included


@pytest.mark.parametrize("model, train", [(LEGACY, GAN_FROM_STEP_1),
                                          (GOLDEN / "tok_vae_tiny", ["--train", "encoder,decoder", "--gan-weight", "0"])])
def test_torchrun_two_ranks_with_accumulation_match_one_process(images, tmp_path, model, train):
    pytest.importorskip("torch.distributed")
    args = ["finetune", str(images), "--model", str(model), *train, "--steps", "4", "-b", "8", "--lr", "1e-3",
            "--device", "cpu", "--perceptual-weight", "0", "-q", "-o"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TITOK_DIST_BACKEND": "gloo", **ONE_THREAD}
    env.pop("TITOK_DEBUG", None)
    one = subprocess.run([sys.executable, "-m", "titok_cli", *args, str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr
    # 2 ranks x 2 accumulated micro-batches of 2 images: the same global batch of 8
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29584",
           "-m", "titok_cli", *args, str(tmp_path / "two"), "--grad-accum", "2"]  # fmt: skip
    two = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    start = load_file(str(model / "model.safetensors"))
    assert any(not torch.equal(b[k], start[k]) for k in b)  # it did train
    # Rounding differs between the two splits (sums in another order). Adam turns it into steps of up
    # to the learning rate where the exact gradient is zero or nearly so (the attention key bias, which
    # softmax ignores; a conv bias that a per-channel GroupNorm removes), so a few values differ by a
    # fraction of lr; the losses above them agree to 1e-5.
    # With the GAN the discriminator's own Adam steps amplify rounding as well, and it feeds back into
    # the tokenizer's loss: one process alone moves as much between -b 8 and -b 8 --grad-accum 4
    # (measured: losses 2e-4 apart relative, weights up to 0.8 lr, the discriminator up to 1.8 of its lr).
    gan = train is GAN_FROM_STEP_1
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in b])
    assert float(diffs.max()) < (1.0 if gan else 0.5) * 1e-3
    assert float((diffs > 1e-5).float().mean()) < 0.01
    losses_two = [r["loss"] for r in MetricsLog.read(tmp_path / "two" / "metrics.jsonl")]
    losses_one = [r["loss"] for r in MetricsLog.read(tmp_path / "one" / "metrics.jsonl")]
    assert losses_two == pytest.approx(losses_one, rel=1e-3 if gan else 1e-5)
    if gan:  # the discriminator and LeCAM's averages agree too: one update per step, from the global batch
        from titok_cli.training.checkpoint import latest_checkpoint

        d_one, d_two = (latest_checkpoint(tmp_path / r / "checkpoints").group("extra.objective") for r in ("one", "two"))
        assert sorted(d_one) == sorted(d_two) and "ema_real_logits_mean" in d_one
        for key in ("ema_real_logits_mean", "ema_fake_logits_mean"):  # a per-rank update would be ~2x off
            assert float(d_one[key]) != 0.0
            torch.testing.assert_close(d_two[key], d_one[key], rtol=2e-3, atol=0.0)
        for key in d_one:
            torch.testing.assert_close(d_two[key], d_one[key], rtol=0.0, atol=2.5e-4)  # 2.5 x the discriminator's lr
        assert [r.get("discriminator_loss") for r in MetricsLog.read(tmp_path / "two" / "metrics.jsonl")] == \
            pytest.approx([r.get("discriminator_loss") for r in MetricsLog.read(tmp_path / "one" / "metrics.jsonl")],
                          rel=1e-3)  # fmt: skip
