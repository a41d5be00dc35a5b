"""Image -> tokens -> image with the library, saved side by side, with the reconstruction PSNR.

    python examples/roundtrip.py examples/images/chelsea.png --model titok-l32
    python examples/roundtrip.py examples/images/chelsea.png --model /path/to/tokenizer_folder
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

import titok_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default="examples/images/chelsea.png")
    parser.add_argument("--model", default="titok-l32", help="registry name, Hub repo id or local folder")
    parser.add_argument("-o", "--output", default="roundtrip.png", help="original | reconstruction, side by side")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    tok = titok_cli.load_tokenizer(args.model, device=args.device)
    crop = titok_cli.load_image(args.image, tok.image_size)  # official center crop, RGB
    tokens = tok.encode(titok_cli.to_tensor([crop]))  # VQ: int64 [1, K]; VAE: float32 [1, C, K]
    pixels = titok_cli.to_uint8(tok.decode(tokens))[0].cpu().numpy()  # uint8 [S, S, 3]

    original = np.asarray(crop, dtype=np.uint8)
    Image.fromarray(np.concatenate([original, pixels], axis=1)).save(args.output)
    kind = f"{tok.config.token_size}x{tok.num_tokens} latents" if tok.is_vae else f"{tok.num_tokens} tokens"
    print(f"{args.image}: {kind}, PSNR {titok_cli.psnr(original, pixels, data_range=255):.2f} dB -> {args.output}")
    if not tok.is_vae:
        print("tokens:", tokens[0].tolist())


if __name__ == "__main__":
    main()
