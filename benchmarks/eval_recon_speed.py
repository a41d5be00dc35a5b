"""Images/s of `eval_recon` end to end, and the share of that time spent in each part.

The tokenizer's encode/decode and the two feature networks (LPIPS-VGG, FID Inception) are
wrapped with timers (CUDA synchronised), so the report says whether a run is bound by the
tokenizer (the goal on a GPU) or by the metrics. Weights: the registry model when it is in the
local Hugging Face cache, else random weights of its architecture; LPIPS and Inception get
seeded random weights (the speed does not depend on the values). Inputs: the photos in
../shared/images, repeated. Writes benchmarks/results/eval_recon-<device>.json.

    python benchmarks/eval_recon_speed.py [--model titok-l32] [--images 64] [-b 16] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reference.make_fid_reference import random_inception_weights
from tests.reference.make_lpips_ssim_reference import (
    seeded_heads_state,
    seeded_vgg16_state,
)
from titok_cli.bench_models import build_models
from titok_cli.eval_recon import ReconSettings, eval_recon
from titok_cli.quality.feature_nets import FeatureNets
from titok_cli.quality.inception import FIDInceptionV3
from titok_cli.quality.lpips import LPIPS


class Timer:
    """Wraps a callable; adds its wall time (after a CUDA sync) to `seconds`."""

    def __init__(self, fn, device: torch.device) -> None:
        self.fn, self.device, self.seconds, self.calls = fn, device, 0.0, 0

    def __call__(self, *args, **kwargs):
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="titok-l32")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("-b", "--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    models = build_models(model=args.model, with_generator=False)
    tok = models.tokenizer.to(device)
    lpips = LPIPS.from_state_dicts(seeded_vgg16_state(), seeded_heads_state()).to(device)
    inception = FIDInceptionV3()
    shapes = {k: tuple(v.shape) for k, v in inception.state_dict().items()}
    inception.load_state_dict(random_inception_weights(shapes))
    inception = inception.to(device).eval().requires_grad_(False)

    timers = {"encode": Timer(tok.encode, device), "decode": Timer(tok.decode, device),
              "lpips": Timer(lpips, device), "inception": Timer(inception, device)}  # fmt: skip
    tok.encode, tok.decode = timers["encode"], timers["decode"]
    nets = FeatureNets(lpips=timers["lpips"], inception=timers["inception"])

    photos = sorted((ROOT.parent / "shared" / "images").iterdir())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for k in range(args.images):
            photo = photos[k % len(photos)]
            (folder / f"{k:05d}_{photo.name}").symlink_to(photo)
        start = time.perf_counter()
        result = eval_recon([str(folder)], tok, nets, ReconSettings(args.batch_size, args.workers),
                            output=Path(tmp) / "r.json")  # fmt: skip
        total = time.perf_counter() - start

    parts = {name: round(t.seconds, 3) for name, t in timers.items()}
    report = {
        "model": models.tokenizer_info.name, "weights": models.tokenizer_info.weights,
        "image_size": tok.config.image_size, "device": str(device),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "images": result.count, "batch_size": args.batch_size,
        "workers": args.workers, "seconds": round(total, 3), "images_per_s": round(result.count / total, 3),
        "seconds_by_part": parts,
        "share_by_part": {name: round(s / total, 4) for name, s in parts.items()},
        "share_feature_networks": round((parts["lpips"] + parts["inception"]) / total, 4),
        "share_tokenizer": round((parts["encode"] + parts["decode"]) / total, 4),
    }  # fmt: skip
    out = ROOT / "benchmarks" / "results" / f"eval_recon-{device.type}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
