"""Make tests/data/lpips_ssim_reference.npz: LPIPS and SSIM from the reference packages.

Run once, in a throwaway environment that has the reference packages (see README.md, section "LPIPS and SSIM"):

    PYTHONPATH=$PWD /work/venv-lpips/bin/python tests/reference/make_lpips_ssim_reference.py

Pairs are real photos from ../shared/images, center-cropped with titok_cli's preprocessing,
against a degraded copy (JPEG, Gaussian blur, or the golden tok_vq_tiny reconstruction); the
degraded copies are stored (uint8) so the test needs neither Pillow's codecs nor the tokenizer to
agree bit for bit. LPIPS uses the lpips package on weights we can rebuild anywhere from a seed:
a He-normal VGG16 backbone and nonnegative heads (the real backbone cannot be downloaded here,
and no weight file goes into the repository). SSIM comes from scikit-image and pytorch-msssim.

The two weight builders below are imported by the test; they use only torch's CPU generator,
so they do not depend on the reference packages.
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = ROOT / "tests" / "data" / "lpips_ssim_reference.npz"

SEED_VGG = 2018
SEED_HEADS = 1801
# torchvision vgg16 `features`: (index in the Sequential, in channels, out channels) of each conv.
VGG16_CONVS = (
    (0, 3, 64), (2, 64, 64),
    (5, 64, 128), (7, 128, 128),
    (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (17, 256, 512), (19, 512, 512), (21, 512, 512),
    (24, 512, 512), (26, 512, 512), (28, 512, 512),
)  # fmt: skip
HEAD_CHANNELS = (64, 128, 256, 512, 512)

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
# 256 x 256 pairs cost a VGG16 pass each on CPU: keep them few. (photo, degradation)
PAIRS_256 = (("astronaut.png", "jpeg15"), ("chelsea.png", "blur2"))
KINDS_64 = ("recon", "jpeg20", "blur1")


def seeded_vgg16_state(seed: int = SEED_VGG) -> dict[str, torch.Tensor]:
    """torchvision-named `features.*` tensors: He-normal conv weights, small normal biases."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for idx, c_in, c_out in VGG16_CONVS:
        std = math.sqrt(2.0 / (c_in * 9))
        state[f"features.{idx}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=gen) * std
        state[f"features.{idx}.bias"] = torch.randn(c_out, generator=gen) * 0.01
    return state


def seeded_heads_state(seed: int = SEED_HEADS) -> dict[str, torch.Tensor]:
    """lpips-named head weights, uniform in [0, 0.2) (the real ones are nonnegative, mean ~0.09)."""
    gen = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) * 0.2 for i, c in enumerate(HEAD_CHANNELS)}


def photo_paths(images: Path) -> list[Path]:
    return sorted(p for p in images.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def crop_uint8(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8 crop exactly as titok_cli feeds a model."""
    from titok_cli.preprocess import load_image

    return np.asarray(load_image(path, size), dtype=np.uint8).copy()


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()


def to_float(batch: np.ndarray, dtype=np.float32) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray((batch.astype(dtype) / dtype(255.0)).transpose(0, 3, 1, 2)))


def degrade(img: np.ndarray, kind: str) -> np.ndarray:
    from PIL import Image, ImageFilter

    pil = Image.fromarray(img)
    if kind.startswith("jpeg"):
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(kind[4:]))
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8).copy()
    if kind.startswith("blur"):
        return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=int(kind[4:]))), dtype=np.uint8).copy()
    raise ValueError(kind)


def reconstruct(images: np.ndarray) -> np.ndarray:
    """Golden tok_vq_tiny encode + decode of uint8 crops, back to uint8 as titok saves PNGs."""
    import titok_cli
    from titok_cli.models.tokenizer import to_uint8

    tok = titok_cli.load_tokenizer(SHARED / "golden" / "tok_vq_tiny")
    with torch.no_grad():
        return to_uint8(tok.decode(tok.encode(to_float(images)))).numpy()


def reference_lpips(heads_path: str | None, vgg: dict[str, torch.Tensor]):
    """The lpips package's LPIPS-VGG v0.1 with our seeded backbone and the given heads file."""
    import lpips

    kwargs = {} if heads_path is None else {"model_path": heads_path}  # None: the shipped vgg.pth
    ref = lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False, **kwargs)
    slice_of = {}
    for s, (lo, hi) in enumerate(((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)), start=1):
        slice_of.update({i: s for i in range(lo, hi)})
    full = {k: v.clone() for k, v in ref.state_dict().items() if not k.startswith("net.")}
    for key, value in vgg.items():
        _, idx, name = key.split(".")
        full[f"net.slice{slice_of[int(idx)]}.{idx}.{name}"] = value
    ref.load_state_dict(full, strict=True)
    return ref.eval()


def lpips_of(ref, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return ref(to_float(a), to_float(b), normalize=True).flatten().double().numpy()


def ssim_skimage(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    out = []
    for x, y in zip(a, b):
        x64, y64 = x.astype(np.float64) / 255.0, y.astype(np.float64) / 255.0
        out.append(
            structural_similarity(
                x64, y64, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2
            )
        )
    return np.array(out, dtype=np.float64)


def ssim_msssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from pytorch_msssim import ssim

    x, y = to_float(a, np.float64), to_float(b, np.float64)
    return ssim(x, y, data_range=1.0, size_average=False).double().numpy()


def import_torchvision():
    """Import torchvision; on a CPU-only torch with the CUDA torchvision wheel (the only one the
    package index here offers), its compiled ops cannot load and torchvision >= 0.28 then fails
    on `register_fake("torchvision::nms")`. Declaring the two op schemas it expects lets the
    pure-Python parts (models.vgg16, all lpips needs) import; no op is ever called."""
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    return torchvision


def versions() -> str:
    from importlib.metadata import version

    names = ("torch", "torchvision", "lpips", "scikit-image", "scipy", "pytorch-msssim", "numpy", "pillow")
    return " ".join(f"{n}=={version(n)}" for n in names) + f" python=={sys.version.split()[0]}"


def check_key_names(vgg: dict[str, torch.Tensor]) -> tuple[list[str], list[list[int]], list[str], list[list[int]]]:
    """torchvision's and the shipped lpips file's key names and shapes; asserts the seeded ones match."""
    import lpips
    import torchvision

    tv = torchvision.models.vgg16(weights=None).state_dict()
    tv_features = {k: v for k, v in tv.items() if k.startswith("features.")}
    assert {k: tuple(v.shape) for k, v in tv_features.items()} == {k: tuple(v.shape) for k, v in vgg.items()}
    shipped = torch.load(Path(lpips.__file__).parent / "weights/v0.1/vgg.pth", map_location="cpu", weights_only=True)
    heads = seeded_heads_state()
    assert {k: tuple(v.shape) for k, v in shipped.items()} == {k: tuple(v.shape) for k, v in heads.items()}
    return (
        list(tv),
        [list(v.shape) for v in tv.values()],
        list(shipped),
        [list(v.shape) for v in shipped.values()],
    )


def check_ours(vgg, x: np.ndarray, y: np.ndarray) -> None:
    """Local only (the shipped heads and torchvision are not in CI): our module loads torchvision's
    full VGG16 state dict and the shipped vgg.pth strictly, and agrees with lpips on them."""
    import lpips
    import torchvision

    from titok_cli.quality.lpips import LPIPS

    shipped = Path(lpips.__file__).parent / "weights/v0.1/vgg.pth"
    tv = torchvision.models.vgg16(weights=None).state_dict()  # with classifier.* keys
    tv.update(vgg)
    ours = LPIPS.from_state_dicts(tv, torch.load(shipped, map_location="cpu", weights_only=True))
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(tv, Path(tmp) / "vgg16.pth")
        ours_files = LPIPS.from_files(Path(tmp) / "vgg16.pth", shipped)
    ref = reference_lpips(None, vgg)
    want = lpips_of(ref, x, y)
    with torch.no_grad():
        got = ours(to_float(x), to_float(y)).double().numpy()
        got_files = ours_files(to_float(x), to_float(y)).double().numpy()
    print(f"check with the shipped heads: lpips {want.round(5)}, ours max |diff| {np.abs(got - want).max():.2e}")
    assert np.abs(got - want).max() < 1e-4 and np.array_equal(got, got_files)


def main() -> None:
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: the photos and golden tokenizer are needed")
    import_torchvision()
    paths = photo_paths(SHARED / "images")
    vgg, heads = seeded_vgg16_state(), seeded_heads_state()

    # 64 x 64: every photo against its reconstruction, a JPEG and a blurred copy.
    crops64 = np.stack([crop_uint8(p, 64) for p in paths])  # (P, 64, 64, 3)
    recon = reconstruct(crops64)
    names64, kinds64, src64, deg64 = [], [], [], []
    for i, p in enumerate(paths):
        for kind in KINDS_64:
            names64.append(p.name)
            kinds64.append(kind)
            src64.append(crops64[i])
            deg64.append(recon[i] if kind == "recon" else degrade(crops64[i], kind))
    src64, deg64 = np.stack(src64), np.stack(deg64)

    # 256 x 256: a few pairs where the full-size VGG path matters.
    names256 = [n for n, _ in PAIRS_256]
    kinds256 = [k for _, k in PAIRS_256]
    src256 = np.stack([crop_uint8(SHARED / "images" / n, 256) for n in names256])
    deg256 = np.stack([degrade(s, k) for s, k in zip(src256, kinds256)])

    with tempfile.TemporaryDirectory() as tmp:
        heads_file = str(Path(tmp) / "heads.pth")
        torch.save(heads, heads_file)
        ref = reference_lpips(heads_file, vgg)
        lp64, lp256 = lpips_of(ref, src64, deg64), lpips_of(ref, src256, deg256)

    tv_keys, tv_shapes, head_keys, head_shapes = check_key_names(vgg)
    out = {
        "versions": np.array(versions()),
        "seed_vgg": np.array(SEED_VGG),
        "seed_heads": np.array(SEED_HEADS),
        "torchvision_vgg16_keys": np.array(tv_keys),
        "torchvision_vgg16_shapes": np.array([",".join(map(str, s)) for s in tv_shapes]),
        "lpips_head_keys": np.array(head_keys),
        "lpips_head_shapes": np.array([",".join(map(str, s)) for s in head_shapes]),
    }
    for tag, names, kinds, src, deg, lp in (
        ("64", names64, kinds64, src64, deg64, lp64),
        ("256", names256, kinds256, src256, deg256, lp256),
    ):
        out[f"names{tag}"] = np.array(names)
        out[f"kinds{tag}"] = np.array(kinds)
        out[f"source_sha256_{tag}"] = np.array([sha256(s) for s in src])
        out[f"degraded{tag}"] = deg
        out[f"lpips{tag}"] = lp
        out[f"ssim_skimage{tag}"] = ssim_skimage(src, deg)
        out[f"ssim_msssim{tag}"] = ssim_msssim(src, deg)
        print(f"{tag}: lpips {lp.round(4)}")
        print(f"{tag}: ssim skimage {out[f'ssim_skimage{tag}'].round(4)}")
        print(f"{tag}: skimage vs pytorch-msssim max |diff| {np.abs(out[f'ssim_skimage{tag}'] - out[f'ssim_msssim{tag}']).max():.2e}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes); {versions()}")
    check_ours(vgg, src256, deg256)


if __name__ == "__main__":
    main()
