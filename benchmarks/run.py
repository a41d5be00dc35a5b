"""One-shot benchmark of our inference paths; writes benchmarks/results/<machine>.json.

    python benchmarks/run.py                    # CPU plan: S-128 and L-32, batch 1 and 8
    python benchmarks/run.py --batches 1 8 32   # add batch 32
    python benchmarks/run.py --device cuda      # GPU plan: every 256 preset + the 512 architectures,
                                                # batch 1/8/32, sampling at batch 125, fp32/bf16/fp16

Measured per preset and batch: encode / decode / sample images/s (sample = generator tokens with the
registry's sampling defaults + decoding to pixels), peak memory, achieved GFLOP/s and its share of
the measured matmul peak; and, for half precision, agreement with float32 on the photos in
../shared/images (token agreement, PSNR between decodes, NaN count). Weights are the real ones
when they are in the local Hugging Face cache, random otherwise (then agreement is indicative only).
The file is rewritten after every measurement, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import math
import os
import platform
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from titok_cli.allocator import tune_cpu_allocator  # noqa: E402
from titok_cli.bench import run_benchmark  # noqa: E402
from titok_cli.bench_models import BenchModels, build_models  # noqa: E402
from titok_cli.devices import parse_dtype  # noqa: E402
from titok_cli.metrics import precision_agreement  # noqa: E402
from titok_cli.perf import cpu_model, gemm_backends, matmul_peaks  # noqa: E402

IMAGES = ROOT.parent / "shared" / "images"

# Official implementation on the same CPU machine type (issue 4): float32, 2 threads, random weights.
OFFICIAL_CPU = {
    "titok-s128": {"batch": 8, "encode": 6.9, "decode": 0.67},
    "titok-l32": {"batch": 4, "encode": 0.87, "decode": 0.39, "generate_b8": 0.87, "generate_b32": 0.98},
    "titok-bl64-vq": {"batch": 4, "encode": 2.56, "decode": 0.79},
}
PAPER_A100 = {"titok-l32": 101.6, "titok-b64": 89.8, "titok-s128": 53.3, "titok-l64-512": 41.0, "titok-b128-512": 33.3}

CPU_PLAN = {
    "presets": ["titok-s128", "titok-l32"],
    "dtypes": ["float32", "bfloat16"],
    # (tasks at every batch, batches for sample, batches for generate-only)
    "sample_batches": {"titok-s128": [1], "titok-l32": [1, 8]},  # S-128 samples 64 steps: ~10 TFLOP/image
    "generate_batches": {"titok-l32": [8]},
    "compile": [("titok-s128", 8, ("encode", "decode"))],
    "headline": [("titok-l32", 8, ("sample",))],  # the CPU sampling target, measured first
}
GPU_PLAN = {
    "presets": ["titok-l32", "titok-b64", "titok-s128", "titok-bl64-vq", "titok-bl128-vq", "titok-sl256-vq",
                "titok-ll32-vae", "titok-bl64-vae", "titok-bl128-vae", "titok-l64-512", "titok-b128-512"],
    "dtypes": ["float32", "bfloat16", "float16"],
    "sample_batches": {"titok-l32": [125], "titok-b64": [125], "titok-s128": [125],
                       "titok-l64-512": [125], "titok-b128-512": [125]},
    "generate_batches": {"titok-l32": [125]},
    "compile": [("titok-l32", 125, ("sample",))],
    # The GPU target (L-32 sampling at batch 125, bf16 >= 2x fp32 and >= 610 images/s),
    # measured before anything else so that a short device session records it first.
    "headline": [("titok-l32", 125, ("sample",))],
}  # fmt: skip


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_info(device: torch.device) -> dict:
    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma")))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())  # fmt: skip
    return info


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda-{slug(torch.cuda.get_device_name(device))}"
    return f"cpu-{slug(cpu_model())}-{torch.get_num_threads()}threads"


def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def photos(size: int) -> torch.Tensor | None:
    from titok_cli.preprocess import load_image, to_tensor

    if not IMAGES.is_dir():
        return None
    paths = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return to_tensor([load_image(p, size) for p in paths]) if paths else None


def agreement(tok32, tok_half, device: torch.device, chunk: int) -> dict:
    """Half vs float32 on the real photos: token agreement, PSNR of decodes of the same tokens, NaNs."""
    x = photos(tok32.image_size)
    if x is None:
        return {"skipped": f"no photos in {IMAGES}"}
    return precision_agreement(tok32, tok_half, x.to(device), chunk)


class Recorder:
    def __init__(self, path: Path, header: dict) -> None:
        self.path, self.data = path, {**header, "runs": [], "agreement": [], "errors": []}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        tmp.replace(self.path)

    def add_run(self, run: dict, peaks: dict, cpu_peaks: dict) -> None:
        """Keep a run_benchmark result and its table row (marked with the run's phase, if any); save."""
        self.data["runs"].append(run)
        row = summarize(run, peaks, cpu_peaks)
        if "phase" in run:
            row["phase"] = run["phase"]
        self.data.setdefault("table", []).append(row)
        self.save()
        print(json.dumps(row), flush=True)

    def finish(self, started: float) -> int:
        self.data["load_average_end"] = load_avg()
        self.data["total_seconds"] = round(time.time() - started, 1)
        self.save()
        print(f"wrote {self.path} in {self.data['total_seconds']:.0f} s", flush=True)
        return 0


def fastest_gemm(device: torch.device, dtype: torch.dtype, n: int) -> tuple[str, object]:
    """The GEMM route that set this process's peak (see titok_cli.perf.gemm_backends)."""
    fns = gemm_backends(device, dtype, n)
    name = PEAK_ROUTE.get(str(dtype).removeprefix("torch."), "aten_mm")
    return (name, fns[name]) if name in fns else ("aten_mm", fns["aten_mm"])


PEAK_ROUTE: dict[str, str] = {}  # dtype name -> fastest GEMM route, filled by main()


def matmul_now(device: torch.device, seconds: float = 1.0) -> dict:
    """A short float32 GEMM check right before a run: shows how much of the machine we had then."""
    n = 2048 if device.type == "cpu" else 8192
    _, fn = fastest_gemm(device, torch.float32, n)
    fn()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"best": round(2 * n**3 / times[0] / 1e9, 1), "median": round(2 * n**3 / times[len(times) // 2] / 1e9, 1)}


def matmul_peak_from_cpu_time(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """CPU GEMM GFLOP/s as threads x work / process CPU time: what the cores do when we own them."""
    _, fn = fastest_gemm(torch.device("cpu"), dtype, n)
    fn()
    cpu = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        cpu.append(time.process_time() - t0)
    cpu.sort()
    return 2 * n**3 * torch.get_num_threads() / cpu[len(cpu) // 2] / 1e9


def summarize(run: dict, peaks: dict, cpu_peaks: dict | None = None) -> dict:
    row = {k: run[k] for k in ("model", "dtype", "batch_size", "compile")}
    row["fp32_gemm_gflops_just_before"] = run.get("fp32_gemm_just_before")
    row["load_average"] = run.get("load_average")
    for task in ("encode", "decode", "sample", "generate"):
        r = run.get(task)
        if not r:
            continue
        row[f"{task}_images_per_s"] = round(r["images_per_s"], 4)
        if "images_per_s_best" in r:
            row[f"{task}_images_per_s_best"] = round(r["images_per_s_best"], 4)
        if "images_per_s_from_cpu_time" in r:
            row[f"{task}_images_per_s_from_cpu_time"] = round(r["images_per_s_from_cpu_time"], 4)
        row[f"{task}_peak_memory_mb"] = None if r["peak_memory_mb"] is None else round(r["peak_memory_mb"], 1)
        if r.get("gflops_per_s"):
            row[f"{task}_gflops_per_s"] = round(r["gflops_per_s"], 1)
            peak = peaks.get(run["dtype"]) or peaks["float32"]
            row[f"{task}_share_of_matmul_peak"] = round(r["gflops_per_s"] / peak, 3)
            if "images_per_s_from_cpu_time" in r:
                g = r["gflop_per_image"] * r["images_per_s_from_cpu_time"]
                cpu_peak = (cpu_peaks or {}).get(run["dtype"]) or (cpu_peaks or {}).get("float32") or peak
                row[f"{task}_gflops_per_s_from_cpu_time"] = round(g, 1)
                row[f"{task}_share_of_matmul_peak_from_cpu_time"] = round(g / cpu_peak, 3)
    return row


def half_ratios(table: list[dict]) -> list[str]:
    """Half precision over float32 per model, batch and task: ratio of medians, and of best calls.

    On a shared machine one slow call moves a median of 3; the best call is the least disturbed,
    so both are shown."""
    eager = [r for r in table if not r["compile"]]
    fp32 = {(r["model"], r["batch_size"], t): r for r in eager if r["dtype"] == "float32"
            for t in ("encode", "decode", "sample", "generate") if r.get(f"{t}_images_per_s")}  # fmt: skip
    lines = ["| model | dtype | batch | task | half / float32 (median) | (best call) |", "|---|---|---|---|---|---|"]
    for r in eager:
        if r["dtype"] == "float32":
            continue
        for t in ("encode", "decode", "sample", "generate"):
            base = fp32.get((r["model"], r["batch_size"], t))
            if base is None or not r.get(f"{t}_images_per_s"):
                continue
            med = r[f"{t}_images_per_s"] / base[f"{t}_images_per_s"]
            best = (r.get(f"{t}_images_per_s_best") or 0) / (base.get(f"{t}_images_per_s_best") or math.inf)
            lines.append(f"| {r['model']} | {r['dtype']} | {r['batch_size']} | {t} | {med:.2f}x | "
                         + (f"{best:.2f}x |" if best else "- |"))  # fmt: skip
    return lines


def markdown(path: Path) -> str:
    """The README table of a results file."""
    data = json.loads(path.read_text())
    lines = ["| model | dtype | batch | compile | encode img/s | decode img/s | sample img/s | generate seq/s | "
             "encode / decode share of matmul peak |", "|---|---|---|---|---|---|---|---|---|"]
    for row in data.get("table", []):
        def cell(task: str) -> str:
            v = row.get(f"{task}_images_per_s")
            c = row.get(f"{task}_images_per_s_from_cpu_time")
            if v is None:
                return ""
            return f"{v:.3g}" + (f" ({c:.3g})" if c is not None else "")

        shares = "/".join(
            f"{row[k]:.0%}" for k in ("encode_share_of_matmul_peak_from_cpu_time", "decode_share_of_matmul_peak_from_cpu_time")
            if row.get(k) is not None
        ) or "/".join(f"{row[k]:.0%}" for k in ("encode_share_of_matmul_peak", "decode_share_of_matmul_peak") if row.get(k) is not None)
        lines.append(f"| {row['model']} | {row['dtype']} | {row['batch_size']} | {'yes' if row['compile'] else ''} | "
                     f"{cell('encode')} | {cell('decode')} | {cell('sample')} | {cell('generate')} | {shares} |")
    lines += ["", *half_ratios(data.get("table", []))]
    lines += ["", "| model | dtype | photos | token agreement | decode PSNR dB | NaN |", "|---|---|---|---|---|---|"]
    for a in data.get("agreement", []):
        agree = a.get("token_agreement", a.get("latent_max_rel_error"))
        lines.append(f"| {a['model']} | {a['dtype']} | {a.get('images')} | {agree if agree is None else round(agree, 4)} | "
                     f"{a.get('decode_psnr_db', float('nan')):.1f} | {a.get('nan_count')} |")
    return "\n".join(lines)


def headline(rec: "Recorder", device: torch.device, preset: str, batch: int, tasks: tuple, dtypes: list,
             iters: int, warmup: int, peaks: dict, cpu_peaks: dict) -> None:
    """One configuration in every dtype from the same float32 weights, rows marked "headline"."""
    try:
        m32 = build_models(model=preset)
    except Exception as exc:  # noqa: BLE001 - record and go on
        rec.data["errors"].append({"model": preset, "phase": "headline", "error": repr(exc)[:500]})
        rec.save()
        return
    for dtype in dtypes:
        t0 = time.time()
        try:
            r = run_benchmark(model=preset, device=str(device), dtype=dtype, batch_size=batch, warmup=warmup,
                              iters=iters, tasks=tasks, models=fresh_copy(m32)).to_dict()
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory
            rec.data["errors"].append({"model": preset, "dtype": dtype, "batch": batch, "phase": "headline",
                                       "error": repr(exc)[:500]})  # fmt: skip
            rec.save()
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        r.update(model=preset, phase="headline", seconds=round(time.time() - t0, 1), load_average=load_avg())
        rec.add_run(r, peaks, cpu_peaks)


def fresh_copy(models: BenchModels) -> BenchModels:
    """The same float32 weights for another run (run_benchmark converts the models in place)."""
    return replace(models, tokenizer=copy.deepcopy(models.tokenizer), generator=copy.deepcopy(models.generator))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="encode/decode batch sizes")
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument("--dtypes", nargs="+", default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--headline-only", action="store_true",
                    help="measure only the plan's headline configuration (GPU: L-32 sampling at batch 125) "
                         "in every dtype, then stop")  # fmt: skip
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None, help="print the README tables of a results file and exit")
    ap.add_argument("--same-process", action="store_true",
                    help="CPU: measure every preset in this process (default: one child process per preset)")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    plan = GPU_PLAN if gpu else CPU_PLAN
    presets = args.presets or plan["presets"]
    dtypes = args.dtypes or plan["dtypes"]
    batches = args.batches or ([1, 8, 32] if gpu else [1, 8])
    iters = args.iters or (5 if gpu else 3)
    warmup = 2 if gpu else 1
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 (the exact path)
        torch.backends.cudnn.allow_tf32 = False

    started = time.time()
    allocator = tune_cpu_allocator() if not gpu else "default"
    out = args.out or ROOT / "benchmarks" / "results" / f"{machine_name(device)}.json"
    rec = Recorder(out, {"machine": machine_info(device), "load_average_start": load_avg()})
    rec.data["official_cpu_float32"] = OFFICIAL_CPU
    rec.data["paper_a100_float32_samples_per_s"] = PAPER_A100
    routes = {name: matmul_peaks(device, parse_dtype(name), seconds=3.0) for name in dtypes}
    PEAK_ROUTE.update({name: max(r, key=r.get) for name, r in routes.items()})
    peaks = {name: max(r.values()) for name, r in routes.items()}
    rec.data["matmul_peak_gflops"] = peaks
    rec.data["matmul_peak_gflops_by_route"] = routes  # CPU float32: ATen mm (MKL) and oneDNN
    cpu_peaks = {} if gpu else {name: matmul_peak_from_cpu_time(parse_dtype(name)) for name in dtypes}
    rec.data["matmul_peak_gflops_from_cpu_time"] = cpu_peaks
    rec.data["settings"] = {"batches": batches, "iters": iters, "warmup": warmup, "statistic": "median",
                            "tf32": False if gpu else None, "cpu_allocator": allocator,
                            "flops": "nominal (official algorithm), FlopCounterMode"}  # fmt: skip
    rec.save()
    print(f"matmul peak GFLOP/s: {routes}, from CPU time: {cpu_peaks}", flush=True)

    if args.headline_only or (gpu and not args.presets):
        for preset, batch, tasks in plan["headline"]:
            headline(rec, device, preset, batch, tasks, dtypes, iters, warmup, peaks, cpu_peaks)
        if args.headline_only:
            return rec.finish(started)

    if not gpu and not args.same_process and len(presets) > 1:
        # One fresh process per preset: measured in one process, an L-32 float32 decode at batch 8
        # ran 40% slower after the S-128 bfloat16 runs than in a fresh process (retained heap /
        # allocator state), which a user running one model never sees. Same run, same file.
        rec.data["settings"]["process_per_preset"] = True
        for preset in presets:
            part = out.with_name(f"{out.stem}.{preset}.part.json")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--presets", preset, "--dtypes", *dtypes,
                   "--batches", *map(str, batches), "--iters", str(iters), "--out", str(part)]  # fmt: skip
            if args.no_compile:
                cmd.append("--no-compile")
            import subprocess

            rc = subprocess.call(cmd)
            try:
                child = json.loads(part.read_text())
                part.unlink()
            except (OSError, ValueError) as exc:
                rec.data["errors"].append({"model": preset, "error": f"child process rc {rc}: {exc!r}"})
                rec.save()
                continue
            for key in ("runs", "agreement", "errors", "table"):
                rec.data.setdefault(key, []).extend(child.get(key, []))
            rec.data.setdefault("per_preset_process", {})[preset] = {
                k: child.get(k) for k in ("matmul_peak_gflops", "matmul_peak_gflops_by_route",
                                          "matmul_peak_gflops_from_cpu_time",
                                          "load_average_start", "load_average_end", "total_seconds")
            }  # fmt: skip
            rec.save()
        return rec.finish(started)

    for preset in presets:
        try:
            m32 = build_models(model=preset)
        except Exception as exc:  # noqa: BLE001 - record and go on
            rec.data["errors"].append({"model": preset, "error": repr(exc)})
            rec.save()
            continue
        for dtype in dtypes:
            models = m32 if dtype == "float32" else fresh_copy(m32)
            tok, gen = models.tokenizer, models.generator
            jobs = [(b, ("encode", "decode")) for b in batches]
            jobs += [(b, ("sample",)) for b in plan["sample_batches"].get(preset, [])]
            jobs += [(b, ("generate",)) for b in plan["generate_batches"].get(preset, [])]
            for batch, tasks in jobs:
                if gen is None and tasks != ("encode", "decode"):
                    continue
                heavy = tasks == ("sample",) and preset == "titok-s128" and not gpu
                gemm = matmul_now(device)
                t0 = time.time()
                try:
                    r = run_benchmark(model=preset, device=str(device), dtype=dtype, batch_size=batch,
                                      warmup=0 if heavy else warmup, iters=1 if heavy else iters,
                                      tasks=tasks, models=models).to_dict()  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory at a large batch
                    rec.data["errors"].append({"model": preset, "dtype": dtype, "batch": batch, "tasks": tasks,
                                               "error": repr(exc)[:500]})  # fmt: skip
                    if gpu:
                        torch.cuda.empty_cache()
                    rec.save()
                    continue
                r["model"] = preset
                r["seconds"] = round(time.time() - t0, 1)
                r["fp32_gemm_just_before"] = gemm
                r["load_average"] = load_avg()
                rec.add_run(r, peaks, cpu_peaks)
            if dtype != "float32":
                try:
                    ag = agreement(m32.tokenizer, tok, device, chunk=8)
                except Exception as exc:  # noqa: BLE001
                    ag = {"error": repr(exc)[:500]}
                rec.data["agreement"].append({"model": preset, "dtype": dtype, "weights": m32.weights, **ag})
                rec.save()
                print(json.dumps(rec.data["agreement"][-1]), flush=True)
                del tok, gen, models
                gc.collect()
        del m32
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()

    if not args.no_compile:
        for preset, batch, tasks in plan["compile"]:
            if preset not in presets:
                continue
            for dtype in dtypes[:2]:
                t0 = time.time()
                try:
                    models = build_models(model=preset, with_generator="sample" in tasks)
                    r = run_benchmark(model=preset, device=str(device), dtype=dtype, batch_size=batch, compile=True,
                                      warmup=2, iters=iters, tasks=tasks, models=models).to_dict()  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - compile may be unavailable (no compiler, ...)
                    rec.data["errors"].append({"model": preset, "dtype": dtype, "compile": True,
                                               "error": repr(exc)[:500]})  # fmt: skip
                    rec.save()
                    continue
                r["model"] = preset
                r["seconds"] = round(time.time() - t0, 1)
                r["load_average"] = load_avg()
                rec.add_run(r, peaks, cpu_peaks)
                del models
                gc.collect()

    return rec.finish(started)


if __name__ == "__main__":
    raise SystemExit(main())
