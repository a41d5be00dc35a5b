"""Before and after `titok finetune`: each image, its reconstruction by the starting tokenizer and
by the fine-tuned one, side by side in one picture, with the PSNR of each reconstruction.

    python examples/finetune_compare.py heldout/ --before titok-l32 --after run/final -o compare.png

Rows are images (sorted by path, at most --limit); columns are original | before | after.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import titok_cli

GAP = 2  # white pixels between pictures


def reconstruct(model: str, paths: list[Path], device: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(official center crops, reconstructions) as uint8 [S, S, 3] arrays."""
    tok = titok_cli.load_tokenizer(model, device=device)
    crops = [titok_cli.load_image(p, tok.image_size) for p in paths]  # official center crop, RGB
    tokens = tok.encode(titok_cli.to_tensor(crops))  # VQ: int64 [N, K]; VAE: float32 [N, C, K]
    pixels = titok_cli.to_uint8(tok.decode(tokens)).cpu().numpy()  # uint8 [N, S, S, 3]
    return [np.asarray(c, dtype=np.uint8) for c in crops], list(pixels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="held-out images (PNG or JPEG)")
    parser.add_argument("--before", required=True, help="the starting tokenizer")
    parser.add_argument("--after", required=True, help="the fine-tuned tokenizer (RUN_DIR/final)")
    parser.add_argument("-o", "--output", default="compare.png")
    parser.add_argument("--limit", type=int, default=4, help="images shown")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    paths = sorted(p for p in Path(args.folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    paths = paths[: args.limit]
    originals, before = reconstruct(args.before, paths, args.device)
    _, after = reconstruct(args.after, paths, args.device)

    size = originals[0].shape[0]
    sheet = np.full((len(paths) * (size + GAP) - GAP, 3 * (size + GAP) - GAP, 3), 255, dtype=np.uint8)
    for row, pictures in enumerate(zip(originals, before, after)):
        for col, picture in enumerate(pictures):
            top, left = row * (size + GAP), col * (size + GAP)
            sheet[top : top + size, left : left + size] = picture
    Image.fromarray(sheet).save(args.output)

    gains = []
    for path, original, b, a in zip(paths, originals, before, after):
        pb, pa = (titok_cli.psnr(original, x, data_range=255) for x in (b, a))
        gains.append(pa - pb)
        print(f"{path.name}: PSNR {pb:.2f} dB before, {pa:.2f} dB after")
    print(f"{len(paths)} images, mean gain {np.mean(gains):+.2f} dB -> {args.output} (original | before | after)")


if __name__ == "__main__":
    main()
