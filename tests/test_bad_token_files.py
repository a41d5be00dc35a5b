"""Bad token files through `titok decode`: one `error:` line naming the file, exit 1, nothing written.

Each case starts from a real token file (`titok encode` of two photos with a golden tokenizer)
and breaks one thing: the array file itself (empty, truncated, pickled, wrong dtype or shape,
NaN latents, ids outside the codebook), the .npz keys, or the manifest beside it (not JSON,
rows out of order or missing, labels that are not integers, names that would escape the output
folder, a header recording another array).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from titok_cli.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)


@pytest.fixture(scope="module")
def originals(tmp_path_factory, golden, images_dir) -> dict[str, Path]:
    """One good VQ .npy and one good VAE .npz, each with its manifest."""
    base = tmp_path_factory.mktemp("good")
    photos = (images_dir / "chelsea.png", images_dir / "coffee.png")
    made = {}
    for kind, case, name in (("vq", "tok_vq_legacy_tiny", "tokens.npy"), ("vae", "tok_vae_tiny", "latents.npz")):
        out = base / kind / name
        result = run("encode", *photos, "-o", out, "--model", golden / case, "--device", "cpu", "-q")
        assert result.exit_code == 0, result.output
        made[kind] = out
    return made


def _manifest(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.jsonl")


def _edit_manifest(path: Path, edit: Callable[[list[dict]], None]) -> None:
    lines = [json.loads(x) for x in _manifest(path).read_text().splitlines()]
    edit(lines)
    _manifest(path).write_text("".join(json.dumps(x) + "\n" for x in lines))


def _rewrite_array(path: Path, array: np.ndarray, **np_save) -> None:
    """Replace the array; the manifest header is updated to describe it, so only the array is at fault."""
    from titok_cli.token_file import array_sha256

    np.save(path, array, **np_save)
    if array.dtype != object:
        def describe(lines):
            lines[0]["array"] = {"dtype": str(array.dtype), "shape": list(array.shape), "sha256": array_sha256(array)}
        _edit_manifest(path, describe)


def _npz(path: Path, **arrays) -> Path:
    target = path.with_suffix(".npz")
    np.savez(target, **arrays)
    path.unlink()
    _manifest(path).unlink()
    return target


# Each case: (which original, how to break it -> the file to decode, message fragment).
def _empty(p):
    p.write_bytes(b"")
    return p


def _truncated(p):
    p.write_bytes(p.read_bytes()[:-5])
    return p


def _garbage(p):
    p.write_bytes(b"\x93NUMPY\x01\x00" + b"\xff" * 40)
    return p


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/titok-pickle-payload-ran"),))


def _pickle_renamed(p):
    p.write_bytes(pickle.dumps({"tokens": _Payload()}))
    return p


def _object_npy(p):
    _rewrite_array(p, np.array([[1, 2], [3, 4]], dtype=object), allow_pickle=True)
    return p


def _object_npz(p):
    return _npz(p, tokens=np.array([[1, 2], [3, None]], dtype=object))


def _npz_without_tokens(p):
    return _npz(p, ids=np.load(p))


def _npz_names_2d(p):
    return _npz(p, tokens=np.load(p), names=np.array([["a", "b"], ["c", "d"]]))


def _npz_float_labels(p):
    return _npz(p, tokens=np.load(p), labels=np.array([0.5, 1.0]))


def _truncated_npz(p):
    target = _npz(p, tokens=np.load(p))
    target.write_bytes(target.read_bytes()[:60])
    return target


def _bool_ids(p):
    _rewrite_array(p, np.load(p) > 3)
    return p


def _complex_ids(p):
    _rewrite_array(p, np.load(p).astype(np.complex64))
    return p


def _one_dim(p):
    _rewrite_array(p, np.load(p).ravel())
    return p


def _negative_ids(p):
    ids = np.load(p).astype(np.int16)
    ids[1, 3] = -1
    _rewrite_array(p, ids)
    return p


def _latents_with(value):
    def edit(p):
        with np.load(p) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["tokens"] = arrays["tokens"].copy()
        arrays["tokens"][0, 0, 2] = value
        np.savez(p, **arrays)
        return p
    return edit


def _folder_named_like_file(p):
    p.unlink()
    p.mkdir()
    return p


def _manifest_line_not_json(p):
    lines = _manifest(p).read_text().splitlines()
    lines[1] = "{row: 0,"
    _manifest(p).write_text("\n".join(lines) + "\n")
    return p


def _manifest_without_format(p):
    _edit_manifest(p, lambda lines: lines[0].pop("format"))
    return p


def _rows_out_of_order(p):
    def swap(lines):
        lines[1], lines[2] = lines[2], lines[1]
    _edit_manifest(p, swap)
    return p


def _row_missing(p):
    _edit_manifest(p, lambda lines: lines.pop(2))
    return p


def _string_label(p):
    _edit_manifest(p, lambda lines: lines[1].update(label="cat"))
    return p


def _name(value):
    def edit(p):
        _edit_manifest(p, lambda lines: lines[1].update(path=value))
        return p
    return edit


def _other_array_recorded(p):
    _edit_manifest(p, lambda lines: lines[0]["array"].update(sha256="0" * 64))
    return p


def _other_shape_recorded(p):
    _edit_manifest(p, lambda lines: lines[0]["array"].update(shape=[2, 16]))
    return p


CASES = {
    "empty file": ("vq", _empty, "empty file"),
    "truncated npy": ("vq", _truncated, "truncated"),
    "garbage npy": ("vq", _garbage, "not a readable .npy/.npz token file"),
    "pickle named .npy": ("vq", _pickle_renamed, "pickled Python objects; refusing to unpickle"),
    "object array npy": ("vq", _object_npy, "pickled Python objects"),
    "object array npz": ("vq", _object_npz, "pickled Python objects"),
    "npz without tokens": ("vq", _npz_without_tokens, "no 'tokens' array (keys: ids)"),
    "npz names 2-D": ("vq", _npz_names_2d, "'names' must be a 1-D string array"),
    "npz float labels": ("vq", _npz_float_labels, "'labels' must be a 1-D integer array"),
    "truncated npz": ("vq", _truncated_npz, "not a readable .npy/.npz token file"),
    "bool ids": ("vq", _bool_ids, "dtype bool is neither integer ids nor float latents"),
    "complex ids": ("vq", _complex_ids, "dtype complex64 is neither integer ids nor float latents"),
    "1-D ids": ("vq", _one_dim, "token ids must be a 2-D array [N,K]"),
    "negative id": ("vq", _negative_ids, "outside the codebook"),
    "NaN latent": ("vae", _latents_with(np.nan), "latents contain NaN or infinity"),
    "infinite latent": ("vae", _latents_with(np.inf), "latents contain NaN or infinity"),
    "folder named tokens.npy": ("vq", _folder_named_like_file, "not a regular file"),
    "manifest line not JSON": ("vq", _manifest_line_not_json, "line 2 is not valid JSON"),
    "manifest without format": ("vq", _manifest_without_format, "not a titok manifest"),
    "manifest rows out of order": ("vq", _rows_out_of_order, "rows out of order"),
    "manifest row missing": ("vq", _row_missing, "lists 1 rows but tokens.npy holds 2"),
    "manifest label not integer": ("vq", _string_label, "label 'cat' is not an integer"),
    "name with ..": ("vq", _name("../../escape.png"), "refusing to write outside the output folder"),
    "absolute name": ("vq", _name("/tmp/escape.png"), "refusing to write outside the output folder"),
    "manifest of another array": ("vq", _other_array_recorded, "sha256 differs"),
    "manifest of another shape": ("vq", _other_shape_recorded, "records shape [2, 16], the file has [2, 8]"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_token_file_is_one_error_line(originals, golden, tmp_path, case):
    kind, breaker, message = CASES[case]
    work = tmp_path / "in"
    work.mkdir()
    good = originals[kind]
    copy = work / good.name
    copy.write_bytes(good.read_bytes())
    _manifest(copy).write_bytes(_manifest(good).read_bytes())
    Path("/tmp/titok-pickle-payload-ran").unlink(missing_ok=True)
    bad = breaker(copy)
    out = tmp_path / "out"
    model = golden / ("tok_vq_legacy_tiny" if kind == "vq" else "tok_vae_tiny")
    result = run("decode", bad, "-o", out, "--model", model, "--device", "cpu")
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert bad.name in result.stderr  # the file (or its manifest) is named
    assert not out.exists(), "nothing may be written for a bad token file"
    assert not Path("/tmp/escape.png").exists() and not (tmp_path / "escape.png").exists()
    assert not Path("/tmp/titok-pickle-payload-ran").exists(), "a pickle payload ran"
    assert "Traceback" not in result.output


def test_the_corpus_starts_from_files_that_decode(originals, golden, tmp_path):
    """The unbroken originals decode, so each failure above is caused by its one change."""
    for kind, case in (("vq", "tok_vq_legacy_tiny"), ("vae", "tok_vae_tiny")):
        out = tmp_path / kind
        result = run("decode", originals[kind], "-o", out, "--model", golden / case, "--device", "cpu", "-q")
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.iterdir()) == ["chelsea.png", "coffee.png"]


def test_zip_member_names_cannot_escape(originals, golden, tmp_path):
    """An .npz whose names array points outside the output folder is refused like a manifest name."""
    target = tmp_path / "t.npz"
    with zipfile.ZipFile(target, "w") as zf:
        for key, arr in (("tokens", np.load(originals["vq"])), ("names", np.array(["ok.png", "../../x.png"]))):
            with zf.open(f"{key}.npy", "w") as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    result = run("decode", target, "-o", tmp_path / "out", "--model", golden / "tok_vq_legacy_tiny", "--device", "cpu")
    assert result.exit_code == 1 and "refusing to write outside the output folder" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()
