"""What the two training benchmarks (train_throughput.py, finetune_throughput.py) share: the
machine record, the result file's name, and the summary of one run's metrics.jsonl."""

from __future__ import annotations

import datetime as dt
import json
import platform
import re
import statistics
from pathlib import Path
from typing import Any

import torch

from titok_cli.perf import cpu_model
from titok_cli.training.loop import MetricsLog

ROOT = Path(__file__).resolve().parents[1]


def run_record(device: str, shared: str) -> dict[str, Any]:
    """Where and when: CPU, threads, platform, torch, GPU; the date and a note on other load."""
    return {"machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "platform": platform.platform(),
                        "torch": torch.__version__,
                        "cuda": torch.cuda.get_device_name() if device.startswith("cuda") else None},
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "shared": shared}  # fmt: skip


def result_path(kind: str, name: str, device: str, tag: str = "") -> Path:
    """benchmarks/results/<kind>-<name>-<device>-<cpu slug><tag>.json"""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{name}-{device}-{cpu_model()}".lower()).strip("-")
    return ROOT / "benchmarks" / "results" / f"{kind}-{slug}{tag}.json"


def summarize(run: Path, warmup: int, rate: str) -> dict[str, Any]:
    """Median `rate` and steps/s over the training steps after `warmup`, peak memory, last loss."""
    rows = [r for r in MetricsLog.read(run / "metrics.jsonl") if "loss" in r][warmup:]
    return {rate: statistics.median(r[rate] for r in rows), "steps_per_s": statistics.median(r["steps_per_s"] for r in rows),
            "peak_memory_mb": max(r["memory_mb"] for r in rows), "final_loss": rows[-1]["loss"]}  # fmt: skip


def record_run(out: Path, result: dict[str, Any], precision: str, summary: dict[str, Any]) -> None:
    """Add one precision's summary to `result`, print it and rewrite the result file."""
    result["runs"][precision] = summary
    print(precision, json.dumps(summary), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
