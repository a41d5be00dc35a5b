"""Training throughput of `titok train` (tokens/s, steps/s) for a generator architecture on this machine.

    python benchmarks/train_throughput.py                           # L-32 generator, CPU, batch 8, fp32 + bf16
    python benchmarks/train_throughput.py --generator PATH/config.json --steps 20 --batch-size 16

Runs the real loop (`train_generator`: masking, forward, backward, clipping, AdamW, EMA) on
synthetic token ids of the architecture's shape (speed does not depend on the values), once per
precision, and reports the median of the per-step rates after `--warmup` steps from metrics.jsonl.
Writes benchmarks/results/train-<generator>-<device>-<cpu-slug>.json with the machine recorded.
The run's final checkpoint and Hub folder go to a temporary folder that is deleted (L-32: ~3 GB).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from titok_cli.config import generator_config_from_dict  # noqa: E402
from titok_cli.token_writers import save_tokens  # noqa: E402
from titok_cli.training import TrainSettings, train_generator  # noqa: E402
from titok_cli.training.generator_job import generator_spec  # noqa: E402
from training_bench import record_run, result_path, run_record, summarize  # noqa: E402


def synthetic_tokens(folder: Path, cfg, rows: int) -> Path:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.codebook_size, (rows, cfg.image_seq_len)).astype(np.uint16)
    labels = rng.integers(0, cfg.condition_num_classes, rows)
    header = {"model": {"name": "synthetic", "num_tokens": cfg.image_seq_len, "codebook_size": cfg.codebook_size}}
    return save_tokens(folder / "tokens.npy", ids, header, [f"row{i}" for i in range(rows)], labels.tolist())[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default="titok-l32-gen", help="registry name, config.json or folder")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    p.add_argument("--precisions", default="float32,bf16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--shared", default="", help="a note on other load on the machine")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    doc, _ = generator_spec(args.generator)
    cfg = generator_config_from_dict(doc)
    result = {"generator": args.generator, "architecture": {k: getattr(cfg, k) for k in (
        "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "codebook_size", "image_seq_len")},  # fmt: skip
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "device": args.device,
        **run_record(args.device, args.shared), "runs": {}}  # fmt: skip
    out = args.out or result_path("train", Path(str(args.generator)).stem, args.device)
    with tempfile.TemporaryDirectory(prefix="titok-train-bench-") as tmp:
        tokens = synthetic_tokens(Path(tmp), cfg, rows=4 * args.batch_size)
        for precision in args.precisions.split(","):
            run = Path(tmp) / precision
            settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, precision=precision,
                                     device=args.device, checkpoint_every=10**9, keep_checkpoints=1)  # fmt: skip
            train_generator([tokens], run, args.generator, settings=settings)
            record_run(out, result, precision, summarize(run, args.warmup, "tokens_per_s"))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
