"""`titok encode` and `titok decode` end to end on real photos, through an offline Hub cache."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from titok_cli.cli.app import app
from titok_cli.token_file import array_sha256

VQ = "golden/tok_vq_legacy_tiny"
VAE = "golden/tok_vae_tiny"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)


def library_roundtrip(model: str, inputs: list[Path]):
    """What the library gives for the same files: (names, tokens, uint8 pixels [N,S,S,3])."""
    import titok_cli
    from titok_cli.preprocess import iter_image_files, load_image, to_tensor

    tok = titok_cli.load_tokenizer(model)
    files = list(iter_image_files(inputs))
    x = to_tensor([load_image(path, tok.image_size) for path, _ in files])
    tokens = tok.encode(x)
    pixels = titok_cli.to_uint8(tok.decode(tokens)).numpy()
    return [name for _, name in files], tokens.numpy(), pixels


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.mark.parametrize("model, suffix", [(VQ, ".npy"), (VAE, ".npz")])
def test_roundtrip_reproduces_the_library(hub_cache, images_dir, tmp_path, model, suffix):
    out = tmp_path / f"tokens{suffix}"
    enc = run("encode", images_dir, "-o", out, "--model", model, "--device", "cpu")
    assert enc.exit_code == 0, enc.output
    names, tokens, pixels = library_roundtrip(model, [images_dir])
    shape = "16x16 latents" if model == VAE else "8 tokens"
    assert enc.stdout.strip() == f"{len(names)} images -> {out} ({shape} each), 0 failed"

    stored = np.load(out)["tokens"] if suffix == ".npz" else np.load(out)
    assert stored.dtype == (np.float32 if model == VAE else np.uint8)
    assert np.array_equal(stored, tokens)

    dec = run("decode", out, "-o", tmp_path / "decoded", "--device", "cpu", "--grid", tmp_path / "grid.png")
    assert dec.exit_code == 0, dec.output
    for name, expected in zip(names, pixels):
        assert np.array_equal(png(tmp_path / "decoded" / Path(name).with_suffix(".png")), expected), name
    grid = png(tmp_path / "grid.png")
    assert grid.shape[2] == 3 and grid.shape[0] > pixels.shape[1]


def test_manifest_and_json_summary(hub_cache, images_dir, tmp_path):
    out = tmp_path / "sub" / "tokens.npy"
    result = run("encode", images_dir / "chelsea.png", images_dir / "rocket.jpg", "-o", out, "--model", VQ,
                 "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["count"] == 2 and summary["failed"] == [] and summary["tokens_per_image"] == 8
    assert summary["model"]["repo"] == VQ
    manifest = [json.loads(line) for line in (tmp_path / "sub" / "tokens.npy.manifest.jsonl").read_text().splitlines()]
    header, rows = manifest[0], manifest[1:]
    assert header["model"]["repo"] == VQ and header["model"]["num_tokens"] == 8
    assert [r["path"] for r in rows] == ["chelsea.png", "rocket.jpg"]


def test_workers_give_the_same_file(hub_cache, images_dir, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert run("encode", images_dir, "-o", a, "--model", VQ, "--device", "cpu", "-b", "3").exit_code == 0
    assert run("encode", images_dir, "-o", b, "--model", VQ, "--device", "cpu", "-j", "2", "-q").exit_code == 0
    assert np.array_equal(np.load(a), np.load(b))


# -- bad inputs --------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


BAD = {
    "empty.png": "empty file",
    "nested/truncated.jpg": "truncated or corrupt image data",
    "text.png": "not an image (cannot identify format)",
    "huge.png": "image too large (30000 x 30000 pixels",
}
ODD_BUT_VALID = ("cmyk.jpg", "gray16.png", "nested/palette_alpha.png", "rotated.jpg")


@pytest.fixture()
def mixed_folder(images_dir, tmp_path) -> Path:
    """Two good photos, four broken files, four unusual but valid ones."""
    root = tmp_path / "mixed"
    (root / "nested").mkdir(parents=True)
    shutil.copy(images_dir / "chelsea.png", root / "chelsea.png")
    shutil.copy(images_dir / "rocket.jpg", root / "nested" / "rocket.jpg")
    (root / "empty.png").write_bytes(b"")
    data = (images_dir / "rocket.jpg").read_bytes()
    (root / "nested" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "text.png").write_text("this is not a picture\n")
    (root / "huge.png").write_bytes(_png_header_only(30000, 30000))
    with Image.open(images_dir / "chelsea.png") as im:
        im.convert("CMYK").save(root / "cmyk.jpg")
        im.convert("P").save(root / "nested" / "palette_alpha.png", transparency=0)
    with Image.open(images_dir / "camera.png") as im:
        Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257).save(root / "gray16.png")
    with Image.open(images_dir / "rocket.jpg") as im:
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
        im.save(root / "rotated.jpg", exif=exif)
    return root


def test_bad_files_are_reported_and_skipped(hub_cache, mixed_folder, tmp_path):
    out = tmp_path / "tokens.npz"
    result = run("encode", mixed_folder, "-o", out, "--model", VQ, "--device", "cpu")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    *found, summary = result.stderr.strip().splitlines()
    reported = dict(line.split(": ", 1) for line in found)  # each bad file as it is found ...
    assert set(reported) == set(BAD)
    for name, reason in BAD.items():
        assert reported[name].startswith(reason), (name, reported[name])
        assert f"{name} ({reason}" in summary  # ... and again in the closing summary
    assert summary.startswith(f"{len(BAD)} files failed: ") and summary.endswith(f"(all in {out}.manifest.jsonl)")
    good = 2 + len(ODD_BUT_VALID)
    assert result.stdout.strip() == f"{good} images -> {out} (8 tokens each), {len(BAD)} failed"

    from titok_cli.token_file import load_tokens

    tf = load_tokens(out)
    assert sorted(tf.names) == sorted(["chelsea.png", "nested/rocket.jpg", *ODD_BUT_VALID])
    assert sorted(f["path"] for f in tf.failures) == sorted(BAD)
    # the decoder writes the nested names back into sub-folders
    dec = run("decode", out, "-o", tmp_path / "dec", "--device", "cpu")
    assert dec.exit_code == 0, dec.output
    assert (tmp_path / "dec" / "nested" / "palette_alpha.png").is_file()


def test_exif_transpose_changes_only_rotated_files(hub_cache, mixed_folder, tmp_path):
    for f in BAD:
        (mixed_folder / f).unlink()
    plain, turned = tmp_path / "plain.npz", tmp_path / "turned.npz"
    assert run("encode", mixed_folder, "-o", plain, "--model", VQ, "--device", "cpu").exit_code == 0
    flags = ("--model", VQ, "--device", "cpu")
    assert run("encode", mixed_folder, "-o", turned, *flags, "--exif-transpose").exit_code == 0
    a, b = np.load(plain), np.load(turned)
    names = list(a["names"])
    differ = {n for n, x, y in zip(names, a["tokens"], b["tokens"]) if not np.array_equal(x, y)}
    assert differ == {"rotated.jpg"}


def test_strict_stops_and_writes_nothing(hub_cache, mixed_folder, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run("encode", mixed_folder, "-o", out_dir / "tokens.npy", "--model", VQ, "--device", "cpu", "--strict")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert any(name in result.stderr for name in BAD)
    assert list(out_dir.iterdir()) == []  # no token file, no manifest, no temporary file


def test_every_file_bad_writes_nothing(hub_cache, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a [red] :cat:.png").write_bytes(b"")  # printed verbatim: no rich markup, no emoji codes
    result = run("encode", folder, "-o", tmp_path / "t.npy", "--model", VQ, "--device", "cpu")
    assert result.exit_code == 1
    assert result.stderr == "a [red] :cat:.png: empty file\n1 file failed: a [red] :cat:.png (empty file)\n"
    assert "0 images -> nothing written" in result.stdout
    assert not (tmp_path / "t.npy").exists()


def test_missing_input_and_offline_model(hub_cache, images_dir, tmp_path):
    missing = run("encode", tmp_path / "nope", "-o", tmp_path / "t.npy", "--model", VQ, "--device", "cpu")
    assert missing.exit_code == 1 and "no such file or directory" in missing.stderr
    offline = run("encode", images_dir, "-o", tmp_path / "t.npy", "--device", "cpu")  # default titok-l32
    assert offline.exit_code == 1
    assert "not in the local Hugging Face cache" in offline.stderr and "--model" in offline.stderr


# -- malformed token files -----------------------------------------------------------------------


@pytest.fixture()
def token_file(hub_cache, images_dir, tmp_path) -> Path:
    out = tmp_path / "good" / "tokens.npy"
    result = run("encode", images_dir / "chelsea.png", images_dir / "coffee.png", "-o", out, "--model", VQ,
                 "--device", "cpu", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def _variant(token_file: Path, name: str, array=None, raw: bytes | None = None, header_edit=None) -> Path:
    folder = token_file.parent.parent / name
    folder.mkdir()
    target = folder / "tokens.npy"
    if raw is not None:
        target.write_bytes(raw)
    else:
        np.save(target, np.load(token_file) if array is None else array)
    lines = (token_file.parent / "tokens.npy.manifest.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    if raw is None:  # the manifest describes the new array (as one written for it would), so the
        stored = np.load(target)  # checks below are about the array against the model
        header["array"] = {"dtype": str(stored.dtype), "shape": list(stored.shape), "sha256": array_sha256(stored)}
    if header_edit is not None:
        header_edit(header)
    lines[0] = json.dumps(header)
    (folder / "tokens.npy.manifest.jsonl").write_text("\n".join(lines) + "\n")
    return target


def _other_model(header):
    header["model"].update(name="golden/tok_vq_tiny", repo="golden/tok_vq_tiny")


CASES = {
    "wrong_k": (dict(array=np.zeros((2, 4), np.uint8)), "rows have 4 tokens, the model needs 8"),
    "out_of_range": (dict(array=np.array([[0] * 7 + [300]] * 2, np.uint16)), "outside the codebook 0..255"),
    "float_ids": (dict(array=np.zeros((2, 8), np.float32)), "latents must be a 3-D float array"),
    "float_latents": (dict(array=np.zeros((2, 12, 8), np.float32)), "a VQ model needs integer token ids"),
    "garbage": (dict(raw=b"\x93NUMPY garbage \x00\xff" * 7), "not a readable .npy/.npz token file"),
    "other_model": (dict(header_edit=_other_model), "made with golden/tok_vq_tiny"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_token_files_are_refused(token_file, tmp_path, case):
    kwargs, message = CASES[case]
    bad = _variant(token_file, case, **kwargs)
    outdir = tmp_path / f"out_{case}"
    result = run("decode", bad, "-o", outdir, "--device", "cpu")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not outdir.exists()


def test_model_mismatch_with_explicit_model(token_file, tmp_path):
    result = run("decode", token_file, "-o", tmp_path / "out", "--model", VAE, "--device", "cpu")
    assert result.exit_code == 1
    assert "quantize_mode" in result.stderr and "golden/tok_vq_legacy_tiny" in result.stderr
    assert not (tmp_path / "out").exists()


def test_without_manifest_needs_model_and_names_rows(token_file, tmp_path):
    bare = tmp_path / "bare.npy"
    shutil.copy(token_file, bare)
    refused = run("decode", bare, "-o", tmp_path / "out", "--device", "cpu")
    assert refused.exit_code == 2 and "pass --model" in refused.stderr
    assert not (tmp_path / "out").exists()
    done = run("decode", bare, "-o", tmp_path / "out", "--model", VQ, "--device", "cpu")
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.png", "000001.png"]
    same = run("decode", token_file, "-o", tmp_path / "named", "--device", "cpu")
    assert np.array_equal(png(tmp_path / "out" / "000001.png"), png(tmp_path / "named" / "coffee.png")), same.output


def test_names_escaping_the_output_folder_are_refused(token_file, tmp_path):
    manifest = token_file.parent / "tokens.npy.manifest.jsonl"
    lines = manifest.read_text().splitlines()
    row = json.loads(lines[1])
    row["path"] = "../escape.jpg"
    lines[1] = json.dumps(row)
    manifest.write_text("\n".join(lines) + "\n")
    result = run("decode", token_file, "-o", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 1 and "refusing to write outside the output folder" in result.stderr
    assert result.stderr.startswith(f"error: {token_file}: row name '../escape.jpg'")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.png").exists()


def test_shards(hub_cache, images_dir, tmp_path):
    result = run("encode", images_dir, "-o", tmp_path / "t.npy", "--model", VQ, "--device", "cpu", "--shard-size", "3",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout)["outputs"]
    whole = library_roundtrip(VQ, [images_dir])[1]
    assert [Path(p).name for p in outputs] == [f"t-{i:06d}.npy" for i in range(len(outputs))]
    assert np.array_equal(np.concatenate([np.load(p) for p in outputs]), whole)
    dec = run("decode", outputs[-1], "-o", tmp_path / "last", "--device", "cpu")
    assert dec.exit_code == 0, dec.output


@pytest.mark.parametrize("model", [VQ, VAE])
def test_tar_shard_output_decodes_like_the_library(hub_cache, images_dir, tmp_path, model):
    out = tmp_path / "train.tar"
    enc = run("encode", images_dir, "-o", out, "--model", model, "--device", "cpu")
    assert enc.exit_code == 0, enc.output
    names, _, pixels = library_roundtrip(model, [images_dir])
    dec = run("decode", out, "-o", tmp_path / "decoded", "--device", "cpu")
    assert dec.exit_code == 0, dec.output
    for name, expected in zip(names, pixels):
        assert np.array_equal(png(tmp_path / "decoded" / Path(name).with_suffix(".png")), expected), name

    # a shard on its own (no manifest beside it): rows, names and tokens come from its members
    alone = tmp_path / "alone" / "train.tar"
    alone.parent.mkdir()
    shutil.copy(out, alone)
    dec = run("decode", alone, "-o", tmp_path / "alone_png", "--device", "cpu", "--model", model)
    assert dec.exit_code == 0, dec.output
    assert sorted(p.relative_to(tmp_path / "alone_png").as_posix() for p in (tmp_path / "alone_png").rglob("*.png")) \
        == sorted(Path(n).with_suffix(".png").as_posix() for n in names)


def test_broken_tar_shard_is_one_line_error(hub_cache, images_dir, tmp_path):
    out = tmp_path / "train.tar"
    assert run("encode", images_dir, "-o", out, "--model", VQ, "--device", "cpu").exit_code == 0
    raw = out.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(raw[:700])  # inside the first member's data
    result = run("decode", cut, "-o", tmp_path / "never", "--device", "cpu", "--model", VQ)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {cut}") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "never").exists()
