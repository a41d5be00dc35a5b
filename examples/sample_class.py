"""Class-conditional samples with the library: generator -> token ids -> tokenizer -> PNG grid.

    python examples/sample_class.py --class 207 -n 4 --model titok-l32
    python examples/sample_class.py --class 3 --model /path/to/generator_folder --tokenizer /path/to/tokenizer_folder
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

import titok_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--class", dest="cls", default="207", help="ImageNet id or name, e.g. 'golden retriever'")
    parser.add_argument("-n", type=int, default=4, help="number of images")
    parser.add_argument("--model", default="titok-l32", help="generator (or a tokenizer name: its generator)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer for --model folders [default: --model]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default="samples.png")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    gen = titok_cli.load_generator(args.model, device=args.device)  # official sampling defaults applied
    tok = titok_cli.load_tokenizer(args.tokenizer or args.model, device=args.device)
    num_classes = gen.config.condition_num_classes
    class_id = int(args.cls) if args.cls.isdigit() else titok_cli.resolve_class(args.cls)
    if not 0 <= class_id < num_classes:
        raise SystemExit(f"class {class_id} is outside this generator's classes 0..{num_classes - 1}")

    rng = torch.Generator(args.device).manual_seed(args.seed)  # same seed, same images
    ids = gen.generate(torch.full((args.n,), class_id), generator=rng)  # int64 [n, K]
    images = titok_cli.to_uint8(tok.decode(ids)).cpu().numpy()  # uint8 [n, S, S, 3]
    Image.fromarray(np.concatenate(list(images), axis=1)).save(args.output)
    label = titok_cli.class_name(class_id) if num_classes == 1000 else f"class {class_id}"
    print(f"{args.n} samples of {label} (seed {args.seed}) -> {args.output}")


if __name__ == "__main__":
    main()
