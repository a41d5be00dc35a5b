"""ConvNeXt-S and the official perceptual losses of fine-tuning, against torchvision and the
official formula (tests/data/convnext_reference.npz, from tests/reference/make_convnext_reference.py),
and in a `titok finetune` run that uses the official stage-2 recipe by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from titok_cli.errors import CheckpointError, FeatureWeightsError, UsageError
from titok_cli.quality.convnext import ConvNeXt, load_convnext_small
from titok_cli.quality.lpips import LPIPS
from titok_cli.training.perceptual_loss import PerceptualLoss
from titok_cli.training.tokenizer_losses import LossSettings

from .conftest import GOLDEN
from .finetune_helpers import stripe_images
from .reference.make_lpips_ssim_reference import seeded_heads_state, seeded_vgg16_state
from .training_helpers import titok

REFERENCE = Path(__file__).parent / "data" / "convnext_reference.npz"
FILENAME = "convnext_small-0c510722.pth"


@pytest.fixture(scope="module")
def ref() -> dict:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def small(ref) -> ConvNeXt:
    cfg = json.loads(str(ref["config"]))
    net = ConvNeXt(cfg["dims"], cfg["depths"], cfg["classes"])
    net.load_state_dict({k[2:]: torch.from_numpy(v) for k, v in ref.items() if k.startswith("w:")}, strict=True)
    return net


@pytest.fixture(scope="module")
def standin_file(tmp_path_factory) -> Path:
    """Seeded random ConvNeXt-S weights under torchvision's file name (the real file is 190 MB)."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("convnext") / FILENAME
    torch.save(ConvNeXt().state_dict(), path)
    return path


def test_convnext_small_has_torchvisions_keys_and_shapes(ref):
    ours = {k: list(v.shape) for k, v in ConvNeXt().state_dict().items()}
    assert ours == json.loads(str(ref["small_shapes"]))
    assert sum(v.numel() for v in ConvNeXt().parameters()) == 50_223_688  # torchvision's num_params


def test_logits_equal_torchvisions(ref, small):
    with torch.no_grad():
        logits = small(torch.from_numpy(ref["inputs"]))  # (3, 10)
    assert logits.shape == (3, 10)
    np.testing.assert_allclose(logits.numpy(), ref["logits"], rtol=0, atol=2e-5)


def test_convnext_term_is_the_official_formula(ref, small):
    loss = PerceptualLoss("convnext_s", convnext=small)
    images, recon = torch.from_numpy(ref["images"]), torch.from_numpy(ref["recon"])
    got = loss(images, recon).item()
    assert got == pytest.approx(float(ref["distance"]), rel=1e-4) and got > 0
    assert loss(images, images).item() == 0.0
    recon.requires_grad_(True)
    loss(images, recon).backward()  # the gradient reaches the reconstruction, not the frozen net
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert all(p.grad is None for p in small.parameters())


def test_mixed_term_averages_as_the_official_name_says(ref, small):
    lpips = LPIPS.from_state_dicts(seeded_vgg16_state(), seeded_heads_state())
    images, recon = torch.from_numpy(ref["images"]), torch.from_numpy(ref["recon"])
    mixed = PerceptualLoss("lpips-convnext_s", lpips=lpips, convnext=small)(images, recon).item()
    alone = PerceptualLoss("lpips", lpips=lpips)(images, recon).item()
    assert mixed == pytest.approx((1.0 * alone + 0.1 * float(ref["distance"])) / 1.1, rel=1e-4)


def test_recipes_follow_the_official_configs():
    two, one = LossSettings().for_model(two_stage=True), LossSettings().for_model(two_stage=False)
    assert (two.perceptual, two.perceptual_weight) == ("convnext_s", 0.1)  # TiTok stage 2
    assert (one.perceptual, one.perceptual_weight) == ("lpips-convnext_s", 1.1)  # single-stage recipes
    assert LossSettings(perceptual="lpips").for_model(True).perceptual_weight == 1.0
    assert LossSettings(perceptual="lpips", perceptual_weight=0.5).for_model(False).perceptual_weight == 0.5
    with pytest.raises(UsageError, match="perceptual loss 'vgg'"):
        LossSettings(perceptual="vgg").check()


def test_weight_file_is_found_checked_and_named(standin_file, tmp_path, monkeypatch):
    net, file = load_convnext_small(standin_file)
    assert file == str(standin_file) and not any(p.requires_grad for p in net.parameters()) and not net.training
    broken = tmp_path / "cut.pth"
    torch.save({k: v for i, (k, v) in enumerate(ConvNeXt().state_dict().items()) if i}, broken)
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_convnext_small(broken)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FeatureWeightsError, match=f"{FILENAME}.*--convnext"):
        load_convnext_small()


@pytest.mark.slow
def test_finetune_uses_the_official_stage2_loss_by_default(standin_file, tmp_path):
    """The two-stage golden tokenizer gets ConvNeXt-S at 0.1 without being asked; the start line
    names the loss and its file, and the metrics hold the term."""
    images = stripe_images(tmp_path / "train", 8, seed=4)
    run = tmp_path / "run"
    res = titok("finetune", str(images), "-o", str(run), "--model", str(GOLDEN / "tok_vq_legacy_tiny"), "--steps", "2",
                "-b", "2", "--device", "cpu", "--gan-weight", "0", "--convnext", str(standin_file))  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert f"perceptual convnext_s x 0.1 ({FILENAME} from {standin_file.parent})" in out
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2] and all(m["perceptual_loss"] > 0 for m in lines)
    config = json.loads((run / "final" / "config.json").read_text())
    assert json.dumps(config).count('"convnext_s"') >= 1
    res = titok("finetune", str(images), "-o", str(tmp_path / "x"), "--model", str(GOLDEN / "tok_vq_legacy_tiny"),
                "--steps", "1", "--device", "cpu", "--convnext", str(tmp_path / "nope.pth"))  # fmt: skip
    assert res.returncode != 0 and "nope.pth: no such file" in res.stderr and "--convnext" in res.stderr
