"""Write tests/data/fid_reference.npz: FID Inception features and metrics from the REFERENCE code.

The reference implementations (pytorch-fid's network and Fréchet distance, torch-fidelity's
Inception Score, the precision/recall and Inception Score of guided-diffusion's ADM evaluator) run
here on random but seeded Inception weights and on the test photos; tests/test_quality_fid.py
rebuilds the same weights and inputs from the helpers below (plain torch CPU RNG, titok_cli's own
crop) and compares our code with the stored numbers. Nothing of the reference packages is needed
to run the tests. How to set up the environment and run this: tests/reference/README.md.

    python tests/reference/make_fid_reference.py --adm-evaluator PATH/guided-diffusion/evaluations/evaluator.py
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT.parent / "shared" / "images"
OUTPUT = ROOT / "tests" / "data" / "fid_reference.npz"

WEIGHT_SEED = 20151205
SYNTH_SEED = 11
IS_SPLITS_NET = 2  # 14 images: two splits of 7
IS_SPLITS_SYNTH = 10
IS_SHUFFLE_SEED = 2020  # torch-fidelity's default rng_seed
PR_BATCH_SYNTH = 128  # ADM's row/col batch size in the synthetic run: several batches per side


# -- what the tests rebuild (torch and titok_cli only) ------------------------------------------


def random_inception_weights(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Seeded weights of sane scale for the FID Inception, keyed like pytorch-fid's file.

    Keys are visited in sorted order so the values depend on the key set only. Convolutions are
    He-normal, BatchNorm scale/shift and running statistics sit near (1, 0) and (0, 1), so the
    activations keep their size through the 94 convolutions. fc rows have zero mean, so the
    logits follow what differs between images; still, the photos mostly land in the same
    classes (IS about 1.1), so IS is checked mainly on the synthetic logits.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("conv.weight"):
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
        elif key.endswith("bn.weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith(("bn.bias", "bn.running_mean")):
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("bn.running_var"):
            state[key] = 0.8 + 0.4 * torch.rand(shape, generator=gen)
        elif key == "fc.weight":
            rows = torch.randn(shape, generator=gen)
            rows -= rows.mean(dim=1, keepdim=True)  # no common mode: classes follow what differs
            state[key] = rows * (4.0 / math.sqrt(shape[1]))
        elif key == "fc.bias":
            state[key] = torch.randn(shape, generator=gen)
        else:
            raise KeyError(f"no rule for weight {key}")
    return state


def reference_images(images_dir: Path = IMAGES) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The test inputs, cropped by titok_cli's own preprocessing.

    Set A: the 256 x 256 center crop of every photo (7, sorted by name). Set B: one variant per
    photo, so B differs from A but not wildly: a mirrored 256 crop, a 192 crop (upsampled to 299
    by the network), or a non-square 256 x 200 strip (stretched to 299 x 299). Returns A as one
    batch (7, 3, 256, 256) and B as a list of (1, 3, H, W) tensors.
    """
    from titok_cli.preprocess import load_image, to_tensor

    paths = sorted(p for p in images_dir.iterdir() if p.is_file())
    set_a = to_tensor([load_image(p, 256) for p in paths])  # (7, 3, 256, 256)
    set_b = []
    for i, path in enumerate(paths):
        if i % 3 == 0:
            set_b.append(set_a[i : i + 1].flip(-1))  # (1, 3, 256, 256)
        elif i % 3 == 1:
            set_b.append(to_tensor([load_image(path, 192)]))  # (1, 3, 192, 192)
        else:
            set_b.append(set_a[i : i + 1, :, 28:228, :])  # (1, 3, 200, 256)
    return set_a, set_b


def inputs_digest(set_a: torch.Tensor, set_b: list[torch.Tensor]) -> str:
    """sha256 over the exact input pixels: tells a changed crop apart from a changed network."""
    digest = hashlib.sha256()
    for t in [set_a, *set_b]:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def synthetic_sets(seed: int = SYNTH_SEED) -> dict[str, torch.Tensor]:
    """Seeded feature and logit sets of full rank, bigger than the photos allow.

    fid_x (700, 64) and fid_y (600, 64): correlated Gaussians with different means and
    covariances; pr_ref (500, 32) and pr_sample (400, 32): overlapping shifted clouds
    (precision and recall near 0.6); logits (1000, 1008) and pool (300, 2048) for the Inception
    Score.
    """
    gen = torch.Generator().manual_seed(seed)
    mix_x = torch.randn(64, 64, generator=gen) / 8
    mix_y = torch.randn(64, 64, generator=gen) / 8 + torch.eye(64) * 0.5
    fid_x = torch.randn(700, 64, generator=gen, dtype=torch.float64) @ mix_x.double() + 0.3
    fid_y = torch.randn(600, 64, generator=gen, dtype=torch.float64) @ mix_y.double() - 0.1
    pr_ref = torch.randn(500, 32, generator=gen)
    pr_sample = torch.randn(400, 32, generator=gen) + 0.3
    logits = 3.0 * torch.randn(1000, 1008, generator=gen)
    pool = torch.rand(300, 2048, generator=gen)
    return {"fid_x": fid_x, "fid_y": fid_y, "pr_ref": pr_ref, "pr_sample": pr_sample, "logits": logits, "pool": pool}


# -- the reference implementations --------------------------------------------------------------


def _import_torchvision_without_ops() -> None:
    """Import torchvision's Python models when its compiled ops cannot load (a CUDA wheel on CPU torch).

    pytorch-fid needs only torchvision.models.inception; the operator registrations that fail
    without `_C.so` are skipped by pre-seeding their module.
    """
    try:
        import torchvision
    except (RuntimeError, OSError):
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision  # noqa: F401


def _pytorch_fid_network(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """pytorch-fid's fid_inception_v3 structure with `state` loaded strictly (no download)."""
    from pytorch_fid import inception as pf

    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    net.load_state_dict(state, strict=True)
    return net.eval()


def _pytorch_fid_features(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """pool3 through pytorch-fid's own InceptionV3 wrapper (its blocks, resize and [-1, 1] scaling)."""
    from pytorch_fid import inception as pf

    build = pf.fid_inception_v3
    pf.fid_inception_v3 = lambda: net  # the wrapper would download the real weights here
    try:
        wrapper = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pf.fid_inception_v3 = build
    return wrapper(images)[0][:, :, 0, 0]  # (N, 2048)


def _fid(x: np.ndarray, y: np.ndarray) -> float:
    """pytorch-fid's statistics (np.mean, np.cov) and calculate_frechet_distance."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    stats = [(np.mean(a, axis=0), np.cov(a, rowvar=False)) for a in (x, y)]
    return float(calculate_frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1]))


def _exact_fid(x: np.ndarray, y: np.ndarray) -> float:
    """FID of two small sets by another route: tr((S1 S2)^1/2) is the nuclear norm of Xc Yc^T / sqrt((n-1)(m-1)).

    Exact in float64 when there are fewer rows than features, where scipy's sqrtm loses digits.
    """
    x, y = x.astype(np.float64), y.astype(np.float64)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    tr_sqrt = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / math.sqrt((len(x) - 1) * (len(y) - 1))
    diff = x.mean(axis=0) - y.mean(axis=0)
    trace = (xc * xc).sum() / (len(x) - 1) + (yc * yc).sum() / (len(y) - 1)
    return float(diff @ diff + trace - 2 * tr_sqrt)


def _fidelity_is(logits: torch.Tensor, splits: int, shuffle: bool) -> tuple[float, float]:
    from torch_fidelity.metric_isc import isc_features_to_metric

    out = isc_features_to_metric(logits, splits=splits, shuffle=shuffle, rng_seed=IS_SHUFFLE_SEED)
    return out["inception_score_mean"], out["inception_score_std"]


def _load_adm(path: Path) -> types.ModuleType:
    """guided-diffusion's evaluations/evaluator.py with TensorFlow (and, if absent, requests) stubbed."""
    for name in ("tensorflow", "tensorflow.compat", "tensorflow.compat.v1"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["tensorflow"].compat = sys.modules["tensorflow.compat"]
    sys.modules["tensorflow.compat"].v1 = sys.modules["tensorflow.compat.v1"]
    for name in ("requests", "tqdm"):
        if importlib.util.find_spec(name) is None:
            sys.modules[name] = types.ModuleType(name)
    if not hasattr(sys.modules.get("tqdm"), "__path__"):  # stubbed: give it tqdm.auto.tqdm
        auto = sys.modules["tqdm.auto"] = types.ModuleType("tqdm.auto")
        auto.tqdm = lambda iterable, **_: iterable
        sys.modules["tqdm"].auto = auto
    spec = importlib.util.spec_from_file_location("adm_evaluator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class NumpyDistanceBlock:
    """ADM's DistanceBlock graph evaluated in numpy float32 (its fallback branch, without fp16)."""

    def __init__(self, session: object = None) -> None:
        pass

    def pairwise_distances(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        u, v = u.astype(np.float32), v.astype(np.float32)
        norm_u = np.sum(u * u, axis=1).reshape(-1, 1)
        norm_v = np.sum(v * v, axis=1).reshape(1, -1)
        return np.maximum(norm_u - 2 * (u @ v.T) + norm_v, np.float32(0))

    def less_thans(self, batch_1, radii_1, batch_2, radii_2):
        dist = self.pairwise_distances(batch_1, batch_2)[..., None]
        return np.any(dist <= radii_2, axis=1), np.any(dist <= radii_1[:, None], axis=0)


def _adm_precision_recall(adm: types.ModuleType, ref: np.ndarray, sample: np.ndarray, batch: int) -> tuple[float, float]:
    adm.DistanceBlock = NumpyDistanceBlock
    est = adm.ManifoldEstimator(None, row_batch_size=batch, col_batch_size=batch)
    radii_ref, radii_sample = est.manifold_radii(ref), est.manifold_radii(sample)
    precision, recall = est.evaluate_pr(ref, radii_ref, sample, radii_sample)
    return float(precision[0]), float(recall[0])


def _adm_inception_score(adm: types.ModuleType, pool: np.ndarray, fc_weight: np.ndarray) -> float:
    """ADM's compute_inception_score; its softmax graph (pool3 @ W, no bias) run in numpy."""

    class Session:
        def run(self, _tensor, feed_dict):
            (acts,) = feed_dict.values()
            logits = acts.astype(np.float64) @ fc_weight.T.astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    evaluator = adm.Evaluator.__new__(adm.Evaluator)
    evaluator.sess, evaluator.softmax_batch_size, evaluator.softmax, evaluator.softmax_input = Session(), 512, None, "in"
    return float(evaluator.compute_inception_score(pool))


def _versions() -> str:
    from importlib.metadata import version

    names = ("torch", "torchvision", "pytorch-fid", "torch-fidelity", "numpy", "scipy", "pillow")
    return ", ".join(f"{n} {version(n)}" for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adm-evaluator", type=Path, required=True,
                        help="guided-diffusion's evaluations/evaluator.py")  # fmt: skip
    parser.add_argument("--adm-commit", default="22e0df8183507e13a7813f8d38d51b072ca1e67c",
                        help="the guided-diffusion commit the file is from (recorded in the npz)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if not args.adm_evaluator.is_file():
        parser.error(f"{args.adm_evaluator}: no such file (guided-diffusion's evaluations/evaluator.py)")
    torch.set_grad_enabled(False)
    sys.path.insert(0, str(ROOT))
    _import_torchvision_without_ops()
    from titok_cli.quality.inception import FIDInceptionV3

    shapes = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    state = random_inception_weights(shapes)
    net = _pytorch_fid_network(state)  # strict: our key set is pytorch-fid's
    reference_keys = sorted(net.state_dict())
    assert reference_keys == sorted(shapes), "key sets differ"

    set_a, set_b = reference_images()
    feats_a = _pytorch_fid_features(net, set_a)  # (7, 2048)
    feats_b = torch.cat([_pytorch_fid_features(net, x) for x in set_b])  # (7, 2048)
    features = torch.cat([feats_a, feats_b]).numpy()  # (14, 2048)
    fc_w = net.fc.weight.detach()
    logits_unbiased = (torch.from_numpy(features) @ fc_w.T).numpy()  # (14, 1008), torch-fidelity's layer
    logits = net.fc(torch.from_numpy(features)).numpy()  # (14, 1008), torchvision's fc

    adm = _load_adm(args.adm_evaluator)
    synth = synthetic_sets()
    out = {
        "versions": np.array(_versions()),
        "adm_commit": np.array(args.adm_commit),
        "inputs_sha256": np.array(inputs_digest(set_a, set_b)),
        "state_keys": np.array(reference_keys),
        "features": features,
        "logits_unbiased": logits_unbiased,
        "logits": logits,
        "fid_net": np.float64(_fid(features[:7], features[7:])),  # float32 activations, as pytorch-fid has them
        "fid_net_exact": np.float64(_exact_fid(features[:7], features[7:])),
        "fid_synth": np.float64(_fid(synth["fid_x"].numpy(), synth["fid_y"].numpy())),
        "is_net": np.array(_fidelity_is(torch.from_numpy(logits_unbiased), IS_SPLITS_NET, True)),
        "is_synth": np.array(_fidelity_is(synth["logits"], IS_SPLITS_SYNTH, True)),
        "is_synth_no_shuffle": np.array(_fidelity_is(synth["logits"], IS_SPLITS_SYNTH, False)),
        "adm_is_net": np.float64(_adm_inception_score(adm, features, fc_w.numpy())),
        "adm_is_pool": np.float64(_adm_inception_score(adm, synth["pool"].numpy(), fc_w.numpy())),
        "pr_net": np.array(_adm_precision_recall(adm, features[:7], features[7:], 10000)),
        "pr_synth": np.array(_adm_precision_recall(
            adm, synth["pr_ref"].numpy(), synth["pr_sample"].numpy(), PR_BATCH_SYNTH)),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    for key in ("fid_net", "fid_net_exact", "fid_synth", "is_net", "is_synth", "adm_is_net", "adm_is_pool", "pr_net", "pr_synth"):
        print(f"{key}: {out[key]}")
    print(f"features: mean {features.mean():.4f}, std {features.std():.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
