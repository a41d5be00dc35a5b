"""titok_cli: the TiTok 1-D image tokenizer and its MaskGIT generators, exact to the official release.

    import titok_cli
    tok = titok_cli.load_tokenizer("titok-l32")
    ids = tok.encode(images)      # [B,3,256,256] in [0,1] -> int64 [B,32]
    pixels = tok.decode(ids)      # -> float32 [B,3,256,256]

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
from .config import GeneratorConfig, TokenizerConfig
from .loading import load_generator, load_tokenizer
from .models.generator import TiTokGenerator
from .models.tokenizer import TiTokTokenizer, to_uint8
from .registry import available_models
from .sampling import SamplingParams

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
    "to_uint8",
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
    # preprocess is written separately and pulls in Pillow; load it on first use.
    if name == "center_crop":
        from .preprocess import center_crop

        return center_crop
    raise AttributeError(f"module 'titok_cli' has no attribute {name!r}")
