"""`titok train` on a real token set (golden tiny tokenizer, photos and their variants)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import titok_cli
from titok_cli.errors import TokenFileError, UsageError
from titok_cli.token_writers import save_tokens
from titok_cli.training import TrainSettings, train_generator
from titok_cli.training.checkpoint import read_checkpoint
from titok_cli.training.loop import MetricsLog

from .training_helpers import GENERATOR, TOKENIZER, make_token_set, tiny_config, titok

QUICK = dict(batch_size=16, lr=3e-3, warmup_steps=2, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train faster on one thread, and the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def token_set(tmp_path_factory, golden, images_dir) -> Path:
    return make_token_set(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def trained(token_set, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    result = train_generator([token_set], run, GENERATOR, settings=TrainSettings(steps=60, checkpoint_every=25, **QUICK))
    return run, result


def test_loss_goes_down_and_masked_accuracy_beats_chance(trained, token_set):
    run, result = trained
    log = MetricsLog.read(run / "metrics.jsonl")
    assert [r["step"] for r in log] == list(range(1, 61))
    first = np.mean([r["loss"] for r in log[:5]])
    last = np.mean([r["loss"] for r in log[-5:]])
    assert last < 0.7 * first, (first, last)
    chance = 1 / 256
    assert np.mean([r["masked_accuracy"] for r in log[-10:]]) > 40 * chance
    assert all(r["tokens_per_s"] > 0 and r["memory_mb"] > 0 and r["lr"] >= 0 for r in log)

    # The published EMA weights, loaded as any generator, predict masked tokens of the training set.
    gen = titok_cli.load_generator(run / "final")
    tf = titok_cli.load_tokens(token_set)
    ids, labels = torch.from_numpy(tf.tokens), torch.from_numpy(tf.labels)
    masks = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    logits = gen.logits(torch.where(masks, gen.config.mask_token_id, ids), labels)
    accuracy = (logits.argmax(-1) == ids)[masks].float().mean().item()
    assert accuracy > 40 * chance, accuracy
    untrained = titok_cli.TiTokGenerator.from_config(gen.config)
    base = (untrained.logits(torch.where(masks, gen.config.mask_token_id, ids), labels).argmax(-1) == ids)[masks]
    assert accuracy > base.float().mean().item() + 0.1


def test_final_folder_records_its_tokenizer_and_the_official_layout(trained):
    run, result = trained
    doc = json.loads((run / "final" / "config.json").read_text())
    assert doc["model"]["generator"]["hidden_size"] == 64 and doc["model"]["vq_model"]["codebook_size"] == 256
    assert doc["experiment"]["tokenizer"]["name"] == str(TOKENIZER.resolve()) and doc["experiment"]["tokenizer"]["num_tokens"] == 8
    assert doc["losses"] == {"label_smoothing": 0.1, "loss_weight_unmasked_token": 0.1}
    assert doc["training"]["max_train_steps"] == 60 and result.final == run / "final"
    assert doc["training"]["hflip"] is True  # the token set holds mirrored copies, and they were read
    from titok_cli.describe import describe  # `titok info` shows what the run recorded

    info = describe(run / "final")["training"]
    assert info["steps"] == 60 and info["tokenizer"]["name"] == str(TOKENIZER.resolve())
    assert info["trained_with"].startswith("titok-cli ")
    assert "training" not in describe(GENERATOR)  # an official-style folder records no training
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-00000050.safetensors",
                                                                        "checkpoint-00000060.safetensors"]  # fmt: skip


def test_accumulation_does_not_change_the_update(token_set, tmp_path):
    config = tiny_config(tmp_path, dropout=0.0, attn_drop=0.0)
    weights = []
    for accum in (1, 2, 4):
        run = tmp_path / f"accum{accum}"
        train_generator([token_set], run, config, settings=TrainSettings(steps=4, grad_accum=accum, **QUICK))
        weights.append(load_file(str(run / "final" / "model.safetensors")))
    for other in weights[1:]:
        for key, value in weights[0].items():
            torch.testing.assert_close(other[key], value, rtol=1e-5, atol=1e-6)


def test_mirrored_copies_are_read_and_no_hflip_ignores_them(token_set, tmp_path):
    plain = make_token_set(tmp_path, "plain.npz", hflip=False)
    settings = dict(steps=3, **QUICK)
    runs = {"mirrors": ([token_set], {}), "no-hflip": ([token_set], {"hflip": False}), "plain": ([plain], {})}
    weights = {}
    for name, (files, extra) in runs.items():
        train_generator(files, tmp_path / name, GENERATOR, settings=TrainSettings(**settings, **extra))
        weights[name] = load_file(str(tmp_path / name / "final" / "model.safetensors"))
    key = "model.lm_head.weight"
    assert torch.equal(weights["no-hflip"][key], weights["plain"][key])  # --no-hflip: as if they were not there
    assert not torch.equal(weights["mirrors"][key], weights["plain"][key])  # the mirrors changed the batches
    doc = json.loads((tmp_path / "no-hflip" / "final" / "config.json").read_text())
    assert doc["training"]["hflip"] is False


def test_init_weights_start_the_run(trained, token_set, tmp_path):
    run, _ = trained
    ema_weights = load_file(str(run / "final" / "model.safetensors"))
    raw_weights = read_checkpoint(run / "checkpoints" / "checkpoint-00000060.safetensors").group("model")
    assert not torch.equal(raw_weights["model.lm_head.weight"], ema_weights["model.lm_head.weight"])
    # one step at lr 0 (warm-up starts at 0) leaves the weights as they started, and EMA copies them
    one_step = TrainSettings(steps=1, **{**QUICK, "warmup_steps": 1})
    for how, kwargs in (("folder", {"generator": run / "final"}),
                        ("init", {"generator": GENERATOR, "init": run / "final"}),
                        ("checkpoint", {"generator": GENERATOR,
                                        "init": run / "checkpoints" / "checkpoint-00000060.safetensors"})):  # fmt: skip
        train_generator([token_set], tmp_path / how, settings=one_step, **kwargs)
        got = load_file(str(tmp_path / how / "final" / "model.safetensors"))
        start = raw_weights if how == "checkpoint" else ema_weights  # a checkpoint starts from its raw weights
        for key in start:
            assert torch.equal(got[key], start[key]), (how, key)


def test_the_uvit_generator_trains(token_set, tmp_path, golden):
    result = train_generator([token_set], tmp_path / "uvit", golden / "gen_uvit_tiny" / "config.json",
                             settings=TrainSettings(steps=3, **QUICK))  # fmt: skip
    assert np.isfinite(result.last["loss"])
    assert titok_cli.load_generator(result.final).config.model_type == "UViT"


def test_sample_grids_use_the_recorded_tokenizer_and_leave_training_unchanged(token_set, tmp_path):
    from PIL import Image

    plain = tmp_path / "plain"
    train_generator([token_set], plain, GENERATOR, settings=TrainSettings(steps=3, **QUICK))
    run = tmp_path / "grids"
    train_generator([token_set], run, GENERATOR, settings=TrainSettings(steps=3, sample_every=2, **QUICK))
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-00000002.png", "step-00000003.png"]
    with Image.open(run / "samples" / "step-00000003.png") as im:
        assert im.size == (3 * 64 + 4 * 2, 3 * 64 + 4 * 2)  # 7 classes in a 3x3 grid of 64 px images
        assert len(np.unique(np.asarray(im.convert("L")))) > 50  # decoded pictures, not a blank sheet
    assert (run / "final" / "model.safetensors").read_bytes() == (plain / "final" / "model.safetensors").read_bytes()


def test_bf16_autocast_trains_on_the_cpu(token_set, tmp_path):
    result = train_generator([token_set], tmp_path / "bf16", GENERATOR,
                             settings=TrainSettings(steps=3, precision="bf16", **QUICK))  # fmt: skip
    assert np.isfinite(result.last["loss"])
    assert load_file(str(tmp_path / "bf16" / "final" / "model.safetensors"))["model.lm_head.weight"].dtype == torch.float32


# -- bad inputs: one clear error before training starts ----------------------------------------------


def _copy_with(token_set: Path, out: Path, *, model: dict | None = None, labels: bool = True) -> Path:
    tf = titok_cli.load_tokens(token_set)
    header = dict(tf.header)
    header.pop("array", None)
    header.pop("count", None)
    if model is not None:
        header["model"] = {**header["model"], **model}
    save_tokens(out, tf.tokens.astype(np.uint8), header, tf.names, tf.labels if labels else None)
    return out


@pytest.mark.parametrize(
    "case, message",
    [
        ("other_tokenizer", "were written by different tokenizers"),
        ("no_labels", "no class labels"),
        ("codebook", "codebook 256, but the generator predicts 512"),
        ("token_count", "rows of 8 tokens, but the generator models 16"),
        ("classes", "class label 6 is outside the generator's classes 0..4"),
        ("latents", "continuous VAE latents"),
        ("registry", "rows of 8 tokens, but the generator models 32"),
    ],
)
def test_bad_inputs_are_refused_before_training(token_set, tmp_path, case, message):
    files, config = [token_set], GENERATOR
    if case == "other_tokenizer":
        files.append(_copy_with(token_set, tmp_path / "other.npz", model={"name": "someone/else"}))
    elif case == "no_labels":
        files = [_copy_with(token_set, tmp_path / "nolabels.npy", labels=False)]
    elif case == "codebook":
        doc = json.loads((GENERATOR / "config.json").read_text())
        doc["model"]["vq_model"]["codebook_size"] = 512
        config = tmp_path / "c.json"
        config.write_text(json.dumps(doc))
    elif case == "token_count":
        doc = json.loads((GENERATOR / "config.json").read_text())
        doc["model"]["vq_model"]["num_latent_tokens"] = 16
        config = tmp_path / "c.json"
        config.write_text(json.dumps(doc))
    elif case == "classes":
        config = tiny_config(tmp_path, condition_num_classes=5)
    elif case == "registry":
        config = "titok-l32"  # a tokenizer's name picks its generator: the official L-32 architecture
    elif case == "latents":
        tf = titok_cli.load_tokens(token_set)
        files = [tmp_path / "lat.npy"]
        save_tokens(files[0], np.zeros((3, 4, 8), np.float32), {"model": tf.header["model"]}, ["a", "b", "c"], [0, 1, 2])
    with pytest.raises(TokenFileError, match=message):
        train_generator(files, tmp_path / "run", config, settings=TrainSettings(steps=2, **QUICK))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", [{"lr": float("nan")}, {"max_grad_norm": float("inf")}, {"weight_decay": -1.0},
                                 {"batch_size": 6, "grad_accum": 4}, {"warmup_steps": 99}, {"precision": "fp8"}])
def test_settings_no_run_can_use_are_usage_errors(token_set, tmp_path, bad):
    with pytest.raises(UsageError):
        train_generator([token_set], tmp_path / "run", GENERATOR, settings=TrainSettings(steps=2, **{**QUICK, **bad}))
    assert not (tmp_path / "run").exists()


def test_a_run_folder_of_another_run_is_refused(trained, token_set):
    run, _ = trained
    with pytest.raises(UsageError, match=r"other settings \(settings.lr: 0.003 -> 0.001"):
        train_generator([token_set], run, GENERATOR, settings=TrainSettings(steps=60, **{**QUICK, "lr": 1e-3}))


# -- the command ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_trains_resumes_when_done_and_the_result_samples(token_set, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(token_set), "-o", str(run), "--generator", str(GENERATOR / "config.json"), "--steps", "6",
            "-b", "8", "--lr", "3e-3", "--checkpoint-every", "3", "--device", "cpu"]  # fmt: skip
    res = titok(*args, "--json", env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["steps"] == 6 and report["rows"] == 28 and report["resumed_from"] == 0
    weights = (run / "final" / "model.safetensors").read_bytes()

    again = titok(*args, env={"OMP_NUM_THREADS": "1"})  # the same command on a finished run
    assert again.returncode == 0, again.stderr
    assert "already trained (6 steps)" in again.stderr + again.stdout
    assert (run / "final" / "model.safetensors").read_bytes() == weights

    out = tmp_path / "samples"
    res = titok("sample", "--model", str(run / "final"), "--tokenizer", str(TOKENIZER), "-c", "0", "-c", "3", "-n", "2",
                "-o", str(out), "--device", "cpu")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["class0_000.png", "class0_001.png", "class3_000.png",
                                                     "class3_001.png"]  # fmt: skip
    # without --tokenizer: the final folder's config names the tokenizer of its token files
    paired = titok("sample", "--model", str(run / "final"), "-c", "0", "-c", "3", "-n", "2", "-o", str(tmp_path / "p"),
                   "--device", "cpu")  # fmt: skip
    assert paired.returncode == 0, paired.stderr
    assert all((tmp_path / "p" / p.name).read_bytes() == p.read_bytes() for p in out.iterdir())


def test_cli_bad_input_is_one_line(token_set, tmp_path):
    bad = _copy_with(token_set, tmp_path / "nolabels.npy", labels=False)
    res = titok("train", str(bad), "-o", str(tmp_path / "run"), "--generator", str(GENERATOR), "--steps", "2")
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error: ") and "no class labels" in res.stderr
    assert not (tmp_path / "run").exists()


def test_a_hub_repo_id_names_the_generator_and_its_weights_start_the_run(hub_cache, token_set, tmp_path, golden):
    """--generator takes what load_generator takes: `golden/gen_vit_tiny` from the (offline) Hub cache."""
    start = load_file(str(golden / "gen_vit_tiny" / "model.safetensors"))
    one_step = TrainSettings(steps=1, **{**QUICK, "warmup_steps": 1})  # lr 0: the weights stay as they start
    train_generator([token_set], tmp_path / "hub", "golden/gen_vit_tiny", settings=one_step)
    got = load_file(str(tmp_path / "hub" / "final" / "model.safetensors"))
    assert set(got) == set(start) and all(torch.equal(got[k], start[k]) for k in start)
