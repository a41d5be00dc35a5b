"""titok_cli: the TiTok 1-D image tokenizer and its MaskGIT generators, exact to the official release.

    import titok_cli
    tok = titok_cli.load_tokenizer("titok-l32")
    ids = tok.encode(images)      # [B,3,256,256] in [0,1] -> int64 [B,32]
    pixels = tok.decode(ids)      # -> float32 [B,3,256,256]
    tf = titok_cli.load_tokens("tokens.npy")   # int64 ids + names, labels, manifest header

Importing this package loads neither typer nor rich.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("titok-cli")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

from .errors import (
    CheckpointError,
    ConfigError,
    HubError,
    ImageError,
    TitokError,
    TokenFileError,
    UnknownModelError,
    UsageError,
)
from .lazy import lazy_attribute
from .config import GeneratorConfig, TokenizerConfig
from .registry import available_models

# Names whose modules import torch (or Pillow) are loaded on first use, so that
# `import titok_cli` (and `titok --help`) stays fast.
_LAZY = {
    "load_tokenizer": "loading",
    "load_generator": "loading",
    "TiTokGenerator": "models.generator",
    "TiTokTokenizer": "models.tokenizer",
    "to_uint8": "models.tokenizer",
    "SamplingParams": "sampling",
    "center_crop": "preprocess",
    "load_image": "preprocess",
    "to_tensor": "preprocess",
    "psnr": "metrics",
    "class_name": "imagenet",
    "resolve_class": "imagenet",
    "load_tokens": "token_file",
    "save_tokens": "token_writers",
    "TokenFile": "token_file",
    "encode_files": "encode_job",
    "EncodeSettings": "encode_job",
    "EncodeResult": "encode_job",
    "decode_to_pngs": "decode_job",
    "check_output": "outputs",
}

__all__ = [
    "__version__",
    "TiTokTokenizer",
    "TiTokGenerator",
    "TokenizerConfig",
    "GeneratorConfig",
    "SamplingParams",
    "load_tokenizer",
    "load_generator",
    "available_models",
    "center_crop",
    "load_image",
    "to_tensor",
    "to_uint8",
    "psnr",
    "class_name",
    "resolve_class",
    "load_tokens",
    "save_tokens",
    "TokenFile",
    "encode_files",
    "EncodeSettings",
    "EncodeResult",
    "decode_to_pngs",
    "check_output",
    "TitokError",
    "ConfigError",
    "CheckpointError",
    "HubError",
    "ImageError",
    "TokenFileError",
    "UnknownModelError",
    "UsageError",
]


def __getattr__(name: str):
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
