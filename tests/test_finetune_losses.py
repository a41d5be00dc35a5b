"""Tokenizer fine-tuning losses, the official patch discriminator and the training crop (issue 13).

Expected values are computed here by hand (numpy) from the official formulas in
bytedance/1d-tokenizer modeling/modules/losses.py; the discriminator's keys and shapes were derived
by reading modeling/modules/discriminator.py (NLayerDiscriminator with its default arguments).
LPIPS runs on the seeded stand-in weights of tests/reference/make_lpips_ssim_reference.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from titok_cli.errors import UsageError
from titok_cli.quality.lpips import LPIPS
from titok_cli.training.discriminator import MaxPoolTo, NLayerDiscriminator, build_discriminator
from titok_cli.training.image_augment import (RATIO, crop_box, crop_rng, resized_crop_box, resized_size, train_crop,
                                              train_crops)  # fmt: skip
from titok_cli.training.tokenizer_losses import LossSettings, TokenizerObjective, build_objective

from .reference.make_lpips_ssim_reference import seeded_heads_state, seeded_vgg16_state

# NLayerDiscriminator(num_channels=3, hidden_channels=128, num_stages=3, blur_resample=True,
# blur_kernel_size=4): in_channel_mult (1, 1, 2, 4) -> stages 128->128, 128->256, 256->512; each
# stage is Sequential(Conv2dSame 3x3, BlurBlock (buffer `kernel` 1x1x4x4), GroupNorm(32), LeakyReLU);
# block_in = Sequential(Conv2dSame 5x5, LeakyReLU); to_logits = Sequential(Conv2dSame 1x1, LeakyReLU, Conv2dSame 5x5).
OFFICIAL_SHAPES = {
    "block_in.0.weight": (128, 3, 5, 5), "block_in.0.bias": (128,),
    "blocks.0.0.weight": (128, 128, 3, 3), "blocks.0.0.bias": (128,), "blocks.0.1.kernel": (1, 1, 4, 4),
    "blocks.0.2.weight": (128,), "blocks.0.2.bias": (128,),
    "blocks.1.0.weight": (256, 128, 3, 3), "blocks.1.0.bias": (256,), "blocks.1.1.kernel": (1, 1, 4, 4),
    "blocks.1.2.weight": (256,), "blocks.1.2.bias": (256,),
    "blocks.2.0.weight": (512, 256, 3, 3), "blocks.2.0.bias": (512,), "blocks.2.1.kernel": (1, 1, 4, 4),
    "blocks.2.2.weight": (512,), "blocks.2.2.bias": (512,),
    "to_logits.0.weight": (512, 512, 1, 1), "to_logits.0.bias": (512,),
    "to_logits.2.weight": (1, 512, 5, 5), "to_logits.2.bias": (1,),
}  # fmt: skip


class LinearCritic(torch.nn.Module):
    """A stand-in discriminator with logits we can compute by hand: 3 * red - 0.5 per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(3.0))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.scale * x[:, :1] - 0.5  # (B, 1, H, W)


def batch(seed: int, n: int = 2, side: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def objective(critic: bool = True, **changes) -> TokenizerObjective:
    settings = LossSettings(perceptual_weight=0.0, **changes).for_model(two_stage=True)
    disc = LinearCritic() if settings.uses_gan and critic else None
    return TokenizerObjective(settings, None, disc)


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    return LPIPS.from_state_dicts(seeded_vgg16_state(), seeded_heads_state())


def hinge(real: np.ndarray, fake: np.ndarray) -> float:
    return 0.5 * (np.maximum(0.0, 1.0 - real).mean() + np.maximum(0.0, 1.0 + fake).mean())


# -- settings -------------------------------------------------------------------------------------


def test_defaults_are_the_official_ones_and_checked():
    s, single = LossSettings().for_model(two_stage=True), LossSettings().for_model(two_stage=False)
    assert (s.reconstruction, s.discriminator_start, s.discriminator_weight, s.lecam_weight) == ("l2", 20000, 0.01, 0.001)
    assert (single.discriminator_start, single.discriminator_weight) == (200_000, 0.1)  # the single-stage recipe
    assert LossSettings(discriminator_start=7).for_model(two_stage=False).discriminator_start == 7
    assert s.uses_gan and LossSettings().uses_gan and not LossSettings(discriminator_weight=0.0).uses_gan
    for bad in ({"reconstruction": "l3"}, {"perceptual_weight": -1.0}, {"kl_weight": float("nan")},
                {"discriminator_start": -5}, {"discriminator_start": 1.5}, {"lecam_decay": 1.5}):  # fmt: skip
        with pytest.raises(UsageError):
            LossSettings(**bad).check()


def test_objective_refuses_missing_networks(lpips):
    with pytest.raises(ValueError, match="resolve the recipe"):
        TokenizerObjective(LossSettings(), None, LinearCritic())
    with pytest.raises(ValueError, match="perceptual"):
        TokenizerObjective(LossSettings().for_model(True), None, LinearCritic())
    with pytest.raises(ValueError, match="discriminator"):
        TokenizerObjective(LossSettings(perceptual_weight=0.0).for_model(True), None, None)
    with pytest.raises(ValueError, match="discriminator"):
        TokenizerObjective(LossSettings(perceptual_weight=0.0, discriminator_weight=0.0).for_model(True), None, LinearCritic())


# -- generator loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_reconstruction_terms(kind):
    x, y = batch(0), batch(1)
    obj = objective(reconstruction=kind, reconstruction_weight=2.5, discriminator_weight=0.0)
    total, m = obj.generator_loss(x, y, {}, step=0)
    d = (x - y).numpy()
    expected = 2.5 * (np.abs(d).mean() if kind == "l1" else (d**2).mean())
    assert m["reconstruction_loss"] == pytest.approx(expected, rel=1e-5)
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert "perceptual_loss" not in m and "quantizer_loss" not in m and m["gan_loss"] == 0.0


def test_quantizer_kl_and_gan_terms_add_up():
    x, y = batch(2), batch(3)
    obj = objective(quantizer_weight=0.5, kl_weight=0.1, discriminator_weight=0.2, discriminator_factor=0.5,
                    discriminator_start=10)  # fmt: skip
    extra = {"quantizer_loss": torch.tensor(0.8), "kl": torch.tensor([1.0, 3.0])}
    total, m = obj.generator_loss(x, y, extra, step=10)
    logits_fake = 3.0 * y[:, 0].numpy() - 0.5
    assert m["gan_loss"] == pytest.approx(-logits_fake.mean(), rel=1e-5)
    assert m["weighted_gan_loss"] == pytest.approx(0.2 * 0.5 * -logits_fake.mean(), rel=1e-5)
    assert m["quantizer_loss"] == pytest.approx(0.4) and m["kl_loss"] == pytest.approx(0.1 * 2.0)
    rec = ((x - y).numpy() ** 2).mean()
    assert m["total_loss"] == pytest.approx(rec + 0.4 + 0.2 + 0.1 * -logits_fake.mean(), rel=1e-5)
    assert total.item() == pytest.approx(m["total_loss"], rel=1e-6)
    assert all(type(v) is float for v in m.values())


def test_perceptual_term_is_weighted_lpips(lpips):
    x, y = batch(4, side=32), batch(5, side=32)
    settings = LossSettings(perceptual="lpips", perceptual_weight=1.1, discriminator_weight=0.0).for_model(True)
    obj = TokenizerObjective(settings, lpips, None)
    _, m = obj.generator_loss(x, y, {}, step=0)
    assert m["perceptual_loss"] == pytest.approx(1.1 * lpips(x, y).mean().item(), rel=1e-5)
    assert m["perceptual_loss"] > 0
    assert obj.generator_loss(x, x, {}, step=0)[1]["perceptual_loss"] == pytest.approx(0.0, abs=1e-6)


def test_generator_gradients_reach_recon_but_not_the_discriminator():
    x = batch(6)
    y = batch(7).requires_grad_(True)
    obj = objective(discriminator_start=0)
    total, _ = obj.generator_loss(x, y, {}, step=0)
    total.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert obj.discriminator.scale.grad is None
    assert obj.discriminator.scale.requires_grad  # restored after the generator pass


def test_generator_loss_is_float32_from_bfloat16_inputs():
    x, y = batch(8).bfloat16(), batch(9).bfloat16()
    total, m = objective(discriminator_start=0).generator_loss(x, y, {}, step=0)
    assert total.dtype == torch.float32
    assert m["reconstruction_loss"] == pytest.approx(((x.float() - y.float()).numpy() ** 2).mean(), rel=1e-5)


# -- discriminator loss ---------------------------------------------------------------------------


def test_hinge_and_lecam_against_hand_computed_values():
    x, y = batch(10), batch(11)
    obj = objective(discriminator_start=0, discriminator_factor=0.7, lecam_weight=0.3, lecam_decay=0.9)
    obj.ema_real_logits_mean.fill_(0.4)
    obj.ema_fake_logits_mean.fill_(0.2)
    loss, m = obj.discriminator_loss(x, y, step=0)
    real, fake = 3.0 * x[:, 0].numpy() - 0.5, 3.0 * y[:, 0].numpy() - 0.5
    lecam = max(real.mean() - 0.2, 0.0) ** 2 + max(0.4 - fake.mean(), 0.0) ** 2
    assert m["lecam_loss"] == pytest.approx(0.3 * lecam, rel=1e-5)
    assert m["discriminator_loss"] == pytest.approx(0.7 * hinge(real, fake) + 0.3 * lecam, rel=1e-5)
    assert loss.item() == pytest.approx(m["discriminator_loss"], rel=1e-6)
    assert (m["logits_real"], m["logits_fake"]) == (pytest.approx(real.mean(), rel=1e-5), pytest.approx(fake.mean(), rel=1e-5))
    # the running means move by (1 - decay) towards this batch, after being used
    assert obj.ema_real_logits_mean.item() == pytest.approx(0.9 * 0.4 + 0.1 * real.mean(), rel=1e-5)
    assert obj.ema_fake_logits_mean.item() == pytest.approx(0.9 * 0.2 + 0.1 * fake.mean(), rel=1e-5)


def test_lecam_averages_can_move_once_per_step_by_the_global_means():
    x, y = batch(10), batch(11)
    obj = objective(discriminator_start=0, lecam_weight=0.3, lecam_decay=0.9)
    obj.ema_real_logits_mean.fill_(0.4)
    obj.ema_fake_logits_mean.fill_(0.2)
    held = obj.discriminator_loss(x, y, step=0, update_averages=False)[1]
    assert (obj.ema_real_logits_mean.item(), obj.ema_fake_logits_mean.item()) == (pytest.approx(0.4), pytest.approx(0.2))
    moved = objective(discriminator_start=0, lecam_weight=0.3, lecam_decay=0.9)
    moved.ema_real_logits_mean.fill_(0.4)
    moved.ema_fake_logits_mean.fill_(0.2)
    assert moved.discriminator_loss(x, y, step=0)[1] == held  # the same loss: the averages are read before moving
    obj.update_lecam(held["logits_real"], held["logits_fake"])  # what the job does after summing over ranks
    assert torch.allclose(obj.ema_real_logits_mean, moved.ema_real_logits_mean)
    assert torch.allclose(obj.ema_fake_logits_mean, moved.ema_fake_logits_mean)


def test_hinge_on_random_logits_including_saturated_ones():
    from titok_cli.training.tokenizer_losses import hinge_discriminator_loss

    gen = torch.Generator().manual_seed(12)
    real, fake = torch.randn(4, 1, 16, 16, generator=gen) * 2, torch.randn(4, 1, 16, 16, generator=gen) * 2
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(hinge(real.numpy(), fake.numpy()), rel=1e-6)
    assert hinge_discriminator_loss(torch.full((2,), 5.0), torch.full((2,), -5.0)).item() == 0.0


def test_discriminator_loss_trains_the_discriminator_only():
    x, y = batch(13), batch(14).requires_grad_(True)
    obj = objective(discriminator_start=0)
    loss, _ = obj.discriminator_loss(x, y, step=0)
    loss.backward()
    assert obj.discriminator.scale.grad is not None and obj.discriminator.scale.grad.abs() > 0
    assert y.grad is None


def test_lecam_buffers_live_in_state_dict_and_resume_exactly():
    obj = objective(discriminator_start=0)
    before = obj.state_dict()["ema_real_logits_mean"].clone()
    for seed in range(3):
        obj.discriminator_loss(batch(20 + seed), batch(30 + seed), step=5)
    state = obj.state_dict()
    assert set(state) == {"discriminator.scale", "ema_real_logits_mean", "ema_fake_logits_mean"}
    assert not torch.equal(state["ema_real_logits_mean"], before)
    fresh = objective(discriminator_start=0)
    fresh.load_state_dict(state)
    a = obj.discriminator_loss(batch(40), batch(41), step=6)[1]
    b = fresh.discriminator_loss(batch(40), batch(41), step=6)[1]
    assert a == b


def test_warm_up_has_no_gan_before_discriminator_start():
    x, y = batch(15), batch(16)
    obj = objective(discriminator_start=100)
    assert not obj.gan_active(99) and obj.gan_active(100)
    total, m = obj.generator_loss(x, y, {}, step=99)
    assert m["gan_loss"] == m["weighted_gan_loss"] == m["discriminator_factor"] == 0.0
    assert total.item() == pytest.approx(m["reconstruction_loss"], rel=1e-6)
    loss, m = obj.discriminator_loss(x, y, step=99)
    assert loss.item() == 0.0 and m["discriminator_loss"] == 0.0
    assert obj.discriminator.calls == 0 and obj.ema_real_logits_mean.item() == 0.0
    assert obj.generator_loss(x, y, {}, step=100)[1]["gan_loss"] != 0.0
    assert obj.discriminator.calls == 1


# -- the discriminator ----------------------------------------------------------------------------


def test_discriminator_keys_and_shapes_are_the_official_ones():
    state = NLayerDiscriminator().state_dict()
    assert list(state) == list(OFFICIAL_SHAPES)
    assert {k: tuple(v.shape) for k, v in state.items()} == OFFICIAL_SHAPES
    assert sum(p.numel() for p in NLayerDiscriminator().parameters()) == 1_909_889  # sum of the shapes above minus kernels
    k = state["blocks.0.1.kernel"][0, 0]
    assert torch.allclose(k, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)


def test_discriminator_init_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = build_discriminator(seed=1), build_discriminator(seed=1), build_discriminator(seed=2)
    assert torch.equal(torch.rand(3), expected_next)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in OFFICIAL_SHAPES)
    assert not torch.equal(a.state_dict()["block_in.0.weight"], c.state_dict()["block_in.0.weight"])


def test_discriminator_output_and_same_padding():
    disc = build_discriminator(seed=0)
    with torch.no_grad():
        assert disc(batch(17, side=128)).shape == (2, 1, 16, 16)
        assert disc(batch(18, n=1, side=37)).shape == (1, 1, 16, 16)  # odd side: 37 -> 19 -> 10 -> 5, pooled up
    x = torch.randn(2, 8, 32, 48, generator=torch.Generator().manual_seed(19))
    assert torch.equal(MaxPoolTo(16)(x), F.adaptive_max_pool2d(x, 16))  # the even-division shortcut changes nothing


def test_build_objective_loads_lpips_and_builds_the_discriminator_only_with_gan(tmp_path):
    from titok_cli.quality.weights import known

    folder = tmp_path / "lpips"
    folder.mkdir()
    torch.save(seeded_vgg16_state(), folder / known("vgg16").filename)
    torch.save(seeded_heads_state(), folder / known("lpips-vgg").filename)
    lpips_only = LossSettings(perceptual="lpips").for_model(two_stage=True)
    with_gan = build_objective(lpips_only, "cpu", feature_dir=folder, seed=3)
    assert isinstance(with_gan.trainable_discriminator(), NLayerDiscriminator)
    assert torch.equal(with_gan.discriminator.to_logits[2].weight, build_discriminator(seed=3).to_logits[2].weight)
    assert not any(k.startswith("perceptual") for k in with_gan.state_dict())
    assert all(not p.requires_grad for p in with_gan.perceptual.parameters())
    assert [w["file"] for w in with_gan.weights["lpips"]] == [known("vgg16").filename, known("lpips-vgg").filename]
    files = [folder / known("lpips-vgg").filename, folder / known("vgg16").filename]
    no_gan = build_objective(replace(lpips_only, discriminator_weight=0.0), "cpu", lpips_weights=files)
    assert no_gan.trainable_discriminator() is None and not no_gan.gan_active(10**9)
    x, y = batch(50, side=32), batch(51, side=32)
    a, b = no_gan.generator_loss(x, y, {}, 0)[1], with_gan.generator_loss(x, y, {}, 0)[1]
    assert a.pop("d_weight") == 0.0 and b.pop("d_weight") == 0.01
    assert a == b and a["perceptual_loss"] > 0  # same LPIPS whichever way its files were given
    with_gan.to(torch.float64)  # .to() reaches the perceptual net although it is not in state_dict
    assert with_gan.perceptual.lpips.heads[0].model[1].weight.dtype == torch.float64


# -- training crop --------------------------------------------------------------------------------


def test_resized_size_truncates_like_torchvision():
    assert resized_size(500, 375, 256) == (341, 256)  # 256 * 500 / 375 = 341.33
    assert resized_size(300, 451, 64) == (64, 96)  # 64 * 451 / 300 = 96.2
    assert resized_size(256, 256, 256) == (256, 256)


def test_crop_draws_are_a_pure_function_of_seed_epoch_index():
    draws = [crop_box(341, 256, 256, crop_rng(7, 2, i)) for i in range(50)]
    assert draws == [crop_box(341, 256, 256, crop_rng(7, 2, i)) for i in range(50)]
    assert len(set(draws)) > 20
    assert crop_box(341, 256, 256, crop_rng(7, 3, 0)) != draws[0] or crop_box(341, 256, 256, crop_rng(8, 2, 0)) != draws[0]
    with pytest.raises(ValueError):
        crop_rng(-1, 0, 0)


def test_crop_offsets_cover_the_image_and_flip_half_the_time():
    boxes = [crop_box(300, 256, 256, crop_rng(0, 0, i)) for i in range(4000)]
    lefts = np.array([b[0][0] for b in boxes])
    assert all(b[0][1] == 0 and b[0][2] - b[0][0] == 256 for b in boxes)
    assert lefts.min() == 0 and lefts.max() == 44  # both ends of 0..300-256 reached, nothing beyond
    flips = np.mean([b[1] for b in boxes])
    assert 0.46 < flips < 0.54


def test_train_crop_is_a_window_of_the_resized_photo(images_dir):
    photo = Image.open(images_dir / "rocket.jpg")
    size = 64
    resized = np.asarray(photo.convert("RGB").resize(resized_size(*photo.size, size), Image.Resampling.BICUBIC))
    found = set()
    for index in range(12):
        out = train_crop(photo, size, crop_rng(1, 0, index))
        assert out.dtype == torch.uint8 and out.shape == (3, size, size)
        assert torch.equal(out, train_crop(photo, size, crop_rng(1, 0, index)))
        view = out.permute(1, 2, 0).numpy()
        hits = [(left, flip) for left in range(resized.shape[1] - size + 1) for flip in (False, True)
                if np.array_equal(view[:, ::-1] if flip else view, resized[:, left:left + size])]  # fmt: skip
        assert len(hits) >= 1
        found.add(hits[0])
    assert len(found) > 6 and {f for _, f in found} == {False, True}


def test_train_crops_on_every_test_photo(images_dir):
    photos = [Image.open(p) for p in sorted(images_dir.iterdir())]
    out = train_crops(photos, 48, seed=0, epoch=1, indices=list(range(len(photos))))
    assert out.shape == (len(photos), 3, 48, 48) and out.dtype == torch.uint8
    again = train_crops(photos[::-1], 48, seed=0, epoch=1, indices=list(range(len(photos)))[::-1])
    assert torch.equal(out, again.flip(0))  # independent of batch order
    assert out.float().std() > 10  # real image content, not a constant


def test_random_resized_windows_keep_to_their_area_and_aspect_ranges():
    boxes = [resized_crop_box(500, 375, (0.3, 0.9), crop_rng(4, 0, i)) for i in range(2000)]
    assert boxes == [resized_crop_box(500, 375, (0.3, 0.9), crop_rng(4, 0, i)) for i in range(2000)]
    w = np.array([b[2] - b[0] for b in boxes])
    h = np.array([b[3] - b[1] for b in boxes])
    assert all(0 <= b[0] and b[2] <= 500 and 0 <= b[1] and b[3] <= 375 for b in boxes)
    share = w * h / (500 * 375)
    assert share.min() > 0.29 and share.max() < 0.91 and share.max() - share.min() > 0.5  # rounding: +-1 px
    aspect = w / h
    assert aspect.min() > RATIO[0] * 0.98 and aspect.max() < RATIO[1] * 1.02
    # a strip no window of the asked share and aspect fits in: the centred window clamped to 4:3
    assert resized_crop_box(1000, 10, (0.9, 1.0), crop_rng(0, 0, 0)) == (493, 0, 506, 10)  # 13 = round(10 * 4 / 3) wide


def test_random_resized_train_crop_is_the_resized_window(images_dir):
    photo = Image.open(images_dir / "chelsea.png").convert("RGB")
    flips = []
    for index in range(20):
        out = train_crop(photo, 32, crop_rng(2, 1, index), scale=(0.5, 1.0))
        rng = crop_rng(2, 1, index)  # replay the draws: the box, then the coin
        box = resized_crop_box(*photo.size, (0.5, 1.0), rng)
        view = np.asarray(photo.resize((32, 32), Image.Resampling.BICUBIC, box=box))
        flip = rng.random() < 0.5
        assert np.array_equal(out.permute(1, 2, 0).numpy(), view[:, ::-1] if flip else view)
        flips.append(flip)
    assert 0 < sum(flips) < 20
    with pytest.raises(ValueError, match="crop scale"):
        train_crop(photo, 32, crop_rng(0, 0, 0), scale=(0.0, 1.0))
