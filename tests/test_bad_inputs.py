"""The bad-input corpus: hostile or broken images and out-of-range flags, each run through `titok`.

Every case goes through `run_app`, the real entry point of the `titok` command, in process, and
checks what a user sees: the exit code (1 for a failure, 2 for a usage error), stderr as one line
starting with `error:` that names the file or flag, and nothing left behind (no token file, no
manifest, no `.partial` scratch). Token-file and checkpoint cases live in their own test files.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from titok_cli.cli.app import app
from titok_cli.cli.failures import run_app

from .conftest import GOLDEN, IMAGES

TOK = GOLDEN / "tok_vq_legacy_tiny"
GEN = GOLDEN / "gen_vit_tiny"


@pytest.fixture(autouse=True)
def _needs_golden(golden, images_dir, monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def titok(capsys: pytest.CaptureFixture[str], *args: object) -> Result:
    """Run `titok ARGS` exactly as the console script does and capture what it prints."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_app(app, [str(a) for a in args])
    captured = capsys.readouterr()
    code = info.value.code
    return Result(code if isinstance(code, int) else (0 if code is None else 1), captured.out, captured.err)


def leftovers(root: Path, *keep: Path) -> list[str]:
    """Every file or folder under `root` that is not one of the inputs in `keep`."""
    found = []
    for path in sorted(root.rglob("*")):
        if any(path == k or k in path.parents for k in keep) or (path.is_dir() and not path.is_symlink()):
            continue
        found.append(str(path.relative_to(root)))
    found += [str(p.relative_to(root)) for p in root.rglob("*.partial")]
    return found


# -- the images ---------------------------------------------------------------------------------


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A 4x4 PNG whose IHDR (with a valid CRC) claims another size: tiny on disk, huge if decoded."""
    data = bytearray(_png(Image.new("RGB", (4, 4), (10, 20, 30))))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(_jpeg(Image.new("RGB", (8, 8), (200, 10, 10))))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _noise_png() -> bytes:
    return _png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)))


def _tiff(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "TIFF")
    return buf.getvalue()


_GRAY = np.tile(np.arange(0, 200, dtype=np.uint8), (150, 1))


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _bad_crc(path: Path) -> None:
    data = bytearray(_noise_png())
    idat = data.index(b"IDAT")
    data[idat + 40] ^= 0xFF  # flip bits inside the compressed data; the chunk CRC no longer matches
    path.write_bytes(bytes(data))


def _fifo(path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(path)


def _locked(path: Path) -> None:
    if not hasattr(os, "geteuid") or os.geteuid() == 0:
        pytest.skip("root can read anything")
    path.write_bytes(_png(Image.new("RGB", (8, 8))))
    path.chmod(0)


# name -> (file name, how to make it, words the reason must contain). Every one is refused by
# `load_image`, so it is skipped (and listed) in a folder and fails a run that has nothing else.
BAD_FILES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "png bomb 50000x50000": ("bomb.png", _write(_png_claiming(50000, 50000)), "image too large (50000 x 50000 pixels"),
    "jpeg bomb 65000x65000": ("bomb.jpg", _write(_jpeg_claiming(65000, 65000)), "image too large"),
    "zero-byte jpeg": ("empty.jpg", _write(b""), "empty file"),
    "zero-byte png": ("empty.png", _write(b""), "empty file"),
    "truncated jpeg": ("half.jpg", lambda p: p.write_bytes((IMAGES / "rocket.jpg").read_bytes()[:20000]),
                       "truncated or corrupt image data"),
    "truncated png": ("half.png", lambda p: p.write_bytes(_noise_png()[:20000]), "truncated or corrupt image data"),
    "png with a corrupt chunk": ("crc.png", _bad_crc, "truncated or corrupt image data"),
    "text named .png": ("notes.png", _write(b"not an image\n"), "not an image (cannot identify format)"),
    "random bytes named .webp": ("noise.webp", _write(bytes(range(256)) * 8), "not an image"),
    "html named .jpg": ("page.jpg", _write(b"<!doctype html><title>404</title>"), "not an image"),
    "fifo named .png": ("pipe.png", _fifo, "not a regular file (a named pipe)"),
    "float tiff, values to 199000": ("big.tif", _write(_tiff(_GRAY.astype(np.float32) * 1000)),
                                     "float image with values outside 0..1 and 0..255"),
    "float tiff with NaN": ("nan.tif", _write(_tiff(np.where(_GRAY == 3, np.nan, _GRAY).astype(np.float32))),
                            "NaN or infinite"),
    "signed int32 tiff": ("signed.tif", _write(_tiff(_GRAY.astype(np.int32) - 100)),
                          "32-bit integer image with negative values"),
    "unreadable permissions": ("locked.png", _locked, "permission denied"),
}


def _make_bad(folder: Path, kind: str) -> tuple[Path, str]:
    name, make, reason = BAD_FILES[kind]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    make(path)
    return path, reason


def _encode(capsys, inputs: list[Path], out: Path, *extra: object) -> Result:
    return titok(capsys, "encode", *inputs, "-o", out, "-m", TOK, "--device", "cpu", *extra)


def _assert_error_line(result: Result, code: int, *names: str) -> str:
    assert result.code == code, (result.code, result.err)
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith("error: ") and "Traceback" not in result.err
    for name in names:
        assert name in line, (name, line)
    return line


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_image_with_strict_is_one_error_line(capsys, tmp_path, kind):
    """`--strict`: the first bad file stops the run with `error: FILE: REASON`, exit 1, nothing written."""
    path, reason = _make_bad(tmp_path / "in", kind)
    result = _encode(capsys, [path], tmp_path / "out" / "t.npy", "--strict")
    _assert_error_line(result, 1, path.name, reason)
    assert leftovers(tmp_path, tmp_path / "in") == []


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_image_alone_fails_and_writes_nothing(capsys, tmp_path, kind):
    """Without --strict, a run whose only input is bad exits 1, names the file and writes nothing."""
    path, reason = _make_bad(tmp_path / "in", kind)
    result = _encode(capsys, [path], tmp_path / "out" / "t.npy")
    assert result.code == 1, result.err
    assert any(path.name in line and reason in line for line in result.err_lines), result.err
    assert "Traceback" not in result.err
    assert leftovers(tmp_path, tmp_path / "in") == []


def test_bad_image_alone_is_one_error_line(capsys, tmp_path):
    path, reason = _make_bad(tmp_path / "in", "truncated png")
    result = _encode(capsys, [path], tmp_path / "out" / "t.npy")
    _assert_error_line(result, 1, path.name, reason)


# The same refusals for entries that only a folder walk meets, or that stop the run when named.
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.symlink_to("gone.png"), "broken symbolic link (its target gone.png does not exist)"),
        (lambda p: p.symlink_to(p.name), "symbolic link loop"),
    ],
    ids=["dangling symlink", "symlink loop"],
)
def test_named_broken_link_is_one_error_line(capsys, tmp_path, make, reason):
    link = tmp_path / "in" / "photo.png"
    link.parent.mkdir()
    make(link)
    result = _encode(capsys, [link], tmp_path / "out" / "t.npy")
    _assert_error_line(result, 1, str(link), reason)
    assert leftovers(tmp_path, tmp_path / "in") == []


def test_folder_named_like_an_image_is_a_folder(capsys, tmp_path):
    folder = tmp_path / "in" / "x.jpg"
    folder.mkdir(parents=True)
    result = _encode(capsys, [folder], tmp_path / "out" / "t.npy")
    _assert_error_line(result, 1, "no image files found", str(folder))
    assert leftovers(tmp_path, tmp_path / "in") == []


def test_character_device_is_refused(capsys, tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    result = _encode(capsys, [Path("/dev/zero")], tmp_path / "out" / "t.npy", "--strict")
    _assert_error_line(result, 1, "zero", "not a regular file (a character device)")
    assert leftovers(tmp_path) == []


def _folder_with_everything(root: Path) -> tuple[Path, dict[str, str], list[str]]:
    """Three real photos beside every bad file kind, walk-only kinds included."""
    folder = root / "mixed"
    folder.mkdir(parents=True)
    good = ["astronaut.png", "chelsea.png", "rocket.jpg"]
    for name in good:
        shutil.copy(IMAGES / name, folder / name)
    expected: dict[str, str] = {}
    for kind, (name, make, reason) in BAD_FILES.items():
        try:
            make(folder / name)
        except pytest.skip.Exception:
            continue
        expected[name] = reason
    (folder / "dangling.png").symlink_to("gone.png")
    expected["dangling.png"] = "broken symbolic link"
    (folder / "loop.jpg").symlink_to("loop.jpg")
    expected["loop.jpg"] = "symbolic link loop"
    (folder / "empty_dir.jpg").mkdir()  # a folder named like an image: walked, holds nothing
    (folder / "readme.txt").write_text("not an image name: ignored\n")
    return folder, expected, good


def test_bad_files_beside_good_ones_are_skipped_and_listed(capsys, tmp_path):
    """A folder with 3 photos and every bad kind: the photos are encoded, each bad file is named
    on stderr and listed in the manifest with its reason, and no scratch is left."""
    folder, expected, good = _folder_with_everything(tmp_path)
    out = tmp_path / "out" / "t.npy"
    result = _encode(capsys, [folder], out)
    assert result.code == 1  # some inputs failed: exit 1, as documented
    assert "Traceback" not in result.err
    tokens = np.load(out)
    assert tokens.shape[0] == len(good)
    lines = [json.loads(line) for line in (out.parent / "t.npy.manifest.jsonl").read_text().splitlines()]
    assert [r["path"] for r in lines if "row" in r] == good
    failed = {r["failed"]: r["reason"] for r in lines if "failed" in r}
    assert set(failed) == set(expected)
    for name, reason in expected.items():
        assert reason in failed[name], (name, failed[name])
        assert any(name in line and reason in line for line in result.err_lines), (name, result.err)
    assert list(tmp_path.rglob("*.partial")) == []
    # the good rows are exactly what the photos give on their own
    alone = tmp_path / "alone" / "t.npy"
    assert _encode(capsys, [folder / g for g in good], alone).code == 0
    np.testing.assert_array_equal(np.load(alone), tokens)


# -- the flags ------------------------------------------------------------------------------------

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
_MPS = getattr(torch.backends, "mps", None)
NO_MPS = pytest.mark.skipif(_MPS is not None and _MPS.is_available(), reason="this machine has MPS")

ENCODE = ("encode", "{img}", "-o", "{out}/t.npy", "-m", "{tok}")
DECODE = ("decode", "{out}/missing.npy", "-o", "{out}/pngs", "-m", "{tok}")
SAMPLE = ("sample", "-m", "{gen}", "--tokenizer", "{tok}", "-c", "1", "-n", "1", "-o", "{out}/samples")
BENCH = ("bench", "-m", "{tok}", "--task", "encode", "--no-peak")

# id -> (arguments, words the message must contain, exit code)
FLAG_CASES = {
    "sample -n 0": ((*SAMPLE, "-n", "0"), "--num must be >= 1", 2),
    "sample -n -4": ((*SAMPLE, "-n", "-4"), "--num must be >= 1", 2),
    "sample -n abc": ((*SAMPLE, "-n", "abc"), "--num", 2),
    "sample --steps 0": ((*SAMPLE, "--steps", "0"), "--steps must be >= 1", 2),
    # refused by SamplingParams.check before any model is loaded: no randomness, no timing
    "sample --guidance-scale nan": ((*SAMPLE, "--guidance-scale", "nan"), "--guidance-scale must be a finite number", 2),
    "sample --guidance-scale inf": ((*SAMPLE, "--guidance-scale", "inf"), "--guidance-scale must be a finite number", 2),
    "sample --guidance-scale-pow nan": ((*SAMPLE, "--guidance-scale-pow", "nan"), "--guidance-scale-pow must be a finite", 2),
    "sample --temperature nan": ((*SAMPLE, "--temperature", "nan"), "--temperature must be a finite number", 2),
    "sample --temperature -inf": ((*SAMPLE, "--temperature", "-inf"), "--temperature must be a finite number", 2),
    "sample --guidance-decay cubic": ((*SAMPLE, "--guidance-decay", "cubic"), "--guidance-decay", 2),
    "sample -c 5000": ((*SAMPLE, "-c", "5000"), "class id 5000", 2),
    "sample -c not-a-class": ((*SAMPLE, "-c", "no such animal"), "no such animal", 2),
    "sample -b 0": ((*SAMPLE, "-b", "0"), "--batch-size must be >= 1", 2),
    "sample --device tpu": ((*SAMPLE, "--device", "tpu"), "unknown device 'tpu' (use auto, cpu, cuda, cuda:N or mps)", 2),
    "sample --dtype int8": ((*SAMPLE, "--dtype", "int8"), "unknown dtype 'int8' (use float32", 2),
    "sample -m unknown": (("sample", "-m", "titok-nonexistent", "-c", "1", "-o", "{out}/s"), "titok-nonexistent", 2),
    "encode -b 0": ((*ENCODE, "-b", "0"), "--batch-size must be >= 1", 2),
    "encode -j -1": ((*ENCODE, "-j", "-1"), "--workers must be >= 0", 2),
    "encode --shard-size 0": ((*ENCODE, "--shard-size", "0"), "--shard-size must be >= 1", 2),
    "encode --device tpu": ((*ENCODE, "--device", "tpu"), "unknown device 'tpu'", 2),
    "encode --device cuda:x": ((*ENCODE, "--device", "cuda:x"), "unknown device 'cuda:x'", 2),
    "encode --device cuda": pytest.param((*ENCODE, "--device", "cuda"), "device cuda requested but no CUDA GPU", 2,
                                         marks=NO_CUDA),
    "encode --device cuda:1": pytest.param((*ENCODE, "--device", "cuda:1"), "device cuda:1 requested", 2,
                                           marks=NO_CUDA),
    "encode --device mps": pytest.param((*ENCODE, "--device", "mps"), "device mps requested but Apple MPS", 2,
                                        marks=NO_MPS),
    "encode --dtype int8": ((*ENCODE, "--dtype", "int8"), "unknown dtype 'int8'", 2),
    "encode -o tokens.txt": (("encode", "{img}", "-o", "{out}/tokens.txt", "-m", "{tok}"), "tokens.txt must end with", 2),
    "encode without -o": (("encode", "{img}", "-m", "{tok}"), "missing option --output", 2),
    "encode without inputs": (("encode", "-o", "{out}/t.npy"), "missing argument INPUT", 2),
    "encode --no-such-flag": ((*ENCODE, "--no-such-flag"), "no such option: --no-such-flag", 2),
    "encode -m unknown": (("encode", "{img}", "-o", "{out}/t.npy", "-m", "titok-nonexistent"), "titok-nonexistent", 2),
    "encode missing input": (("encode", "{out}/nowhere.png", "-o", "{out}/t.npy", "-m", "{tok}"),
                             "nowhere.png: no such file or directory", 1),
    "decode -b 0": ((*DECODE, "-b", "0"), "--batch-size must be >= 1", 2),
    "decode --dtype int8": ((*DECODE, "--dtype", "int8"), "unknown dtype 'int8'", 2),
    "decode --device tpu": ((*DECODE, "--device", "tpu"), "unknown device 'tpu'", 2),
    "bench --resolution 384": (("bench", "--resolution", "384", "--no-peak"), "--resolution", 2),
    "bench -b 0": ((*BENCH, "-b", "0"), "--batch-size must be >= 1", 2),
    "bench --iters 0": ((*BENCH, "--iters", "0"), "--iters must be >= 1", 2),
    "bench --warmup -1": ((*BENCH, "--warmup", "-1"), "--warmup must be >= 0", 2),
    "bench --task nonsense": (("bench", "-m", "{tok}", "--task", "nonsense", "--no-peak"), "--task", 2),
    "bench --device tpu": ((*BENCH, "--device", "tpu"), "unknown device 'tpu'", 2),
    "unknown command": (("nonsense",), "no such command 'nonsense'", 2),
}


@pytest.mark.parametrize(("args", "words", "code"), list(FLAG_CASES.values()), ids=list(FLAG_CASES))
def test_flag_out_of_range_is_one_error_line(capsys, tmp_path, args, words, code):
    img = tmp_path / "in" / "chelsea.png"
    img.parent.mkdir()
    shutil.copy(IMAGES / "chelsea.png", img)
    out = tmp_path / "out"
    fill = {"img": img, "out": out, "tok": TOK, "gen": GEN}
    result = titok(capsys, *(a.format(**fill) for a in args))
    _assert_error_line(result, code, words)
    assert leftovers(tmp_path, img.parent) == []


def test_parser_errors_name_the_help_command(capsys):
    result = titok(capsys, "encode", "--no-such-flag")
    assert _assert_error_line(result, 2) == "error: no such option: --no-such-flag (see 'titok encode -h')"
