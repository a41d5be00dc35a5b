"""How long the default `titok bench` takes, and how much memory, as a user runs it.

    python benchmarks/bench_time.py                     # 512 and 256, one child process each
    python benchmarks/bench_time.py --resolutions 512 --shared "other jobs were running"

Runs `python -m titok_cli bench --resolution R --json` in a child process (this checkout first on
PYTHONPATH), records its wall time and peak RSS (getrusage of the children: each resolution in
its own helper process, so one child's peak does not hide the next), the CPU model and the thread
count, and writes benchmarks/results/bench-time-<cpu-slug>.json. Goal (issue 9): under 3 minutes
and under 6 GB at 512x512 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from titok_cli.perf import cpu_model  # noqa: E402

GOAL = {"512": {"seconds": 180, "peak_rss_gb": 6.0}}


def slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def measure(resolution: int, extra: list[str]) -> dict:
    """Run one default bench in a child; its wall time, peak RSS and what it reported."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}  # bench never downloads; make sure of it
    cmd = [sys.executable, "-m", "titok_cli", "bench", "--resolution", str(resolution), "--json", *extra]
    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    load_after = [round(x, 2) for x in os.getloadavg()]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # this helper's only child: the bench
    peak_kib = usage.ru_maxrss  # KiB on Linux
    out: dict = {"command": " ".join(["titok", *cmd[3:]]), "returncode": proc.returncode, "wall_s": round(wall, 1),
                 "peak_rss_mb": round(peak_kib / 1024, 1),
                 "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "load_average_before": load_before,
                 "load_average_after": load_after, "progress": proc.stderr.splitlines()[-40:]}  # fmt: skip
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        return out
    out["bench"] = {k: result.get(k) for k in ("batch_size", "device", "dtype", "resolution", "threads",
                                                "omp_num_threads", "timing", "weights", "notes")}  # fmt: skip
    keys = ("calls", "first_call_ms", "images_per_s", "images_per_s_from_cpu_time", "latency_ms_min", "latency_ms",
            "latency_ms_max", "peak_memory_mb")  # fmt: skip
    tasks = [t for t in ("encode", "decode", "sample", "generate") if result.get(t)]
    out["bench"]["tasks"] = {t: {k: result[t].get(k) for k in keys} for t in tasks}
    goal = GOAL.get(str(resolution))
    if goal:
        out["meets_goal"] = wall < goal["seconds"] and peak_kib / 2**20 < goal["peak_rss_gb"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[512, 256])
    ap.add_argument("--shared", default=None, help="say the machine was shared (and with what) in the file")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--append", action="store_true", help="keep the runs already in the results file")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one resolution, result as JSON on stdout
    ap.add_argument("extra", nargs="*", help="more `titok bench` flags, after --")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.extra)))
        return 0
    runs = []
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load_start = [round(x, 2) for x in os.getloadavg()]
    for r in args.resolutions:
        cmd = [sys.executable, __file__, "--child", str(r), "--", *args.extra]
        child = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append({"date": when, **json.loads(child.stdout)})
        print(json.dumps({k: v for k, v in runs[-1].items() if k not in ("progress", "bench")}), flush=True)
    data = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "machine_shared": args.shared,
        "python": platform.python_version(),
        "goal": GOAL,
        "runs": runs,
    }
    import torch

    data["torch"], data["torch_threads"] = torch.__version__, torch.get_num_threads()
    out = args.out or ROOT / "benchmarks" / "results" / f"bench-time-{slug(cpu_model())}.json"
    if args.append and out.exists():
        old = json.loads(out.read_text())
        keep = ("date", "load_average_start", "load_average_end", "machine_shared")
        data["runs"] = [{**{k: old.get(k) for k in keep}, **r} for r in old["runs"]] + runs
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
