"""`titok eval recon` on the golden tokenizers and real photos, against an independent computation.

Feature weights are not available offline, so LPIPS and the FID Inception get seeded random
weights (the same builders the metric reference tests use), saved to temp files and passed by
path, as a user passes downloaded files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import titok_cli
from titok_cli.encode_job import encode_files
from titok_cli.eval_recon import ReconSettings, eval_recon
from titok_cli.metrics import psnr
from titok_cli.preprocess import load_image
from titok_cli.quality.feature_nets import FeatureNets, load_feature_nets
from titok_cli.quality.fid import feature_stats, inception_score
from titok_cli.quality.inception import FIDInceptionV3
from titok_cli.quality.ssim import ssim
from titok_cli.token_file import load_tokens

from .conftest import IMAGES, ROOT
from .reference.make_fid_reference import random_inception_weights
from .reference.make_lpips_ssim_reference import seeded_heads_state, seeded_vgg16_state

EXAMPLES = ROOT / "examples" / "images"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Seeded random LPIPS (VGG16 + heads) and FID Inception weight files."""
    folder = tmp_path_factory.mktemp("feature-weights")
    paths = {"vgg": folder / "vgg16.pth", "heads": folder / "heads.pth", "inception": folder / "inception.pth"}
    torch.save(seeded_vgg16_state(), paths["vgg"])
    torch.save(seeded_heads_state(), paths["heads"])
    shapes = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    torch.save(random_inception_weights(shapes), paths["inception"])
    return paths


@pytest.fixture(scope="module")
def nets(weights) -> FeatureNets:
    return load_feature_nets("cpu", lpips_paths=[weights["heads"], weights["vgg"]], inception_path=weights["inception"])


def photo_inputs() -> list[str]:
    """Real photos: a folder of three plus one file from examples/ (inputs in the order given)."""
    return [str(IMAGES / "astronaut.png"), str(IMAGES / "chelsea.png"), str(IMAGES / "rocket.jpg"), str(EXAMPLES / "coffee.png")]


def independent(tok, paths: list[str], nets: FeatureNets) -> dict:
    """The figures computed with the library's pieces, not with eval_recon: all images in one
    batch (eval_recon is run with one batch too: decoding in other batches may move a pixel
    across a rounding boundary, which shows in the 6th digit of PSNR)."""
    size = tok.config.image_size
    crops = np.stack([np.asarray(load_image(p, size), dtype=np.uint8) for p in paths])  # (N, S, S, 3)
    with torch.no_grad():
        ref = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, S, S), as `titok encode` divides
        codes = tok.encode(ref)
        rec = torch.round(tok.decode(codes).clamp(0, 1) * 255) / 255  # (N, 3, S, S)
        out = {"psnr": np.mean([psnr(b, a) for a, b in zip(ref, rec)]), "ssim": ssim(rec, ref).double().mean().item()}
        if nets.lpips is not None:
            out["lpips"] = nets.lpips(rec, ref).double().mean().item()
        if nets.inception is not None:
            fa, la = nets.inception(ref)
            fb, lb = nets.inception(rec)
            out["rfid"] = feature_stats(fa).frechet_distance(feature_stats(fb))
            out["is"] = inception_score(lb, 1)
            out["is_ref"] = inception_score(la, 1)
    return out


def test_metrics_match_an_independent_computation(golden, nets, tmp_path):
    tok = titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny")
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = photo_inputs()
    for p in paths[:3]:
        (folder / Path(p).name).symlink_to(p)
    inputs = [str(folder), paths[3]]
    result = eval_recon(inputs, tok, nets, ReconSettings(batch_size=4), output=tmp_path / "r.json")

    want = independent(tok, paths, nets)
    assert result.count == 4 and not result.failures
    assert result.psnr == pytest.approx(want["psnr"], abs=1e-6)  # float32 k/255 here, exact uint8 there
    assert result.ssim == pytest.approx(want["ssim"], abs=1e-6)
    assert result.lpips == pytest.approx(want["lpips"], abs=1e-5)
    assert result.rfid == pytest.approx(want["rfid"], rel=1e-4)
    assert result.inception_score == pytest.approx(want["is"], rel=1e-5)
    assert result.inception_score_reference == pytest.approx(want["is_ref"], rel=1e-5)
    assert 0 < result.ssim < 0.9 and result.lpips > 0.01 and result.rfid > 1  # real differences were measured

    # codebook figures equal np.unique / bincount on `titok encode`'s token file of the same inputs
    encode_files(inputs, tmp_path / "t.npy", tok)
    tokens = load_tokens(tmp_path / "t.npy").tokens  # (N, K)
    size = tok.config.codebook_size
    book = result.codebook
    assert book.distinct == len(np.unique(tokens)) and book.usage == len(np.unique(tokens)) / size
    assert book.position_usage == tuple(len(np.unique(tokens[:, k])) / size for k in range(tokens.shape[1]))
    p = np.bincount(tokens.ravel(), minlength=size) / tokens.size
    assert book.entropy_bits == pytest.approx(-(p[p > 0] * np.log2(p[p > 0])).sum(), abs=1e-12)

    # the results file holds the same report, with the protocol and the model's provenance
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved == json.loads(json.dumps(result.to_dict()))
    assert saved["model"]["local_path"] == str((golden / "tok_vq_legacy_tiny").resolve())  # recorded resolved
    assert saved["protocol"]["image_size"] == 64 and "299x299" in saved["protocol"]["inception"]
    assert not (tmp_path / "r.json.partial").exists()


def test_vae_skips_codebook_and_the_skipped_metrics(golden, tmp_path):
    tok = titok_cli.load_tokenizer(golden / "tok_vae_tiny")
    paths = photo_inputs()[:2]
    result = eval_recon(paths, tok, FeatureNets(), ReconSettings(batch_size=2), output=tmp_path / "vae.json")
    want = independent(tok, paths, FeatureNets())
    assert result.psnr == pytest.approx(want["psnr"], abs=1e-6)  # float32 k/255 here, exact uint8 there
    assert result.ssim == pytest.approx(want["ssim"], abs=1e-6)
    assert result.codebook is None and "VAE" in result.codebook_note
    assert result.lpips is None and result.rfid is None and result.inception_score is None


def test_save_recon_holds_the_measured_pixels(golden, tmp_path):
    tok = titok_cli.load_tokenizer(golden / "tok_vq_tiny")
    paths = photo_inputs()[:2]
    out = tmp_path / "png"
    eval_recon(paths, tok, FeatureNets(), ReconSettings(batch_size=2, save_recon=out))
    from PIL import Image

    crops = np.stack([np.asarray(load_image(p, 64), dtype=np.uint8) for p in paths])  # (2, S, S, 3)
    with torch.no_grad():  # one batch, as eval_recon ran it
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0  # (2, 3, S, S)
        rec = torch.round(tok.decode(tok.encode(x)).clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for p, want in zip(paths, rec):
        np.testing.assert_array_equal(np.asarray(Image.open(out / (Path(p).stem + ".png"))), want)


def _cli(args: list[str], env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    env.pop("TITOK_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "titok_cli", "eval", "recon", *args], env=env,
                          capture_output=True, text=True, timeout=600, **kw)  # fmt: skip


def test_offline_without_weights_is_one_sentence_and_exit_1(golden, tmp_path):
    home = tmp_path / "hf-home"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(home)}
    model = ["--model", str(golden / "tok_vq_tiny"), "--device", "cpu"]
    res = _cli([str(IMAGES / "camera.png"), *model], env)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: vgg16-397923af.pth"), res.stderr
    assert str(home / "titok-cli") in lines[0] and "--lpips" in lines[0]
    res = _cli([str(IMAGES / "camera.png"), *model, "--no-lpips"], env)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: pt_inception-2015-12-05-6726825d.pth") and "--inception" in lines[0]
    res = _cli([str(IMAGES / "camera.png"), *model, "--no-lpips", "--inception", str(tmp_path / "nowhere.pth")], env)
    assert res.returncode == 1 and "nowhere.pth: no such file" in res.stderr


def test_bad_inputs_are_skipped_and_listed(golden, weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "camera.png").symlink_to(IMAGES / "camera.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "junk.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "r.json"
    args = [str(folder), "--model", str(golden / "tok_vq_tiny"), "--device", "cpu", "--no-fid", "--json",
            "--lpips", str(weights["vgg"]), "--lpips", str(weights["heads"]), "-o", str(out)]  # fmt: skip
    res = _cli(args)
    assert res.returncode == 1, res.stderr  # as encode: bad files make exit code 1
    report = json.loads(res.stdout)
    assert report["count"] == 1 and report["lpips"] > 0
    assert [f["path"] for f in report["failures"]] == ["empty.png", "junk.jpg"]
    assert json.loads(out.read_text())["failures"] == report["failures"]
    assert "empty.png: empty file" in res.stderr
    again = _cli(args)  # the same command: the finished report is reported as done
    assert again.returncode == 1 and json.loads(again.stdout)["already_done"] is True
    time.sleep(0.01)
    (folder / "new.png").write_bytes((IMAGES / "chelsea.png").read_bytes())  # the inputs changed since
    changed = _cli(args)
    assert changed.returncode == 2 and "--overwrite" in changed.stderr
    refused = _cli([*args, "--exif-transpose"])  # another protocol: another run, and the file is there
    assert refused.returncode == 2 and "--overwrite" in refused.stderr


def _many_photos(folder: Path, copies: int) -> None:
    folder.mkdir()
    photos = sorted(IMAGES.glob("*.png")) + sorted(IMAGES.glob("*.jpg")) + sorted(EXAMPLES.glob("*.png"))
    for k in range(copies):
        for n, photo in enumerate(photos):
            (folder / f"c{k:03d}_{n}_{photo.name}").symlink_to(photo)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_report(golden, weights, tmp_path):
    folder = tmp_path / "photos"
    _many_photos(folder, 1)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n junk")
    common = [str(folder), "--model", str(golden / "tok_vq_legacy_tiny"), "--device", "cpu", "-b", "2", "-q",
              "--lpips", str(weights["vgg"]), "--lpips", str(weights["heads"]), "--inception", str(weights["inception"])]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TITOK_COMMIT_SECONDS": "0", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run" / "r.json"
    state = out.with_name("r.json.partial") / "rank-00000-of-00001" / "state.json"
    proc = subprocess.Popen([sys.executable, "-m", "titok_cli", "eval", "recon", *common, "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text() or "{}").get("rows", 0) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first commit"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = json.loads(state.read_text())["rows"]
    images = len(list(folder.iterdir())) - 1
    assert not out.exists() and 0 < rows < images
    resumed = _cli([*common, "-o", str(out)], {"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 1, resumed.stderr  # broken.png
    assert "resuming" not in resumed.stderr  # -q hides it
    fresh = _cli([*common, "-o", str(tmp_path / "fresh.json")], {"OMP_NUM_THREADS": "1"})
    assert fresh.returncode == 1, fresh.stderr
    a, b = json.loads(out.read_text()), json.loads((tmp_path / "fresh.json").read_text())
    assert a == b and a["count"] == images and len(a["failures"]) == 1
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(golden, weights, tmp_path):
    pytest.importorskip("torch.distributed")
    folder = tmp_path / "photos"
    _many_photos(folder, 1)
    (folder / "zero.png").write_bytes(b"")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TITOK_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    # One image per batch: each image then meets the same kernels in both runs (with bigger batches,
    # the ranks' batches hold other images than the single run's, and CPU kernels may round
    # differently per batch shape; see eval_recon's module doc).
    args = ["eval", "recon", str(folder), "--model", str(golden / "tok_vq_legacy_tiny"), "--device", "cpu", "-b", "1",
            "-q", "--lpips", str(weights["vgg"]), "--lpips", str(weights["heads"]), "--inception",
            str(weights["inception"]), "--save-recon"]  # fmt: skip
    single, multi = tmp_path / "single.json", tmp_path / "multi.json"
    one = subprocess.run([sys.executable, "-m", "titok_cli", *args, str(tmp_path / "png1"), "-o", str(single)],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 1, one.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29581",
           "-m", "titok_cli", *args, str(tmp_path / "png2"), "-o", str(multi)]  # fmt: skip
    two = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 1 and "zero.png: empty file" in two.stderr, two.stderr[-3000:]
    a, b = json.loads(single.read_text()), json.loads(multi.read_text())
    assert a.pop("fingerprint") != b.pop("fingerprint")  # the run description records the rank count
    images = len(list(folder.iterdir())) - 1
    assert a == b and a["count"] == images and [f["path"] for f in a["failures"]] == ["zero.png"]
    pngs = sorted(p.name for p in (tmp_path / "png2").iterdir())
    assert pngs == sorted(p.name for p in (tmp_path / "png1").iterdir()) and len(pngs) == images


def test_webdataset_shards_give_the_folder_report(golden, tmp_path):
    pytest.importorskip("webdataset")
    import tarfile

    tok = titok_cli.load_tokenizer(golden / "tok_vq_tiny")
    photos = [Path(p) for p in photo_inputs()]
    with tarfile.open(tmp_path / "val-000000.tar", "w") as tar:
        for k, p in enumerate(photos):
            tar.add(p, arcname=f"s{k:03d}{p.suffix}")
    settings = ReconSettings(batch_size=4)
    shards = eval_recon([str(tmp_path / "val-000000.tar")], tok, FeatureNets(), settings)
    files = eval_recon([str(p) for p in photos], tok, FeatureNets(), settings)
    assert shards.count == files.count == 4
    assert (shards.psnr, shards.ssim, shards.codebook) == (files.psnr, files.ssim, files.codebook)


def test_lpips_weights_by_folder_or_two_files_in_any_order(weights, tmp_path):
    from titok_cli.errors import FeatureWeightsError, UsageError
    from titok_cli.quality.lpips import lpips_files
    from titok_cli.quality.weights import known

    folder = tmp_path / "lpips"
    folder.mkdir()
    (folder / known("vgg16").filename).symlink_to(weights["vgg"])
    (folder / known("lpips-vgg").filename).symlink_to(weights["heads"])
    by_folder = lpips_files([folder])
    assert [p.resolve() for p in by_folder] == [weights["vgg"], weights["heads"]]
    assert lpips_files([weights["heads"], weights["vgg"]]) == (weights["vgg"], weights["heads"])
    assert lpips_files([weights["vgg"], weights["heads"]]) == (weights["vgg"], weights["heads"])
    with pytest.raises(UsageError):
        lpips_files([weights["vgg"]])
    with pytest.raises(FeatureWeightsError, match="nowhere.pth: no such file"):
        lpips_files([weights["vgg"], tmp_path / "nowhere.pth"])
