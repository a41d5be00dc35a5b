"""Preprocessing: bit-exact ADM center crop, float conversion, robust file loading, folder scans."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from titok_cli import preprocess
from titok_cli.errors import ImageError
from titok_cli.preprocess import (
    IMAGE_EXTENSIONS,
    center_crop,
    iter_image_files,
    load_image,
    to_tensor,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGES = SHARED / "images"
GOLDEN = SHARED / "golden"

needs_shared = pytest.mark.skipif(
    not (IMAGES.is_dir() and (GOLDEN / "preprocess").is_dir()),
    reason=f"golden data not found at {SHARED} (expected ../shared next to the repo)",
)

FILES = {
    "ILSVRC2012_val_00008636": "ILSVRC2012_val_00008636.png",
    "ILSVRC2012_val_00010240": "ILSVRC2012_val_00010240.png",
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "camera": "camera.png",
    "rocket": "rocket.jpg",
}
SIZES = (64, 256, 512)


@pytest.fixture(scope="module")
def golden_crops() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / "preprocess" / "preprocess.safetensors"))


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


# ----------------------------------------------------------------- center_crop / to_tensor


@needs_shared
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stem", sorted(FILES))
def test_center_crop_matches_golden(
    golden_crops: dict[str, torch.Tensor], stem: str, size: int
) -> None:
    expected = golden_crops[f"{stem}_{size}"].numpy()
    with Image.open(IMAGES / FILES[stem]) as img:
        out = center_crop(img, size)
    assert out.mode == "RGB" and out.size == (size, size)
    np.testing.assert_array_equal(_pixels(out), expected)
    # load_image takes the same path by default.
    np.testing.assert_array_equal(_pixels(load_image(IMAGES / FILES[stem], size)), expected)


def test_golden_covers_all_keys() -> None:
    if not (GOLDEN / "preprocess").is_dir():
        pytest.skip(f"golden data not found at {SHARED}")
    from safetensors import safe_open

    with safe_open(str(GOLDEN / "preprocess" / "preprocess.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys == {f"{stem}_{size}" for stem in FILES for size in SIZES}


@needs_shared
def test_to_tensor_matches_golden_model_input() -> None:
    from safetensors.torch import load_file

    io_path = GOLDEN / "tok_vq_legacy_tiny" / "io.safetensors"
    if not io_path.is_file():
        pytest.skip(f"{io_path} not found")
    expected = load_file(str(io_path))["images"][0:2]
    photos = ("ILSVRC2012_val_00008636", "ILSVRC2012_val_00010240")  # rows 0 and 1
    crops = [load_image(IMAGES / FILES[s], 64) for s in photos]
    batch = to_tensor(crops)
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 64, 64)
    assert batch.is_contiguous()
    assert torch.equal(batch, expected)  # bitwise
    single = to_tensor(crops[1])
    assert single.shape == (3, 64, 64)
    assert torch.equal(single, expected[1])


def test_to_tensor_range_and_errors() -> None:
    img = Image.fromarray(np.array([[[0, 128, 255]]], dtype=np.uint8))
    t = to_tensor(img)
    assert t.shape == (3, 1, 1)
    assert t.flatten().tolist() == [0.0, np.float32(128) / np.float32(255), 1.0]
    with pytest.raises(ValueError):
        to_tensor([])
    with pytest.raises(ValueError):
        to_tensor([Image.new("RGB", (2, 2)), Image.new("RGB", (3, 3))])


def test_center_crop_rejects_bad_size() -> None:
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            center_crop(Image.new("RGB", (8, 8)), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F", "I;16", "I;16B"]
)
def test_center_crop_any_mode_gives_rgb(mode: str) -> None:
    gradient = np.tile(np.arange(0, 200, dtype=np.uint8), (150, 1))  # 200 x 150, values 0..199
    base = Image.fromarray(gradient, "L")
    if mode == "I;16":
        img = Image.fromarray(gradient.astype(np.uint16) * 257)
    elif mode == "I;16B":
        img = Image.fromarray((gradient.astype(np.uint16) * 257).astype(">u2"))
    else:
        img = base.convert(mode)
    assert img.mode == mode
    out = center_crop(img, 32)
    assert out.mode == "RGB" and out.size == (32, 32)
    if mode in ("L", "LA", "RGB", "RGBA", "I", "F", "I;16", "I;16B"):
        # all of these carry the same gray levels, so they must crop to the same pixels
        np.testing.assert_array_equal(_pixels(out), _pixels(center_crop(base, 32)))


# ----------------------------------------------------------------- load_image: bad files


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _png_with_header_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to claim another size (with a correct CRC)."""
    data = bytearray(_png_bytes(Image.new("RGB", (4, 4), (10, 20, 30))))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _expect_image_error(path: Path, reason_part: str, **kwargs: object) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(path, 64, **kwargs)  # type: ignore[arg-type]
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    assert reason_part in info.value.reason
    return info.value


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _expect_image_error(path, "empty file")


@needs_shared
def test_truncated_jpeg(tmp_path: Path) -> None:
    data = (IMAGES / "rocket.jpg").read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    _expect_image_error(path, "truncated or corrupt image data")
    assert ImageFile.LOAD_TRUNCATED_IMAGES == before


def test_truncated_png(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    data = _png_bytes(Image.fromarray(noise))
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    _expect_image_error(path, "truncated or corrupt image data")


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    _expect_image_error(path, "not an image (cannot identify format)")


def test_decompression_bomb_rejected_from_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header_size(30000, 30000))
    err = _expect_image_error(path, "image too large")
    assert f"30000 x 30000 pixels, limit {preprocess.MAX_PIXELS}" in err.reason


def test_own_pixel_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    path.write_bytes(_png_bytes(Image.new("RGB", (40, 30))))
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 1000)
    err = _expect_image_error(path, "image too large")
    assert err.reason == "image too large (40 x 30 pixels, limit 1000)"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _expect_image_error(tmp_path / "nope.png", "no such file or directory")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    _expect_image_error(folder, "is a directory")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything"
)
def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    path.write_bytes(_png_bytes(Image.new("RGB", (4, 4))))
    path.chmod(0)
    try:
        _expect_image_error(path, "permission denied")
    finally:
        path.chmod(0o600)


# ----------------------------------------------------------------- load_image: unusual files


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    if not IMAGES.is_dir():
        pytest.skip(f"test images not found at {IMAGES}")
    with Image.open(IMAGES / "chelsea.png") as img:
        return img.convert("RGB")  # 451 x 300, landscape


def _check_rgb(img: Image.Image, size: int = 64) -> None:
    assert img.mode == "RGB" and img.size == (size, size)


def test_cmyk_jpeg(tmp_path: Path, chelsea: Image.Image) -> None:
    path = tmp_path / "cmyk.jpg"
    chelsea.convert("CMYK").save(path, quality=95)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    out = load_image(path, 64)
    _check_rgb(out)
    ref = center_crop(chelsea, 64)
    assert np.abs(_pixels(out).astype(int) - _pixels(ref).astype(int)).mean() < 8


@needs_shared
def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    with Image.open(IMAGES / "camera.png") as cam:
        gray = np.asarray(cam)
        ref = center_crop(cam, 64)
    path = tmp_path / "camera16.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I;16"
        # Why we deviate from a bare convert("RGB"): Pillow clips 16-bit values at 255.
        assert np.asarray(raw.convert("RGB")).mean() > 250
    out = load_image(path, 64)
    _check_rgb(out)
    diff = np.abs(_pixels(out).astype(int) - _pixels(ref).astype(int))
    assert diff.mean() < 2
    assert diff.max() == 0  # (v * 257) >> 8 == v


def test_palette_png_with_transparency(tmp_path: Path, chelsea: Image.Image) -> None:
    pal = chelsea.convert("P")
    path = tmp_path / "pal.png"
    pal.save(path, transparency=bytes([0] * 8 + [255] * 248))
    with Image.open(path) as raw:
        assert raw.mode == "P" and isinstance(raw.info.get("transparency"), bytes)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = load_image(path, 64)
    _check_rgb(out)
    np.testing.assert_array_equal(_pixels(out), _pixels(center_crop(pal.convert("RGB"), 64)))


def test_rgba_png_drops_alpha(tmp_path: Path, chelsea: Image.Image) -> None:
    rgba = chelsea.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(chelsea.size))
    path = tmp_path / "rgba.png"
    rgba.save(path)
    out = load_image(path, 64)
    _check_rgb(out)
    np.testing.assert_array_equal(_pixels(out), _pixels(center_crop(chelsea, 64)))


def test_grayscale_jpeg(tmp_path: Path, chelsea: Image.Image) -> None:
    path = tmp_path / "gray.jpg"
    chelsea.convert("L").save(path)
    out = load_image(path, 48)
    _check_rgb(out, 48)
    px = _pixels(out)
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()


def test_exif_orientation_ignored_by_default(tmp_path: Path, chelsea: Image.Image) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: display rotated 90 degrees clockwise
    chelsea.save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        stored = raw.convert("RGB")
    assert stored.size == (451, 300)
    default = load_image(path, 64)
    np.testing.assert_array_equal(_pixels(default), _pixels(center_crop(stored, 64)))
    turned = load_image(path, 64, exif_transpose=True)
    np.testing.assert_array_equal(
        _pixels(turned), _pixels(center_crop(stored.transpose(Image.Transpose.ROTATE_270), 64))
    )
    assert not np.array_equal(_pixels(default), _pixels(turned))


def test_gif_uses_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (80, 60), color) for color in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as raw:
        assert raw.n_frames == 2
    out = load_image(path, 32)
    _check_rgb(out, 32)
    assert (_pixels(out) == np.array([255, 0, 0], dtype=np.uint8)).all()


# ----------------------------------------------------------------- iter_image_files


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_iter_image_files(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for rel in (
        "b.png",
        "a.JPG",
        "c.txt",
        "notes.md",
        ".hidden.png",
        ".cache/x.png",
        "sub/z.webp",
        "sub/deeper/y.tiff",
        "sub2/k.gif",
        "a_dir/m.bmp",
    ):
        _touch(root / rel)
    loose = tmp_path / "readme.txt"
    _touch(loose)

    # one folder: names relative to it
    assert [name for _, name in iter_image_files([root])][:3] == ["a.JPG", "a_dir/m.bmp", "b.png"]
    # several inputs: names relative to their common parent, so sources stay distinguishable
    pairs = list(iter_image_files([root, str(loose)]))
    names = [name for _, name in pairs]
    assert names == [
        "photos/a.JPG",
        "photos/a_dir/m.bmp",
        "photos/b.png",
        "photos/sub/deeper/y.tiff",
        "photos/sub/z.webp",
        "photos/sub2/k.gif",
        "readme.txt",  # given explicitly: kept so the encoder can report it
    ]
    for path, name in pairs:
        assert path.is_absolute() and path.is_file()
        assert path == tmp_path / name
    assert pairs[-1][0] == loose
    # deterministic
    assert list(iter_image_files([root, loose])) == pairs


def test_iter_image_files_relative_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path / "dir" / "one.png")
    _touch(tmp_path / "two.jpeg")
    monkeypatch.chdir(tmp_path)
    pairs = list(iter_image_files(["two.jpeg", "dir", Path("./dir/one.png")]))
    assert [name for _, name in pairs] == ["two.jpeg", "dir/one.png", "dir/one.png"]
    assert [name for _, name in iter_image_files(["dir/one.png"])] == ["one.png"]
    assert all(path.is_absolute() for path, _ in pairs)
    expected = [tmp_path / "two.jpeg", tmp_path / "dir" / "one.png", tmp_path / "dir" / "one.png"]
    assert [path.resolve() for path, _ in pairs] == [p.resolve() for p in expected]


def test_iter_image_files_missing_path(tmp_path: Path) -> None:
    _touch(tmp_path / "ok.png")
    missing = tmp_path / "missing"
    with pytest.raises(ImageError) as info:
        list(iter_image_files([tmp_path / "ok.png", missing]))
    assert info.value.path == str(missing)
    assert info.value.reason == "no such file or directory"


def test_image_extensions() -> None:
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


# ----------------------------------------------------------------- wide modes: scaled or refused, never silently wrong

_GRAY = np.tile(np.arange(0, 200, dtype=np.uint8), (150, 1))  # 200 x 150, values 0..199


def _tiff(tmp_path: Path, name: str, array: np.ndarray) -> Path:
    path = tmp_path / name
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize(
    "mode", ["1", "L", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV"]
)
def test_eight_bit_modes_match_plain_convert(mode: str) -> None:
    """Every 8-bit mode takes exactly the reference's convert("RGB"), byte for byte."""
    noise = np.random.default_rng(1).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    img = Image.fromarray(noise).convert(mode)
    expected = center_crop(img.convert("RGB"), 32)
    np.testing.assert_array_equal(_pixels(center_crop(img, 32)), _pixels(expected))


def test_float_tiff_in_unit_range_is_scaled(tmp_path: Path) -> None:
    path = _tiff(tmp_path, "unit.tif", _GRAY.astype(np.float32) / np.float32(255))
    with Image.open(path) as raw:
        assert raw.mode == "F"
        assert np.asarray(raw.convert("RGB")).max() <= 1  # why: a bare convert gives a black image
    out = load_image(path, 32)
    np.testing.assert_array_equal(_pixels(out), _pixels(center_crop(Image.fromarray(_GRAY), 32)))


def test_float_tiff_in_byte_range_is_converted_as_the_reference(tmp_path: Path) -> None:
    path = _tiff(tmp_path, "bytes.tif", _GRAY.astype(np.float32) + np.float32(0.25))
    with Image.open(path) as raw:
        expected = center_crop(raw.convert("RGB"), 32)
    np.testing.assert_array_equal(_pixels(load_image(path, 32)), _pixels(expected))


@pytest.mark.parametrize(
    ("name", "array", "reason"),
    [
        ("big.tif", _GRAY.astype(np.float32) * 1000, "float image with values outside 0..1 and 0..255 (min 0, max 199000)"),
        ("negative.tif", _GRAY.astype(np.float32) - 1, "float image with values outside 0..1 and 0..255 (min -1, max 198)"),
        ("nan.tif", np.where(_GRAY == 5, np.nan, _GRAY).astype(np.float32), "float image with NaN or infinite values"),
        ("signed.tif", _GRAY.astype(np.int32) - 100, "32-bit integer image with negative values (min -100, max 99)"),
    ],
)
def test_pixel_values_of_unknown_range_are_refused(tmp_path: Path, name: str, array: np.ndarray, reason: str) -> None:
    _expect_image_error(_tiff(tmp_path, name, array), reason)


@pytest.mark.parametrize(("scale", "bits"), [(1, 8), (257, 16), (1 << 16, 24), (1 << 23, 31)])
def test_int32_images_are_scaled_by_their_bit_range(tmp_path: Path, scale: int, bits: int) -> None:
    path = _tiff(tmp_path, f"i{bits}.tif", _GRAY.astype(np.int32) * scale)
    with Image.open(path) as raw:
        assert raw.mode == "I"
        if bits > 8:
            assert np.asarray(raw.convert("RGB")).mean() > 250  # a bare convert: nearly white
    np.testing.assert_array_equal(_pixels(load_image(path, 32)), _pixels(center_crop(Image.fromarray(_GRAY), 32)))


def test_sixteen_bit_tiff_is_scaled(tmp_path: Path) -> None:
    path = _tiff(tmp_path, "g16.tif", _GRAY.astype(np.uint16) * 257)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I;16")
    np.testing.assert_array_equal(_pixels(load_image(path, 32)), _pixels(center_crop(Image.fromarray(_GRAY), 32)))


# ----------------------------------------------------------------- special files: refused before any read


def _load_in_thread(path: Path) -> BaseException | None:
    """load_image on a thread: a FIFO opened the naive way would block forever."""
    import threading

    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            load_image(path, 32)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), f"load_image({path}) blocked"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_named_like_an_image_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    error = _load_in_thread(fifo)
    assert isinstance(error, ImageError) and error.reason == "not a regular file (a named pipe)"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_character_device_is_refused() -> None:
    error = _load_in_thread(Path("/dev/zero"))
    assert isinstance(error, ImageError) and error.reason == "not a regular file (a character device)"


def test_broken_and_looping_links(tmp_path: Path) -> None:
    (tmp_path / "dangling.png").symlink_to("gone.png")
    (tmp_path / "loop.png").symlink_to("loop.png")
    _expect_image_error(tmp_path / "dangling.png", "broken symbolic link (its target gone.png does not exist)")
    _expect_image_error(tmp_path / "loop.png", "symbolic link loop")
    # named explicitly, they are missing inputs, worded the same way
    for name, reason in (("dangling.png", "broken symbolic link"), ("loop.png", "symbolic link loop")):
        with pytest.raises(ImageError) as info:
            list(iter_image_files([tmp_path / name]))
        assert reason in info.value.reason


def test_walk_yields_bad_entries_named_like_images(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _touch(root / "a.png")
    _touch(root / "folder.jpg" / "inner.png")  # a real folder named like an image is entered
    (root / "dangling.png").symlink_to("gone.png")
    (root / "loop.jpg").symlink_to("loop.jpg")
    (root / "dangling.txt").symlink_to("gone.txt")  # not an image name: ignored like any .txt
    elsewhere = tmp_path / "elsewhere"
    _touch(elsewhere / "x.png")
    (root / "linked_dir").symlink_to(elsewhere, target_is_directory=True)  # not entered
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe.png")
    names = [name for _, name in iter_image_files([root])]
    expected = ["a.png", "dangling.png", "folder.jpg/inner.png", "loop.jpg"]
    if hasattr(os, "mkfifo"):
        expected.append("pipe.png")
    assert names == expected
