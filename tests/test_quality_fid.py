"""FID Inception, FID, Inception Score and precision/recall against the reference implementations.

The reference numbers in tests/data/fid_reference.npz come from pytorch-fid, torch-fidelity and
guided-diffusion's evaluator run on seeded random Inception weights and the test photos
(tests/reference/make_fid_reference.py; tests/reference/README.md says how to regenerate them).
Here our own code runs on the same weights and inputs, rebuilt from the same seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reference.make_fid_reference import (
    IS_SHUFFLE_SEED,
    IS_SPLITS_NET,
    IS_SPLITS_SYNTH,
    inputs_digest,
    random_inception_weights,
    reference_images,
    synthetic_sets,
)
from titok_cli.errors import (
    CheckpointError,
    FeatureWeightsError,
    ImageError,
    TitokError,
)
from titok_cli.quality import fid, reference_npz, weights
from titok_cli.quality.inception import FIDInceptionV3, load_fid_inception

REFERENCE = Path(__file__).parent / "data" / "fid_reference.npz"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(REFERENCE, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _seeded_state() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    return random_inception_weights(shapes)


@pytest.fixture(scope="module")
def net() -> FIDInceptionV3:
    model = FIDInceptionV3()
    model.load_state_dict(_seeded_state(), strict=True)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def ours(net, images_dir, ref) -> tuple[torch.Tensor, torch.Tensor]:
    """Our pool3 features and IS logits for the 14 reference inputs (set A, then set B)."""
    set_a, set_b = reference_images(images_dir)
    assert inputs_digest(set_a, set_b) == str(ref["inputs_sha256"]), (
        "the cropped test photos differ from those the reference was made from "
        "(titok_cli's crop or Pillow changed): regenerate tests/data/fid_reference.npz"
    )
    with torch.no_grad():
        outs = [net(set_a)] + [net(x) for x in set_b]
    return torch.cat([o.features for o in outs]), torch.cat([o.logits for o in outs])


# -- the network -------------------------------------------------------------------------------


def test_features_match_pytorch_fid(ours, ref):
    features, logits = ours
    assert features.shape == (14, 2048) and features.dtype == torch.float32
    assert features.std() > 0.1  # the seeded network is alive: a dead one would match trivially
    assert (features - torch.from_numpy(ref["features"])).abs().max().item() < 1e-4
    assert (logits - torch.from_numpy(ref["logits_unbiased"])).abs().max().item() < 1e-3


def test_logits_with_bias_match_torchvision_fc(net, ref):
    features = torch.from_numpy(ref["features"])
    with torch.no_grad():
        biased = net.logits(features, bias=True)  # (14, 1008)
    assert (biased - torch.from_numpy(ref["logits"])).abs().max().item() < 1e-4
    assert not torch.allclose(biased, net.logits(features))  # the default really drops the bias


def test_input_protocol_is_pytorch_fid_resize_then_scale():
    images = torch.rand(2, 3, 40, 56)
    x = FIDInceptionV3.prepare(images)
    assert x.shape == (2, 3, 299, 299)
    expected = torch.nn.functional.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    assert torch.equal(x, expected)
    assert torch.equal(FIDInceptionV3.prepare(torch.ones(1, 3, 299, 299)), torch.ones(1, 3, 299, 299))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        FIDInceptionV3.prepare(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="float"):
        FIDInceptionV3.prepare(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def _labelled_state(keys: list[str]) -> dict[str, torch.Tensor]:
    """A state dict with pytorch-fid's keys in which every tensor holds its own index.

    Built from expanded scalars, so the file is a few kilobytes however big the network is; a
    key that landed in the wrong parameter would show up as the wrong number.
    """
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    return {
        k: torch.zeros((), dtype=torch.long) if k.endswith("num_batches_tracked")
        else torch.tensor(float(i)).expand(shapes[k])
        for i, k in enumerate(keys)
    }  # fmt: skip


def test_pytorch_fid_weight_file_loads_strictly(tmp_path, ref):
    keys = [str(k) for k in ref["state_keys"]]
    with torch.device("meta"):
        assert sorted(FIDInceptionV3().state_dict()) == keys  # our key set is pytorch-fid's, verbatim
    state = _labelled_state(keys)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    model = load_fid_inception(path)
    assert not model.training and model.fc.weight.dtype == torch.float32
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], state[k].expand_as(loaded[k])) for k in keys)
    # a file saved before BatchNorm counted its steps still loads
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    index = keys.index("Mixed_7c.branch_pool.conv.weight")
    assert (load_fid_inception(path).Mixed_7c.branch_pool.conv.weight == index).all()


def test_weight_file_that_does_not_fit_names_file_and_keys(tmp_path, ref):
    state = _labelled_state([str(k) for k in ref["state_keys"]])
    state["Mixed_7c.branch_pool.weight"] = state.pop("Mixed_7c.branch_pool.conv.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_fid_inception(path)
    assert str(path) in str(info.value)
    assert "Mixed_7c.branch_pool.conv.weight" in str(info.value)


# -- FID ---------------------------------------------------------------------------------------


def test_fid_of_network_features_matches_pytorch_fid(ours, ref):
    features, _ = ours
    a, b = fid.feature_stats(features[:7]), fid.feature_stats(features[7:])
    value = a.frechet_distance(b)
    assert value == pytest.approx(float(ref["fid_net"]), rel=1e-3)
    # 7 rows against 2048 features: scipy's sqrtm (pytorch-fid) warns and loses ~1e-4; we stay exact
    assert value == pytest.approx(float(ref["fid_net_exact"]), rel=1e-6)


def test_fid_full_rank_matches_pytorch_fid(ref):
    synth = synthetic_sets()
    x, y = fid.feature_stats(synth["fid_x"]), fid.feature_stats(synth["fid_y"])
    assert x.frechet_distance(y) == pytest.approx(float(ref["fid_synth"]), rel=1e-9)
    assert x.frechet_distance(x) == pytest.approx(0.0, abs=1e-9)


def test_stats_equal_numpy_mean_and_cov():
    x = synthetic_sets()["fid_x"]
    stats = fid.feature_stats(x.float())
    data = x.float().numpy()
    assert stats.mu.dtype == np.float64 and stats.sigma.dtype == np.float64 and stats.count == 700
    np.testing.assert_allclose(stats.mu, data.astype(np.float64).mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(data, rowvar=False), rtol=1e-9, atol=1e-12)


def test_accumulator_shards_merge_to_the_whole():
    x = synthetic_sets()["fid_x"]
    whole = fid.feature_stats(x)
    shards = [fid.FeatureStatsAccumulator(64) for _ in range(3)]
    for i, batch in enumerate(x.split(64)):  # uneven batches dealt round-robin, as ranks get them
        shards[i % 3].update(batch)
    merged = fid.FeatureStatsAccumulator(64)
    for shard in shards:
        merged.merge(shard)
    resumed = fid.FeatureStatsAccumulator(64)
    resumed.load_state_dict(merged.state_dict())
    stats = resumed.stats()
    assert stats.count == 700
    np.testing.assert_allclose(stats.mu, whole.mu, rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, whole.sigma, rtol=1e-9, atol=1e-13)
    with pytest.raises(ValueError, match="at least 2"):
        fid.FeatureStatsAccumulator(64).stats()
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        merged.update(torch.zeros(3, 65))


def _all_reduce_rank(rank: int, store: str, shards: list[torch.Tensor], out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    acc = fid.FeatureStatsAccumulator(shards[0].shape[1])
    acc.update(shards[rank])
    acc.all_reduce()
    torch.save(acc.state_dict(), f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_accumulator_all_reduce_over_two_gloo_ranks(tmp_path):
    x = synthetic_sets()["fid_x"]
    shards = [x[:300], x[300:]]
    torch.multiprocessing.spawn(_all_reduce_rank, args=(str(tmp_path / "store"), shards, str(tmp_path / "acc")), nprocs=2)
    whole = fid.feature_stats(x)
    for rank in range(2):
        acc = fid.FeatureStatsAccumulator(64)
        acc.load_state_dict(torch.load(tmp_path / f"acc.{rank}", weights_only=True))
        stats = acc.stats()
        assert stats.count == 700
        np.testing.assert_allclose(stats.sigma, whole.sigma, rtol=1e-9, atol=1e-13)


def test_frechet_distance_refuses_bad_statistics():
    mu, sigma = np.zeros(4), np.eye(4)
    with pytest.raises(ValueError, match="one length"):
        fid.frechet_distance(mu, sigma, np.zeros(5), np.eye(5))
    with pytest.raises(ValueError, match="NaN"):
        fid.frechet_distance(mu, sigma * np.nan, mu, sigma)


# -- Inception Score ---------------------------------------------------------------------------


def test_inception_score_matches_torch_fidelity(ours, ref):
    _, logits = ours
    mean, std = fid.inception_score(logits, splits=IS_SPLITS_NET, shuffle_seed=IS_SHUFFLE_SEED)
    assert (mean, std) == pytest.approx(tuple(ref["is_net"]), rel=1e-5)
    synth = synthetic_sets()["logits"]
    assert fid.inception_score(synth, IS_SPLITS_SYNTH) == pytest.approx(tuple(ref["is_synth"]), rel=1e-12)
    no_shuffle = fid.inception_score(synth, IS_SPLITS_SYNTH, shuffle_seed=None)
    assert no_shuffle == pytest.approx(tuple(ref["is_synth_no_shuffle"]), rel=1e-12)
    assert no_shuffle[0] != pytest.approx(ref["is_synth"][0], rel=1e-6)  # the shuffle is really applied


def test_inception_score_matches_adm_evaluator(net, ours, ref):
    _, logits = ours
    # ADM: one chunk per 5000 rows, in order, mean only; its softmax is float32
    assert fid.inception_score(logits, splits=1, shuffle_seed=None)[0] == pytest.approx(float(ref["adm_is_net"]), rel=1e-5)
    pool = synthetic_sets()["pool"]
    with torch.no_grad():
        pool_logits = net.logits(pool)  # pool3 @ W, no bias, as ADM's softmax graph
    assert fid.inception_score(pool_logits, 1, None)[0] == pytest.approx(float(ref["adm_is_pool"]), rel=1e-5)


def test_inception_score_refuses_impossible_splits():
    with pytest.raises(ValueError, match="split"):
        fid.inception_score(torch.zeros(3, 10), splits=4)


# -- precision / recall ------------------------------------------------------------------------


def test_precision_recall_matches_adm_evaluator(ours, ref):
    features, _ = ours
    assert fid.precision_recall(features[:7], features[7:]) == tuple(ref["pr_net"])
    synth = synthetic_sets()
    # ADM ran with 128-row blocks; ours with 100 and with one block: same answer
    expected = tuple(ref["pr_synth"])
    assert 0.3 < expected[0] < 0.9 and 0.3 < expected[1] < 0.9  # neither trivially 0 nor 1
    assert fid.precision_recall(synth["pr_ref"], synth["pr_sample"], batch=100) == expected
    assert fid.precision_recall(synth["pr_ref"].numpy(), synth["pr_sample"].numpy()) == expected


def test_manifold_radii_are_kth_neighbour_squared_distances():
    pts = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # from 0: 0 (itself, the 0th neighbour), 1, 9, 36 (the 3rd), 100; from 3: 0, 4, 9, 9, 49
    assert fid.manifold_radii(pts, k=3, batch=2).tolist() == [36.0, 25.0, 9.0, 25.0, 81.0]
    with pytest.raises(ValueError, match="more than 3"):
        fid.manifold_radii(pts[:3])


# -- ADM .npz archives -------------------------------------------------------------------------


def test_reference_npz_streams_images_and_reads_stats(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (9, 5, 4, 3), dtype=np.uint8)
    path = tmp_path / "ref.npz"
    np.savez_compressed(path, arr_0=images, mu=np.arange(3.0), sigma=np.eye(3))
    batch = reference_npz.read_reference_npz(path)
    assert (batch.count, batch.image_shape) == (9, (5, 4, 3))
    np.testing.assert_array_equal(batch.stats.mu, np.arange(3.0))
    parts = list(batch.iter_images(batch_size=4, start=3))
    assert [p.shape[0] for p in parts] == [4, 2]
    np.testing.assert_array_equal(np.concatenate(parts), images[3:])
    tensor = reference_npz.images_to_tensor(parts[0])
    assert tensor.shape == (4, 3, 5, 4) and torch.equal(tensor[1, 2], torch.from_numpy(images[4, :, :, 2]) / 255)


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _truncated_npz(path: Path) -> Path:
    """An arr_0 whose header promises 4 images but whose data holds 2."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((4, 2, 2, 3), dtype=np.uint8))
    data = buf.getvalue()[: -2 * 12]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("arr_0.npy", data)
    return path


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_bytes(b"not a zip") and p, "not an .npz archive"),
        (lambda p: _npz(p, images=np.zeros((1, 2, 2, 3), np.uint8)), "neither arr_0 (images) nor mu and sigma"),
        (lambda p: _npz(p, arr_0=np.zeros((2, 4, 4, 3), np.float32)), "uint8"),
        (lambda p: _npz(p, arr_0=np.zeros((2, 3, 4, 4), np.uint8)), "(N, H, W, 3)"),
        (lambda p: _npz(p, arr_0=np.zeros((0, 4, 4, 3), np.uint8)), "no pixels"),
        (_truncated_npz, "truncated"),
        (lambda p: _npz(p, mu=np.zeros(3)), "mu without sigma"),
        (lambda p: _npz(p, mu=np.zeros(3), sigma=np.eye(4)), "mu must be (D,) and sigma (D, D)"),
        (lambda p: _npz(p, mu=np.zeros(2), sigma=np.array([[1.0, np.nan], [0, 1]])), "NaN"),
        (lambda p: _npz(p, mu=np.zeros(2), sigma=np.array([[1.0, 0.5], [0, 1]])), "not symmetric"),
        (lambda p: _npz(p, mu=np.array([{}, {}], dtype=object), sigma=np.eye(2)), "not a readable numeric array"),
    ],
)
def test_reference_npz_refuses_malformed_files(tmp_path, make, problem):
    path = make(tmp_path / "bad.npz")
    with pytest.raises(ImageError) as info:
        reference_npz.read_reference_npz(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)
    assert isinstance(info.value, TitokError) and info.value.exit_code == 1


def test_reference_npz_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        reference_npz.read_reference_npz(tmp_path / "absent.npz")


# -- weight files ------------------------------------------------------------------------------


@pytest.fixture()
def hf_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf"


def test_offline_without_weights_says_where_to_put_them(hf_home):
    with pytest.raises(FeatureWeightsError) as info:
        load_fid_inception()
    text = str(info.value)
    folder = hf_home / "titok-cli"
    assert f"pt_inception-2015-12-05-6726825d.pth (pytorch-fid's FID Inception-v3 weights) is not in {folder}" in text
    assert "HF_HUB_OFFLINE" in text and "--inception" in text and weights.KNOWN_WEIGHTS["fid-inception"].url in text
    assert text.count(". ") == 0 and "\n" not in text  # one sentence
    assert info.value.exit_code == 1 and isinstance(info.value, CheckpointError)
    assert not folder.exists()  # nothing half-written


def test_weights_from_explicit_path_then_cache(hf_home, tmp_path):
    local = tmp_path / "my-inception.pth"
    local.write_bytes(b"weights")
    assert weights.weights_path("fid-inception", local) == local
    with pytest.raises(FeatureWeightsError, match="no such file.*--inception"):
        weights.weights_path("fid-inception", tmp_path / "absent.pth")
    cached = hf_home / "titok-cli" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"vgg")
    assert weights.weights_path("vgg16") == cached
    with pytest.raises(KeyError, match="fid-inception"):
        weights.known("inception")


def test_download_goes_through_a_temp_file_and_checks_sha256(hf_home, tmp_path, monkeypatch):
    """A file:// URL stands in for the server (no network): the download path itself is real."""
    payload = b"pretend weights" * 1000
    source = tmp_path / "served.pth"
    source.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    entry = dataclasses.replace(weights.KNOWN_WEIGHTS["lpips-vgg"], url=source.as_uri(), sha256=digest[:8])
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "lpips-vgg", entry)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    seen = []
    path = weights.weights_path("lpips-vgg", on_progress=lambda done, total: seen.append(done))
    assert path == hf_home / "titok-cli" / "lpips-v0.1-vgg.pth" and path.read_bytes() == payload
    assert seen[-1] == len(payload)
    path.unlink()
    bad = dataclasses.replace(entry, sha256="00000000")
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "lpips-vgg", bad)
    with pytest.raises(FeatureWeightsError, match="sha256"):
        weights.weights_path("lpips-vgg")
    assert list((hf_home / "titok-cli").iterdir()) == []  # neither the file nor a .part left behind
    broken = dataclasses.replace(entry, url=(tmp_path / "gone.pth").as_uri())
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "lpips-vgg", broken)
    with pytest.raises(FeatureWeightsError, match="downloading it failed"):
        weights.weights_path("lpips-vgg")
