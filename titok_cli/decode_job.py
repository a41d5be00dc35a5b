"""A token file -> one PNG per row, as `titok decode` does (the CLI only parses and prints).

Everything that can be refused is refused before the first PNG is written: the file itself
(`token_file.load_tokens`), a model that does not fit it (`check_tokens_fit`), row names that
would leave the output folder (`outputs.row_file_names`) and an output folder that already
holds files (`outputs.check_output`). PNGs are compressed on background threads while the
model decodes the next batch, each written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import TokenFileError
from .outputs import row_file_names
from .atomic_files import atomic_path
from .token_file import TokenFile

GRID_LIMIT = 1024  # a contact sheet of more images than this is not useful to look at


@dataclass
class DecodeResult:
    """What a decode wrote, plus the first images for a contact sheet when asked for."""

    output: Path
    images: list[Path] = field(default_factory=list)
    sheet: np.ndarray | None = None  # uint8 [n,S,S,3], the first `keep` images


def model_source_from_header(header: dict[str, Any]) -> str | None:
    """What to pass to load_tokenizer to get the model a token file was made with."""
    model = header.get("model") or {}
    if not isinstance(model, dict):
        return None
    if model.get("local_path"):
        return str(model["local_path"])
    if model.get("repo"):
        rev = model.get("revision")
        return model["repo"] + (f"@{rev}" if rev else "")
    return model.get("name")


def same_model(header: dict[str, Any], described: dict[str, Any]) -> bool | None:
    """Whether the manifest's model is the one `described` (None when the manifest does not say)."""
    recorded = header.get("model") or {}
    keys = [k for k in ("local_path", "repo", "name") if recorded.get(k)]
    if not keys:
        return None
    return any(recorded.get(k) == described.get(k) for k in keys)


def check_tokens_fit(tf: TokenFile, tokenizer: Any) -> None:
    """Refuse a token file that this tokenizer cannot decode, before anything is written."""
    cfg = tokenizer.config
    where = str(tf.path) if tf.path else "tokens"
    recorded = tf.header.get("model") or {}
    for key, ours in (("quantize_mode", cfg.quantize_mode), ("num_tokens", cfg.num_latent_tokens),
                      ("codebook_size", cfg.codebook_size), ("token_size", cfg.token_size)):  # fmt: skip
        if key in recorded and recorded[key] != ours:
            raise TokenFileError(
                f"{where}: made with {recorded.get('name') or 'another model'} ({key}={recorded[key]}), "
                f"but the chosen model has {key}={ours}"
            )
    t = tf.tokens
    if cfg.is_vae:
        if t.dtype.kind != "f":
            raise TokenFileError(f"{where}: holds integer ids, but {cfg.quantize_mode.upper()} model needs float latents")
        if tuple(t.shape[1:]) != (cfg.token_size, cfg.num_latent_tokens):
            raise TokenFileError(
                f"{where}: latents are [N,{t.shape[1]},{t.shape[2]}], the model needs [N,{cfg.token_size},{cfg.num_latent_tokens}]"
            )
        return
    if t.dtype.kind not in "iu":
        raise TokenFileError(f"{where}: holds float values ({t.dtype}), but a VQ model needs integer token ids")
    if t.shape[1] != cfg.num_latent_tokens:
        raise TokenFileError(f"{where}: rows have {t.shape[1]} tokens, the model needs {cfg.num_latent_tokens}")
    if len(t):
        lo, hi = int(np.min(t)), int(np.max(t))
        if lo < 0 or hi >= cfg.codebook_size:
            raise TokenFileError(f"{where}: token ids span {lo}..{hi}, outside the codebook 0..{cfg.codebook_size - 1}")


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".png", durable=False) as tmp, open(tmp, "wb") as fh:
        Image.fromarray(array).save(fh, format="PNG")


def decode_to_pngs(
    tf: TokenFile,
    tokenizer: Any,
    output: str | os.PathLike,
    *,
    batch_size: int = 16,
    keep: int = 0,
    progress: Callable[[int, "int | None"], None] | None = None,
    threads: int = 2,
) -> DecodeResult:
    """Decode every row of `tf` into `output/<row name>.png`; keep the first `keep` images in memory.

    The tokenizer splits each batch further to fit its memory budget (`TiTokTokenizer.decode`).
    """
    import torch

    from .models.tokenizer import to_uint8

    check_tokens_fit(tf, tokenizer)
    targets = row_file_names(tf.names, len(tf.tokens), where=str(tf.path or "tokens"))
    output = Path(output)
    result = DecodeResult(output=output)
    n, sheet = len(tf.tokens), []
    output.mkdir(parents=True, exist_ok=True)
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="png") as pool:
        try:
            for start in range(0, n, batch_size):
                chunk = np.asarray(tf.tokens[start : start + batch_size])  # (b, K) as stored, or (b, C, K)
                batch = torch.from_numpy(chunk.astype(np.float32 if tokenizer.is_vae else np.int64))
                pixels = to_uint8(tokenizer.decode(batch)).cpu().numpy()  # (b, S, S, 3)
                for i, image in enumerate(pixels):
                    path = output / targets[start + i]
                    pending.append(pool.submit(_save_png, image, path))
                    result.images.append(path)
                while len(pending) > 4 * batch_size:  # bound the images waiting in memory
                    pending.pop(0).result()
                if start < keep:
                    sheet.append(pixels[: keep - start])
                if progress is not None:
                    progress(min(start + batch_size, n), n)
            for future in pending:
                future.result()
        finally:
            for future in pending:
                future.cancel()
    if sheet:
        result.sheet = np.concatenate(sheet)
    return result
