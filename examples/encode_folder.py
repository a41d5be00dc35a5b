"""Encode a folder of images into one token file with the library (what `titok encode` does).

    python examples/encode_folder.py examples/images -o tokens.npz --model titok-l32
    python examples/encode_folder.py examples/images -o tokens.npz --model /path/to/tokenizer_folder
"""

from __future__ import annotations

import argparse

import numpy as np

import titok_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default="examples/images")
    parser.add_argument("-o", "--output", default="tokens.npz", help=".npy or .npz")
    parser.add_argument("--model", default="titok-l32", help="registry name, Hub repo id or local folder")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    tok = titok_cli.load_tokenizer(args.model, device=args.device)
    result = titok_cli.encode_files([args.folder], args.output, tok, batch_size=8)
    for path, reason in result.failures:
        print(f"skipped {path}: {reason}")
    if result.count == 0:
        raise SystemExit("no image could be encoded")

    tf = titok_cli.load_tokens(result.output)  # the array plus the manifest written beside it
    print(f"{result.count} images -> {result.output} (manifest {result.manifest.name})")
    for name, row in zip(tf.names or [], np.asarray(tf.tokens)):
        shown = np.array2string(row.ravel()[:8], separator=" ")
        print(f"  {name}: {shown[:-1]} ...]")


if __name__ == "__main__":
    main()
