"""`titok eval gen`: gFID, IS and precision/recall of a sample archive against a reference batch,
against the same figures computed directly from the FID Inception's features (seeded random
weights: the real file is not available offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from titok_cli.eval_gen import GenSettings, eval_gen
from titok_cli.preprocess import load_image
from titok_cli.quality.fid import (
    feature_stats,
    images_to_tensor,
    inception_score,
    precision_recall,
)
from titok_cli.quality.inception import FIDInceptionV3, load_fid_inception

from .conftest import IMAGES, ROOT
from .reference.make_fid_reference import random_inception_weights

SIZE = 64


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    shapes = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    torch.save(random_inception_weights(shapes), path)
    return path


@pytest.fixture(scope="module")
def archives(tmp_path_factory, images_dir):
    """samples.npz (4 photos), ref.npz (the other 3 photos, flipped too: 6 images), stats.npz (mu/sigma)."""
    folder = tmp_path_factory.mktemp("archives")
    photos = sorted(images_dir.iterdir())
    crops = np.stack([np.asarray(load_image(p, SIZE), dtype=np.uint8) for p in photos])  # (7, S, S, 3)
    samples, ref = crops[:4], np.concatenate([crops[4:], crops[4:, :, ::-1]])
    np.savez(folder / "samples.npz", arr_0=samples)
    np.savez(folder / "ref.npz", arr_0=np.ascontiguousarray(ref))
    return folder, samples, np.ascontiguousarray(ref)


def test_gen_metrics_match_the_features_directly(archives, inception_file):
    folder, samples, ref = archives
    net = load_fid_inception(inception_file)
    with torch.no_grad():
        fs, ls = (t.numpy() for t in net(images_to_tensor(samples)))
        fr, _ = (t.numpy() for t in net(images_to_tensor(ref)))
    stats = feature_stats(fr)
    np.savez(folder / "stats.npz", mu=stats.mu, sigma=stats.sigma)

    result = eval_gen(folder / "samples.npz", folder / "ref.npz", net, GenSettings(batch_size=3, expect=4))
    assert result.samples == 4 and result.reference_images == 6 and result.fid_reference == "images"
    assert result.fid == pytest.approx(feature_stats(fs).frechet_distance(stats), rel=1e-4)
    assert result.fid > 1
    assert result.inception_score == pytest.approx(inception_score(ls, 1, shuffle_seed=None), rel=1e-5)
    assert (result.precision, result.recall) == pytest.approx(precision_recall(fr, fs))

    only_stats = eval_gen(folder / "samples.npz", folder / "stats.npz", net, GenSettings(batch_size=4))
    assert only_stats.fid_reference == "statistics" and only_stats.reference_images is None
    assert only_stats.fid == pytest.approx(result.fid, rel=1e-4)
    assert only_stats.precision is None and only_stats.recall is None


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TITOK_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "titok_cli", "eval", "gen", *args], env=env, capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip


def test_gen_refuses_a_sample_count_other_than_expected(archives, inception_file):
    folder, _, _ = archives
    res = _cli([str(folder / "samples.npz"), "--ref", str(folder / "ref.npz"), "--expect", "50000",
                "--inception", str(inception_file), "--device", "cpu"])  # fmt: skip
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"error: {folder / 'samples.npz'} holds 4 samples, but 50000 were expected (--expect): "
        "the run is incomplete or not the one meant"
    ]


def test_gen_cli_json_and_results_file(archives, inception_file, tmp_path):
    folder, _, _ = archives
    out = tmp_path / "gen.json"
    res = _cli([str(folder / "samples.npz"), "--ref", str(folder / "ref.npz"), "--inception", str(inception_file),
                "--device", "cpu", "--json", "-o", str(out), "--no-precision-recall"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["samples"] == 4 and report["fid"] > 1 and report["precision"] is None
    saved = json.loads(out.read_text())
    assert saved["fid"] == report["fid"] and saved["weights"]["inception"][0]["file"] == "inception.pth"
    bad = _cli([str(IMAGES / "camera.png"), "--ref", str(folder / "ref.npz"), "--inception", str(inception_file),
                "--device", "cpu"])  # fmt: skip
    assert bad.returncode == 1 and "not an .npz archive" in bad.stderr


@pytest.mark.slow
def test_gen_torchrun_two_ranks_match_one_process(archives, inception_file, tmp_path):
    pytest.importorskip("torch.distributed")
    folder, _, _ = archives
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TITOK_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    # one image per batch, so each image meets the same kernels in both runs
    args = ["eval", "gen", str(folder / "samples.npz"), "--ref", str(folder / "ref.npz"), "--inception",
            str(inception_file), "--device", "cpu", "-b", "1", "-q", "-o"]  # fmt: skip
    one = subprocess.run([sys.executable, "-m", "titok_cli", *args, str(tmp_path / "one.json")], env=env,
                         capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29583",
           "-m", "titok_cli", *args, str(tmp_path / "two.json")]  # fmt: skip
    two = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "one.json").read_text()) == json.loads((tmp_path / "two.json").read_text())
