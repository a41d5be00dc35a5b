"""Which tokenizer decodes a generator's tokens: the one place that pairs the two."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError, UsageError
from .models.generator import TiTokGenerator
from .models.tokenizer import TiTokTokenizer


def paired_tokenizer_source(gen: TiTokGenerator, tokenizer: str | os.PathLike | None, model: str) -> str:
    """`tokenizer` when given, else the registry's pairing for a registry generator (UsageError otherwise)."""
    if tokenizer:
        return os.fspath(tokenizer)
    src = gen.source  # set by load_generator: where the weights came from
    entry = src.entry if src is not None else None
    if entry is not None and entry.kind == "generator" and entry.tokenizer:
        return entry.tokenizer
    if src is not None and src.trained_for:
        return src.trained_for  # a `titok train` output names the tokenizer of its token files
    raise UsageError(
        f"{model} is not a registry generator, so its tokenizer is unknown; "
        "pass --tokenizer (a registry name, Hub repo id or folder)"
    )


def check_pair(gen: TiTokGenerator, tok: TiTokTokenizer) -> None:
    """ConfigError unless `tok` decodes `gen`'s ids (a VQ tokenizer with the same token count and codebook)."""
    if tok.is_vae:
        raise ConfigError("the tokenizer is a VAE (continuous latents); generators produce VQ token ids")
    if (gen.num_tokens, gen.codebook_size) != (tok.num_tokens, tok.codebook_size):
        raise ConfigError(
            f"generator makes {gen.num_tokens} tokens from a codebook of {gen.codebook_size}, "
            f"but the tokenizer has {tok.num_tokens} tokens and a codebook of {tok.codebook_size}"
        )


def pair_tokenizer(
    gen: TiTokGenerator,
    tokenizer: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
) -> TiTokTokenizer:
    """Load the tokenizer that decodes `gen`'s ids (on gen's device), checked to fit it.

    `tokenizer` defaults to the registry's pair of `gen`; `model` is how the user named the
    generator, for the error message when there is no pair.
    """
    from .loading import load_tokenizer

    source = paired_tokenizer_source(gen, tokenizer, os.fspath(model) if model is not None else "this generator")
    tok = load_tokenizer(source, device=gen.device, dtype=dtype)
    check_pair(gen, tok)
    return tok


def load_pair(
    model: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[TiTokGenerator, TiTokTokenizer]:
    """A generator (or a registry tokenizer name: its generator) and the tokenizer that decodes its ids."""
    from .loading import load_generator

    gen = load_generator(model, device=device, dtype=dtype)
    return gen, pair_tokenizer(gen, tokenizer, model, dtype)


__all__ = ["paired_tokenizer_source", "check_pair", "pair_tokenizer", "load_pair"]
