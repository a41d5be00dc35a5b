"""Fine-tuning throughput of `titok finetune` (images/s, steps/s, peak memory) for a tokenizer architecture.

    python benchmarks/finetune_throughput.py                        # L-32, CPU, batch 2, fp32 + bf16
    python benchmarks/finetune_throughput.py --model titok-s128 --batch-size 4 --steps 8
    python benchmarks/finetune_throughput.py --perceptual convnext_s  # the two-stage default loss

Runs the real loop (`finetune_tokenizer` with its default parts: training crops, decoder-side
forward and backward, L2 + the perceptual loss, clipping, AdamW, EMA; `--perceptual lpips`, the
default here, is LPIPS at 1.1 as first recorded, `--perceptual convnext_s` the two-stage models'
official default, ConvNeXt-S at 0.1) on random weights of the
registry architecture (speed does not depend on the values) and on synthetic 256x256 photos-sized
noise images, once per precision; reports the median per-step rate after `--warmup` steps from
metrics.jsonl. LPIPS and ConvNeXt-S use seeded stand-in weights of the real shapes (no download). Writes
benchmarks/results/finetune-<model>-<device>-<cpu-slug>[-<perceptual>].json with the machine recorded. The
run's folders go to a temporary directory that is deleted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from titok_cli import registry  # noqa: E402
from titok_cli.models.tokenizer import TiTokTokenizer  # noqa: E402
from titok_cli.training import FinetuneSettings, finetune_tokenizer  # noqa: E402
from titok_cli.training.tokenizer_losses import LossSettings  # noqa: E402
from training_bench import record_run, result_path, run_record, summarize  # noqa: E402

PERCEPTUAL = ("lpips", "convnext_s", "lpips-convnext_s")


def losses_for(perceptual: str) -> LossSettings:
    """LPIPS at 1.1 (the first recorded results); the official names at the official weights."""
    return LossSettings(perceptual="lpips", perceptual_weight=1.1) if perceptual == "lpips" else LossSettings(perceptual=perceptual)


def convnext_stand_in(folder: Path) -> Path:
    """ConvNeXt-S weights of the real shapes, seeded (its cost, not its values)."""
    from titok_cli.quality.convnext import ConvNeXt
    from titok_cli.quality.weights import known

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(2)
    path = folder / known("convnext-s").filename
    torch.save(ConvNeXt().state_dict(), path)
    return path


def random_checkpoint(folder: Path, name: str) -> Path:
    """A Hub-format folder holding the registry architecture with seeded random weights."""
    from safetensors.torch import save_file

    entry = registry.get(name)
    torch.manual_seed(0)
    model = TiTokTokenizer.from_config(entry.config)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(entry.config))
    return folder


def noise_images(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size + 32, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def lpips_stand_in(folder: Path) -> Path:
    """VGG16 and LPIPS-head weights of the real shapes, seeded (LPIPS' cost, not its values)."""
    from titok_cli.quality.lpips import LPIPS
    from titok_cli.quality.weights import known

    folder.mkdir(parents=True)
    torch.manual_seed(1)
    net = LPIPS()
    torch.save(net.backbone.state_dict(), folder / known("vgg16").filename)
    torch.save({k: v.abs() for k, v in net.heads.state_dict().items()}, folder / known("lpips-vgg").filename)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="titok-l32", help="registry name of the architecture")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    p.add_argument("--precisions", default="float32,bf16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--perceptual", default="lpips", choices=PERCEPTUAL,
                   help="perceptual loss: lpips (at 1.1, as first recorded) or an official recipe's")
    p.add_argument("--shared", default="", help="a note on other load on the machine")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    entry = registry.get(args.model)
    result = {"model": args.model, "parameters": entry.num_parameters, "batch_size": args.batch_size,
              "steps": args.steps, "warmup": args.warmup, "device": args.device,
              "losses": {"lpips": "L2 + LPIPS-VGG x 1.1", "convnext_s": "L2 + ConvNeXt-S x 0.1 (the two-stage default)",
                         "lpips-convnext_s": "L2 + (LPIPS + 0.1 ConvNeXt-S)"}[args.perceptual]
                        + "; no GAN within these steps",
              **run_record(args.device, args.shared), "runs": {}}  # fmt: skip
    tag = "" if args.perceptual == "lpips" else "-" + args.perceptual.replace("_", "")
    out = args.out or result_path("finetune", args.model, args.device, tag)
    precisions = args.precisions.split(",")
    if len(precisions) > 1:  # one process per precision: the CPU's peak memory (max RSS) is per process
        import subprocess

        for precision in precisions:
            part = out.with_suffix(f".{precision}.part")
            cmd = [sys.executable, __file__, *sys.argv[1:], "--precisions", precision, "--out", str(part)]
            subprocess.run(cmd, check=True)
            result["runs"].update(json.loads(part.read_text())["runs"])
            part.unlink()
            out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"-> {out}")
        return
    with tempfile.TemporaryDirectory(prefix="titok-finetune-bench-") as tmp:
        model = random_checkpoint(Path(tmp) / "model", args.model)
        images = noise_images(Path(tmp) / "images", 4 * args.batch_size, entry.image_size)
        lpips = lpips_stand_in(Path(tmp) / "lpips")
        convnext = convnext_stand_in(Path(tmp) / "convnext") if "convnext" in args.perceptual else None
        for precision in precisions:
            run = Path(tmp) / precision
            settings = FinetuneSettings(steps=args.steps, batch_size=args.batch_size, precision=precision,
                                        device=args.device, checkpoint_every=10**9, keep_checkpoints=1)  # fmt: skip
            result_run = finetune_tokenizer([images], run, str(model), settings=settings,
                                            losses=losses_for(args.perceptual), lpips_weights=str(lpips),
                                            convnext_weights=convnext)  # fmt: skip
            summary = {**summarize(run, args.warmup, "images_per_s"), "trained": result_run.trained}
            record_run(out, result, precision, summary)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
