"""Peak resident memory of `encode_files` on 2,000 vs 20,000 small images (issue: bounded memory).

Each size runs in a fresh subprocess that reports its peak RSS (ru_maxrss). A streaming
encoder shows (almost) the same peak for both; per-image growth would show as a 10x gap.
Writes benchmarks/results/encode_memory-<machine>.json.

    python benchmarks/encode_memory.py [--model ../shared/golden/tok_vq_legacy_tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import resource, sys, time, titok_cli
from titok_cli.encode_job import encode_files
tok = titok_cli.load_tokenizer(sys.argv[1])
t = time.perf_counter()
res = encode_files([sys.argv[2]], sys.argv[3], tok, batch_size=64, workers=int(sys.argv[4]))
print(res.count, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_images(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for k in range(n):
        sub = folder / f"{k // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(sub / f"{k:06d}.png", compress_level=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT.parent / "shared" / "golden" / "tok_vq_legacy_tiny"))
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            src = Path(tmp) / f"imgs{n}"
            make_images(src, n)
            out = Path(tmp) / f"tokens{n}.npy"
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            line = subprocess.run([sys.executable, "-c", CHILD, args.model, str(src), str(out), str(args.workers)],
                                  env=env, check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
            count, seconds, rss_kb = int(line[0]), float(line[1]), int(line[2])
            rows.append({"images": count, "seconds": round(seconds, 1), "images_per_s": round(count / seconds, 1),
                         "peak_rss_mb": round(rss_kb / 1024, 1)})  # fmt: skip
            print(rows[-1], flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},  # fmt: skip
        "model": Path(args.model).name,
        "workers": args.workers,
        "runs": rows,
        "peak_ratio_largest_vs_smallest": round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3),
        "bound_mb": 1024,
        "note": "peak RSS of the whole process, model and torch included; the bound is what the README promises",
    }
    slug = f"cpu{os.cpu_count()}"
    path = ROOT / "benchmarks" / "results" / f"encode_memory-{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
