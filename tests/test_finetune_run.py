"""`titok finetune` on a distinct image domain with the golden tiny tokenizers (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from titok_cli.errors import ImageError, UsageError
from titok_cli.training.loop import MetricsLog
from titok_cli.training.tokenizer_job import finetune_tokenizer
from titok_cli.training.tokenizer_losses import LossSettings
from titok_cli.training.tokenizer_parts import part_of
from titok_cli.training.tokenizer_settings import FinetuneSettings

from .conftest import GOLDEN
from .finetune_helpers import lpips_folder, stripe_images
from .training_helpers import titok

LEGACY, SINGLE, VAE = GOLDEN / "tok_vq_legacy_tiny", GOLDEN / "tok_vq_tiny", GOLDEN / "tok_vae_tiny"
FAST = dict(batch_size=8, lr=1e-3, warmup_steps=0, device="cpu", checkpoint_every=10)
PIXELS_ONLY = LossSettings(perceptual_weight=0.0, discriminator_weight=0.0)  # no VGG in the loop: fast


@pytest.fixture(scope="module")
def domain(tmp_path_factory, golden) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stripes")
    return {"train": stripe_images(root / "train", 96, seed=1), "heldout": stripe_images(root / "heldout", 8, seed=2),
            "lpips": lpips_folder(root / "lpips")}  # fmt: skip


@pytest.fixture(scope="module")
def trained(domain, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    result = finetune_tokenizer([domain["train"]], run, str(LEGACY), settings=FinetuneSettings(steps=30, **FAST,
                                eval_every=15), losses=PIXELS_ONLY, heldout=[domain["heldout"]],
                                lpips_weights=domain["lpips"])  # fmt: skip
    return result


def test_reconstruction_loss_and_heldout_psnr_improve(trained):
    steps = [r for r in MetricsLog.read(trained.run_dir / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 31))
    first, last = np.mean([r["loss"] for r in steps[:5]]), np.mean([r["loss"] for r in steps[-5:]])
    assert last < 0.7 * first, (first, last)
    assert [h["step"] for h in trained.heldout] == [0, 15, 30]
    before, after = trained.before, trained.after
    assert before["images"] == after["images"] == 8
    assert after["psnr"] > before["psnr"] + 1.0 and after["ssim"] > before["ssim"]
    assert after["lpips"] < before["lpips"]


def test_frozen_parts_are_bit_identical_and_the_final_folder_is_complete(trained):
    start, final = load_file(str(LEGACY / "model.safetensors")), load_file(str(trained.final / "model.safetensors"))
    assert set(final) == set(start)
    assert trained.trained == ["decoder", "pixel_decoder"] and trained.frozen == ["encoder", "quantizer"]
    for key in start:
        if part_of(key) in trained.frozen:
            assert torch.equal(final[key], start[key]), key
    changed = {part_of(k) for k in start if not torch.equal(final[k], start[k])}
    assert changed == {"decoder", "pixel_decoder"}
    doc = json.loads((trained.final / "config.json").read_text())
    assert doc["model"]["vq_model"] == json.loads((LEGACY / "config.json").read_text())["model"]["vq_model"]
    assert doc["experiment"]["trained_parts"] == ["decoder", "pixel_decoder"]
    assert doc["experiment"]["finetuned_from"]["model"] == str(LEGACY)


def test_old_and_new_model_give_the_same_token_ids_and_the_new_one_decodes_better(trained, domain, tmp_path):
    for name, model in (("old", LEGACY), ("new", trained.final)):
        res = titok("encode", str(domain["heldout"]), "--model", str(model), "-o", str(tmp_path / f"{name}.npz"),
                    "--device", "cpu", "-q")  # fmt: skip
        assert res.returncode == 0, res.stderr
    old, new = np.load(tmp_path / "old.npz"), np.load(tmp_path / "new.npz")
    assert np.array_equal(old["tokens"], new["tokens"])
    res = titok("decode", str(tmp_path / "old.npz"), "--model", str(trained.final), "-o", str(tmp_path / "dec"),
                "--device", "cpu", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "dec").glob("*.png"))) == 8


def test_the_published_folder_measures_as_the_after_column(trained, domain):
    """`titok eval recon` of final/ gives the table's "after" numbers: what was measured is what was published."""
    res = titok("eval", "recon", str(domain["heldout"]), "--model", str(trained.final), "--lpips", str(domain["lpips"]),
                "--no-fid", "--device", "cpu", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    for key in ("psnr", "ssim", "lpips"):
        assert report[key] == pytest.approx(trained.after[key], rel=1e-6, abs=1e-9), key
    assert report[key] != pytest.approx(trained.before[key], rel=1e-3)


def test_rerun_of_a_finished_run_changes_nothing(trained, domain):
    before = load_file(str(trained.final / "model.safetensors"))
    again = finetune_tokenizer([domain["train"]], trained.run_dir, str(LEGACY), settings=FinetuneSettings(
        steps=30, **FAST, eval_every=15), losses=PIXELS_ONLY, heldout=[domain["heldout"]],
        lpips_weights=domain["lpips"])  # fmt: skip
    assert again.resumed_from == 30 and again.heldout == trained.heldout
    after = load_file(str(again.final / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("model, parts, extra", [(SINGLE, ("encoder", "quantizer", "decoder"), "quantizer_loss"),
                                                 (VAE, ("encoder", "decoder"), "kl")])  # fmt: skip
def test_training_the_encoder_side_changes_it_and_adds_its_loss_term(domain, tmp_path, model, parts, extra):
    result = finetune_tokenizer([domain["train"]], tmp_path / "run", str(model), settings=FinetuneSettings(
        steps=3, **FAST, train=(",".join(parts),)), losses=LossSettings(perceptual_weight=0.0, discriminator_weight=0.0,
        kl_weight=1e-3))  # fmt: skip
    assert result.trained == list(parts) and result.frozen == []
    start, final = load_file(str(model / "model.safetensors")), load_file(str(result.final / "model.safetensors"))
    assert {part_of(k) for k in start if not torch.equal(final[k], start[k])} == set(parts)


def test_the_perceptual_loss_trains_too(domain, tmp_path):
    result = finetune_tokenizer([domain["train"]], tmp_path / "run", str(SINGLE), settings=FinetuneSettings(
        steps=2, **FAST), losses=LossSettings(perceptual="lpips", discriminator_weight=0.0),
        lpips_weights=domain["lpips"])  # fmt: skip
    assert result.last["step"] == 2 and np.isfinite(result.last["loss"])


def _bad_image_folder(tmp_path: Path) -> Path:
    folder = stripe_images(tmp_path / "bad", 3, seed=3)
    (folder / "stripes0001.png").write_bytes(b"not a png")
    return folder


@pytest.mark.parametrize("case, error, message", [
    ("empty", UsageError, "no image files found"),
    ("heldout", UsageError, r"no image files found in .*empty \(held-out images\)"),
    ("broken", ImageError, "stripes0001.png"),
    ("part", UsageError, "--train pixel_decoder: this tokenizer has no such part"),
    ("name", UsageError, "parts are named encoder, quantizer, decoder, pixel_decoder"),
    ("batch", UsageError, "not a multiple of --grad-accum"),
])  # fmt: skip
def test_bad_inputs_are_refused_before_training(domain, tmp_path, case, error, message):
    images, settings = [domain["train"]], dict(FAST)
    heldout = None
    if case in ("empty", "heldout"):
        (tmp_path / "empty").mkdir()
        images, heldout = ([tmp_path / "empty"], None) if case == "empty" else (images, [tmp_path / "empty"])
    elif case == "broken":
        images = [_bad_image_folder(tmp_path)]
    elif case in ("part", "name"):
        settings["train"] = ("pixel_decoder",) if case == "part" else ("decoder", "codebook")
    else:
        settings["grad_accum"] = 3
    with pytest.raises(error, match=message):
        finetune_tokenizer(images, tmp_path / "run", str(SINGLE), settings=FinetuneSettings(steps=2, **settings),
                           losses=PIXELS_ONLY, heldout=heldout, lpips_weights=domain["lpips"])  # fmt: skip
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cli_warns_when_ids_change_prints_the_table_and_json(domain, tmp_path):
    base = ["finetune", str(domain["train"]), "--model", str(SINGLE), "--steps", "2", "-b", "8", "--device", "cpu",
            "--perceptual-weight", "0", "--gan-weight", "0", "--lpips", str(domain["lpips"])]  # fmt: skip
    res = titok(*base, "-o", str(tmp_path / "a"), "--train", "encoder", "--train", "decoder",
                "--heldout", str(domain["heldout"]))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "token files written with the starting model no longer match" in res.stderr
    assert "PSNR (dB)" in res.stdout and "before" in res.stdout and "tokenizer -> " in res.stdout
    assert "crops official; perceptual loss off; discriminator off" in res.stderr + res.stdout
    res = titok(*base, "-o", str(tmp_path / "b"), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["trained"] == ["decoder"] and report["before"] is None and report["last"]["step"] == 2
    res = titok(*base, "-o", str(tmp_path / "c"), "--train", "pixel_decoder")
    assert res.returncode == 2 and res.stderr.startswith("error: --train pixel_decoder")


def test_webdataset_shards_give_the_folder_images(domain, tmp_path):
    import tarfile

    from titok_cli.training.tokenizer_images import TrainImages

    shard = tmp_path / "train-0000.tar"
    files = sorted(domain["train"].iterdir())
    with tarfile.open(shard, "w") as tar:
        for path in files:
            tar.add(path, arcname=path.name)
    folder, tarred = TrainImages([domain["train"]]), TrainImages([str(shard)])
    folder.scan()
    tarred.scan()
    assert len(tarred) == len(folder) == len(files) and tarred.sizes == folder.sizes
    rows, epochs = np.array([0, 5, 95]), np.array([0, 1, 2])
    crops = folder.crops(rows, epochs, 64, seed=7)  # (3, 3, 64, 64), decoded on worker threads
    assert torch.equal(tarred.crops(rows, epochs, 64, seed=7), crops)
    assert torch.equal(TrainImages([domain["train"]], workers=1).crops(rows, epochs, 64, seed=7), crops)
    assert tarred.identity()["sha256"] != TrainImages([domain["heldout"]]).identity()["sha256"]


def test_random_resized_crops_are_a_choice_and_part_of_the_run(domain, tmp_path):
    from titok_cli.training.tokenizer_images import TrainImages

    images = TrainImages([domain["train"]])
    rows, epochs = np.arange(6), np.zeros(6, dtype=np.int64)
    official = images.crops(rows, epochs, 64, seed=3)
    resized = images.crops(rows, epochs, 64, seed=3, scale=(0.3, 1.0))
    assert resized.shape == official.shape and not torch.equal(resized, official)
    assert torch.equal(images.crops(rows, epochs, 64, seed=3, scale=(0.3, 1.0)), resized)
    run = tmp_path / "run"
    finetune_tokenizer([domain["train"]], run, str(SINGLE), settings=FinetuneSettings(steps=1, **FAST),
                       losses=PIXELS_ONLY)  # fmt: skip
    with pytest.raises(UsageError, match="other settings .*crop_scale"):  # another crop is another run
        finetune_tokenizer([domain["train"]], run, str(SINGLE), losses=PIXELS_ONLY,
                           settings=FinetuneSettings(steps=1, crop_scale=0.5, **FAST))  # fmt: skip
    with pytest.raises(UsageError, match="crop scale"):
        FinetuneSettings(crop_scale=1.5).check()


@pytest.mark.parametrize("model, start", [(LEGACY, 20_000), (SINGLE, 200_000)])
def test_the_gan_schedule_is_the_models_recipe(domain, tmp_path, model, start):
    """Two-stage models get stage 2's discriminator (0.01 from step 20,000), single-stage ones the
    single-stage recipe's (0.1 from step 200,000); the run records what it used."""
    res = titok("finetune", str(domain["train"]), "-o", str(tmp_path / "run"), "--model", str(model), "--steps", "1",
                "-b", "8", "--device", "cpu", "--perceptual-weight", "0")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"discriminator off (--gan-start {start} is past the last step)" in res.stdout + res.stderr
    losses = json.loads((tmp_path / "run" / "final" / "config.json").read_text())["losses"]
    assert (losses["discriminator_weight"], losses["discriminator_start"]) == ({20_000: 0.01, 200_000: 0.1}[start], start)
    assert losses["perceptual_loss"] == ("convnext_s" if start == 20_000 else "lpips-convnext_s-1.0-0.1")  # official names
    assert losses["lecam_regularization_weight"] == 0.001 and losses["reconstruction_loss"] == "l2"
