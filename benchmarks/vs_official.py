"""Ours against the official implementation, float32, in one run on one machine.

    python benchmarks/vs_official.py --official PATH [--site PATH] [--quick]

PATH is a checkout of github.com/bytedance/1d-tokenizer (its `modeling/` package is imported from
there; nothing of it is in this repository); --site is a folder holding the packages its model
code imports (omegaconf, einops, transformers; e.g. `pip install --target DIR ...`). Both sides
get random weights of the same registry architecture and the same random inputs, and run the
configurations of issue 4 (S-128 at batch 8, L-32 and BL-64-VQ at batch 4, the L-32 generator
with its official sampling at batch 8 and 32). Every (side, configuration) runs in a fresh child
process, alternating official / ours, so neither inherits the other's heap; a float32 GEMM check
in each child shows how much of the machine it had. The official side runs as its README shows
(plain `torch.no_grad()`, default allocator); ours as the `titok` command does (allocator tuned).
Writes benchmarks/results/vs-official-<machine>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (preset, task, batch); task "generate" = generator tokens only, with the registry's sampling defaults
CONFIGS = [
    ("titok-s128", "encode", 8),
    ("titok-s128", "decode", 8),
    ("titok-l32", "encode", 4),
    ("titok-l32", "decode", 4),
    ("titok-bl64-vq", "encode", 4),
    ("titok-bl64-vq", "decode", 4),
    ("titok-l32", "generate", 8),
    ("titok-l32", "generate", 32),
]
# The issue's figures for the official code on this project's 2-core AMD EPYC machines.
ISSUE_FIGURES = {
    ("titok-s128", "encode", 8): 6.9, ("titok-s128", "decode", 8): 0.67,
    ("titok-l32", "encode", 4): 0.87, ("titok-l32", "decode", 4): 0.39,
    ("titok-bl64-vq", "encode", 4): 2.56, ("titok-bl64-vq", "decode", 4): 0.79,
    ("titok-l32", "generate", 8): 0.87, ("titok-l32", "generate", 32): 0.98,
}  # fmt: skip


def gemm_check() -> dict[str, float]:
    from titok_cli.perf import matmul_peaks

    return {k: round(v, 1) for k, v in matmul_peaks("cpu", torch.float32, seconds=0.5).items()}


def timed(fn, batch: int, iters: int) -> dict:
    from titok_cli.perf import time_calls  # the timing loop of run_benchmark: one warm-up, then `iters` calls

    times = time_calls(fn, torch.device("cpu"), warmup=1, iters=iters).wall
    return {"images_per_s": batch / statistics.median(times), "seconds": [round(t, 3) for t in times]}


def inputs(preset: str, task: str, batch: int, codebook: int, tokens: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if task == "encode":
        return torch.rand(batch, 3, 256, 256, generator=g)
    if task == "decode":
        return torch.randint(0, codebook, (batch, tokens), generator=g)
    return torch.randint(0, 1000, (batch,), generator=g)  # class ids


def official_models(checkout: str, site: str | None, preset: str, task: str):
    """The official TiTok / ImageBert built from the registry config, random init, eval mode."""
    sys.path[:0] = [checkout] + ([site] if site else [])
    from transformers import BertConfig, BertModel  # noqa: F401 - imported before the stub below

    # modeling.modules imports its training losses, which import torchvision (unused here, and
    # PyPI's torchvision does not load beside this torch build): an empty stand-in.
    stub = types.ModuleType("torchvision")
    stub.models = types.ModuleType("torchvision.models")
    sys.modules.setdefault("torchvision", stub)
    sys.modules.setdefault("torchvision.models", stub.models)
    from modeling.maskgit import ImageBert, UViTBert
    from modeling.titok import TiTok

    from titok_cli import registry

    entry = registry.get(preset)
    torch.manual_seed(0)
    if task == "generate":
        gen_entry = registry.get(entry.generator)
        cfg = copy.deepcopy(gen_entry.config)
        cls = ImageBert if cfg["model"]["generator"]["model_type"] == "ViT" else UViTBert
        return cls(cfg).eval(), gen_entry.sampling
    cfg = copy.deepcopy(entry.config)
    cfg["model"]["vq_model"].setdefault("commitment_cost", 0.25)  # training-only, required by the constructor
    return TiTok(cfg).eval(), None


def child(args: argparse.Namespace) -> dict:
    preset, task, batch = args.preset, args.task, args.batch
    before = gemm_check()
    if args.side == "official":
        model, sampling = official_models(args.official, args.site, preset, task)
        cfg = model.config.model.vq_model
        x = inputs(preset, task, batch, cfg.codebook_size, cfg.num_latent_tokens)
        if task == "encode":
            fn = lambda: model.encode(x)[1]["min_encoding_indices"]  # noqa: E731
        elif task == "decode":
            fn = lambda: model.decode_tokens(x)  # noqa: E731
        else:
            s = sampling
            fn = lambda: model.generate(  # noqa: E731
                condition=x, guidance_scale=s["guidance_scale"], guidance_decay=s["guidance_decay"],
                guidance_scale_pow=s["guidance_scale_pow"], randomize_temperature=s["randomize_temperature"],
                softmax_temperature_annealing=s["softmax_temperature_annealing"], num_sample_steps=s["num_steps"],
            )  # fmt: skip
        with torch.no_grad():
            result = timed(fn, batch, args.iters)
    else:
        from titok_cli.allocator import tune_cpu_allocator
        from titok_cli.bench_models import build_models

        tune_cpu_allocator()
        torch.manual_seed(0)
        models = build_models(model=preset, with_generator=task == "generate")
        tok, gen = models.tokenizer, models.generator
        x = inputs(preset, task, batch, int(tok.codebook_size or 0), tok.num_tokens)
        if task == "encode":
            fn = lambda: tok.encode(x)  # noqa: E731
        elif task == "decode":
            fn = lambda: tok.decode(x)  # noqa: E731
        else:
            fn = lambda: gen.generate(x, generator=torch.Generator().manual_seed(0))  # noqa: E731
        result = timed(fn, batch, args.iters)
    result["gemm_gflops_before"] = before
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="checkout of bytedance/1d-tokenizer")
    ap.add_argument("--site", help="folder with the official code's dependencies (omegaconf, einops, transformers)")
    ap.add_argument("--iters", type=int, default=3, help="timed calls per configuration (the median counts)")
    ap.add_argument("--quick", action="store_true", help="skip the batch-32 generator configuration")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--side", choices=["official", "ours"], help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--preset", help=argparse.SUPPRESS)
    ap.add_argument("--task", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(child(args)))
        return 0

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import load_avg, machine_info, machine_name  # noqa: E402 - benchmarks/run.py

    device = torch.device("cpu")
    out = args.out or ROOT / "benchmarks" / "results" / f"vs-official-{machine_name(device)}.json"
    data: dict = {"machine": machine_info(device), "load_average_start": load_avg(), "iters": args.iters,
                  "official_checkout": _describe_checkout(args.official), "official_site": _versions(args.site),
                  "rows": [], "errors": []}  # fmt: skip
    started = time.time()
    configs = [c for c in CONFIGS if not (args.quick and c[2] == 32)]
    for preset, task, batch in configs:
        row: dict = {"model": preset, "task": task, "batch": batch, "issue_official": ISSUE_FIGURES.get((preset, task, batch))}
        for side in ("official", "ours"):
            cmd = [sys.executable, __file__, "--official", args.official, "--side", side, "--preset", preset,
                   "--task", task, "--batch", str(batch), "--iters", str(args.iters)]  # fmt: skip
            if args.site:
                cmd += ["--site", args.site]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                data["errors"].append({"side": side, "model": preset, "task": task, "batch": batch,
                                       "stderr": proc.stderr[-2000:]})  # fmt: skip
                continue
            row[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        if "official" in row and "ours" in row:
            row["speedup"] = row["ours"]["images_per_s"] / row["official"]["images_per_s"]
        data["rows"].append(row)
        print(json.dumps(row), flush=True)
        _save(out, data)
    data["load_average_end"] = load_avg()
    data["total_seconds"] = round(time.time() - started, 1)
    _save(out, data)
    print(markdown(data))
    print(f"wrote {out}")
    return 1 if data["errors"] else 0


def markdown(data: dict) -> str:
    lines = ["| model | task | batch | official img/s | ours img/s | ours / official | issue's official figure |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in data["rows"]:
        off, ours = r.get("official", {}).get("images_per_s"), r.get("ours", {}).get("images_per_s")
        fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
        ratio = "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x"
        lines.append(f"| {r['model']} | {r['task']} | {r['batch']} | {fmt(off)} | {fmt(ours)} | {ratio} | "
                     f"{fmt(r.get('issue_official'))} |")  # fmt: skip
    return "\n".join(lines)


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def _describe_checkout(path: str) -> dict:
    info: dict = {"date": dt.date.today().isoformat()}
    try:
        info["commit"] = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True,
                                        check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None  # an exported tree, not a git checkout
    return info


def _versions(site: str | None) -> dict:
    from importlib.metadata import PathDistribution

    if not site:
        return {}
    found = {}
    for meta in sorted(Path(site).glob("*.dist-info")):
        dist = PathDistribution(meta)
        found[dist.metadata["Name"]] = dist.version
    return found


if __name__ == "__main__":
    raise SystemExit(main())
