"""Peak resident memory and wall time of `titok decode` on a 1,000-row token file (issue 9.6).

    python benchmarks/decode_memory.py                    # titok-l32 (256x256), 1,000 rows
    python benchmarks/decode_memory.py --rows 50 1000     # a quick estimate first, then the real run

The tokenizer is a registry two-stage architecture (default titok-l32: ViT decoder, then the
MaskGIT-VQGAN pixel decoder at 256x256) with seeded random weights, saved as a local checkpoint
folder (config.json + model.safetensors), so nothing is downloaded and the memory is that of the
real architecture. The token file holds random ids. Each size runs the real CLI,
`python -m titok_cli decode TOKENS -m FOLDER -o OUT --device cpu` at its default batch size, in
a child process whose own rusage (os.wait4) gives the peak RSS. Goal (issue 9): under 4 GB.
Writes benchmarks/results/decode_memory-<cpu-slug>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from titok_cli.perf import cpu_model  # noqa: E402

GOAL_GB = 4.0


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def random_checkpoint(preset: str, folder: Path) -> dict:
    """The preset's architecture with seeded random weights, as a checkpoint folder `--model` accepts."""
    import torch
    from safetensors.torch import save_model

    from titok_cli import registry
    from titok_cli.models.tokenizer import TiTokTokenizer

    entry = registry.get(preset)
    torch.manual_seed(0)
    tok = TiTokTokenizer.from_config(entry.config)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(entry.config))
    save_model(tok, str(folder / "model.safetensors"))
    return {"preset": preset, "image_size": tok.image_size, "num_tokens": tok.num_tokens,
            "codebook_size": tok.codebook_size, "two_stage": bool(tok.config.finetune_decoder),
            "num_parameters": sum(p.numel() for p in tok.parameters())}  # fmt: skip


def default_batch_size() -> int:
    """`titok decode`'s own default, read from the command (so this file never restates it)."""
    from titok_cli.cli.decode import decode

    return int(inspect.signature(decode).parameters["batch_size"].default)


def run_decode(tokens: Path, model: Path, out: Path) -> dict:
    """One `titok decode` in a child process: wall time, its peak RSS, and what it wrote."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "titok_cli", "decode", str(tokens), "-m", str(model), "-o", str(out),
           "--device", "cpu", "--quiet"]  # fmt: skip
    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    log = out.with_suffix(".log")
    with open(log, "w") as fh:  # a file, not a pipe: nothing can block while we wait
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=fh)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not every child's maximum
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    stderr = log.read_text(errors="replace")
    pngs = sum(1 for _ in out.glob("*.png"))
    return {"command": " ".join(["titok", *cmd[3:]]), "returncode": proc.returncode, "wall_s": round(wall, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "pngs_written": pngs, "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "stderr_tail": stderr.splitlines()[-5:]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="titok-l32", help="registry tokenizer whose architecture to use")
    ap.add_argument("--rows", type=int, nargs="+", default=[1000])
    ap.add_argument("--shared", default=None, help="say the machine was shared (and with what) in the file")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--append", action="store_true", help="keep the runs already in the results file")
    args = ap.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / f"decode_memory-{slug(cpu_model())}.json"
    import torch

    runs = []
    with tempfile.TemporaryDirectory(prefix="titok-decode-memory-") as tmp:
        folder = Path(tmp) / args.preset
        model = random_checkpoint(args.preset, folder)
        rng = np.random.default_rng(0)
        for n in args.rows:
            tokens = Path(tmp) / f"tokens-{n}.npy"
            np.save(tokens, rng.integers(0, model["codebook_size"], (n, model["num_tokens"]), dtype=np.int64))
            when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            row = {"rows": n, "date": when, **run_decode(tokens, folder, Path(tmp) / f"png-{n}")}
            row["images_per_s"] = round(row["pngs_written"] / row["wall_s"], 3)  # a stopped run wrote fewer
            row["meets_goal"] = row["returncode"] == 0 and row["pngs_written"] == n and row["peak_rss_mb"] < GOAL_GB * 1024
            runs.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "stderr_tail"}), flush=True)
    meminfo = Path("/proc/meminfo").read_text().split("\n") if Path("/proc/meminfo").exists() else []
    data = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "mem_total": next((line.split(":")[1].strip() for line in meminfo if line.startswith("MemTotal")), None),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "machine_shared": args.shared,
        "model": {**model, "weights": "random (seeded), saved as a local checkpoint folder"},
        "batch_size": default_batch_size(),
        "goal_peak_rss_gb": GOAL_GB,
        "runs": runs,
        "note": "peak RSS of the whole `titok decode` process: Python, torch, the model and the PNG writer",
    }
    if args.append and out.exists():
        old = json.loads(out.read_text())
        data["runs"] = [{**r, "date": r.get("date", old["date"])} for r in old["runs"]] + runs
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
