"""LPIPS-VGG and SSIM against the lpips package, scikit-image and pytorch-msssim.

The reference values in tests/data/lpips_ssim_reference.npz were made by
tests/reference/make_lpips_ssim_reference.py (how: tests/reference/README.md) on real photos
cropped by titok_cli and degraded copies stored beside them; LPIPS weights are rebuilt here from
the same seeds. Measured when written (CPU): LPIPS within 1.5e-8 of lpips; float32 SSIM within
2.6e-6 of scikit-image (float64) and 2.0e-6 of pytorch-msssim; the bound asserted is 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from titok_cli.errors import CheckpointError
from titok_cli.preprocess import load_image
from titok_cli.quality.lpips import LPIPS
from titok_cli.quality.ssim import gaussian_window, ssim, ssim_map

from .conftest import ROOT
from .reference.make_lpips_ssim_reference import (
    seeded_heads_state,
    seeded_vgg16_state,
    sha256,
    to_float,
)

DATA = ROOT / "tests" / "data" / "lpips_ssim_reference.npz"
ATOL = 1e-4
TAGS = ("64", "256")


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(DATA, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def pairs(ref, images_dir) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per size: (photo crops, stored degraded copies), float32 (P, 3, S, S) in [0, 1]."""
    out = {}
    for tag in TAGS:
        src = np.stack([np.asarray(load_image(images_dir / n, int(tag)), dtype=np.uint8) for n in ref[f"names{tag}"]])
        # The reference ran on these exact pixels; a mismatch means the photos or the crop changed.
        assert [sha256(s) for s in src] == list(ref[f"source_sha256_{tag}"]), f"{tag}px crops differ from the reference's"
        out[tag] = (to_float(src), to_float(ref[f"degraded{tag}"]))
    return out


@pytest.fixture(scope="module")
def model(ref) -> LPIPS:
    return LPIPS.from_state_dicts(seeded_vgg16_state(int(ref["seed_vgg"])), seeded_heads_state(int(ref["seed_heads"])))


@pytest.mark.parametrize("tag", TAGS)
def test_lpips_matches_the_lpips_package(model, ref, pairs, tag):
    x, y = pairs[tag]
    with torch.no_grad():
        got = model(x, y).double().numpy()  # (P,)
    want = ref[f"lpips{tag}"]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= ATOL, f"max |diff| {np.abs(got - want).max():.3g}"
    assert (want > 1e-3).all()  # every pair differs visibly: the comparison is not of zeros


@pytest.mark.parametrize("tag", TAGS)
def test_ssim_matches_scikit_image_and_pytorch_msssim(ref, pairs, tag):
    x, y = pairs[tag]
    got = ssim(x, y).double().numpy()  # float32 computation, (P,)
    for name in ("ssim_skimage", "ssim_msssim"):
        want = ref[f"{name}{tag}"]
        assert np.abs(got - want).max() <= ATOL, f"{name}: max |diff| {np.abs(got - want).max():.3g}"
    assert (ref[f"ssim_skimage{tag}"] < 0.95).all()  # every pair differs: the comparison is not of ones


def test_identical_images(model, pairs):
    x = pairs["64"][0][:4]
    with torch.no_grad():
        assert model(x, x.clone()).abs().max().item() == 0.0
    assert torch.allclose(ssim(x, x.clone()), torch.ones(4), atol=1e-6)


def test_lpips_refuses_what_it_cannot_compare(model):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="float images"):
        model((x * 255).to(torch.uint8), x)
    with pytest.raises(ValueError, match="one shape"):
        model(x, x[..., :16])


def test_layer_distances_sum_to_forward(model, pairs):
    x, y = (t[:3] for t in pairs["64"])
    with torch.no_grad():
        layers, total = model.layer_distances(x, y), model(x, y)
    assert layers.shape == (3, 5) and (layers > 0).all()
    assert torch.allclose(layers.sum(dim=1), total)


def test_lpips_is_differentiable(model, pairs):
    x, y = (t[:2] for t in pairs["64"])
    x = x.clone().requires_grad_(True)
    d = model(x, y)  # (2,)
    d.sum().backward()
    assert d.requires_grad and x.grad is not None
    assert not any(p.requires_grad for p in model.parameters())  # frozen weights, gradient to the input
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum().item() > 0
    # Gradient steps shrink the distance: the gradient is the one of this function.
    with torch.no_grad():
        after = model(x - 1e-2 * x.grad / x.grad.abs().max(), y)
    assert (after < d.detach()).all()


def test_ssim_is_differentiable(pairs):
    x, y = (t[:2] for t in pairs["64"])
    x = x.clone().requires_grad_(True)
    ssim(x, y).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum().item() > 0


def test_key_names_are_torchvisions_and_lpips(ref):
    m = LPIPS()
    tv = dict(zip(ref["torchvision_vgg16_keys"], ref["torchvision_vgg16_shapes"]))
    ours = {k: ",".join(map(str, v.shape)) for k, v in m.backbone.state_dict().items()}
    assert ours == {k: s for k, s in tv.items() if k.startswith("features.")}
    heads = {k: ",".join(map(str, v.shape)) for k, v in m.heads.state_dict().items()}
    assert heads == dict(zip(ref["lpips_head_keys"], ref["lpips_head_shapes"]))
    assert set(m.state_dict()) == {f"backbone.{k}" for k in ours} | {f"heads.{k}" for k in heads}


def test_strict_loading(ref):
    vgg, heads = seeded_vgg16_state(), seeded_heads_state()
    # torchvision's full file: classifier keys (any shape) are dropped by name, features load strictly.
    full = dict(vgg)
    full.update({k: torch.zeros(1) for k in ref["torchvision_vgg16_keys"] if k.startswith("classifier.")})
    m = LPIPS.from_state_dicts(full, heads)
    assert torch.equal(m.backbone.features[28].bias, vgg["features.28.bias"])
    assert torch.equal(m.heads.lin4.model[1].weight, heads["lin4.model.1.weight"])
    missing = {k: v for k, v in vgg.items() if k != "features.14.weight"}
    with pytest.raises(CheckpointError, match=r"1 missing: features\.14\.weight"):
        LPIPS.from_state_dicts(missing, heads)
    with pytest.raises(CheckpointError, match=r"1 unexpected: features\.30\.weight"):
        LPIPS.from_state_dicts({**vgg, "features.30.weight": torch.zeros(1)}, heads)
    with pytest.raises(CheckpointError, match=r"wrong shape: lin2\.model\.1\.weight"):
        LPIPS.from_state_dicts(vgg, {**heads, "lin2.model.1.weight": torch.zeros(1, 64, 1, 1)})
    with pytest.raises(CheckpointError, match="no 'features"):
        LPIPS.from_state_dicts(heads, heads)


def test_from_files(tmp_path, model, pairs):
    from safetensors.torch import save_file

    vgg, heads = tmp_path / "vgg16.pth", tmp_path / "vgg.safetensors"
    torch.save({k: v.clone() for k, v in model.backbone.state_dict().items()}, vgg)
    save_file({k: v.contiguous() for k, v in model.heads.state_dict().items()}, str(heads))
    loaded = LPIPS.from_files(vgg, heads)
    x, y = (t[:2] for t in pairs["64"])
    with torch.no_grad():
        assert torch.equal(loaded(x, y), model(x, y))
    with pytest.raises(CheckpointError, match="no such file"):
        LPIPS.from_files(tmp_path / "absent.pth", heads)


def test_gaussian_window_and_valid_region():
    g = gaussian_window()
    d = np.arange(11) - 5.0
    want = np.exp(-(d**2) / (2 * 1.5**2))
    assert np.allclose(g.numpy(), want / want.sum(), rtol=0, atol=1e-15)
    x = torch.rand(1, 3, 20, 31, generator=torch.Generator().manual_seed(0))
    assert ssim_map(x, x * 0.5).shape == (1, 3, 10, 21)
    with pytest.raises(ValueError, match="at least 11 x 11"):
        ssim(x[..., :10], x[..., :10])
