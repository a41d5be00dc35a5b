"""Known checkpoints: the official TiTok release plus the paper's 512x512 architectures.

The data lives in `weights/models.json` (shipped inside the package as
`titok_cli/weights/models.json`); this module only reads and validates it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .config import GeneratorConfig, TokenizerConfig, generator_config_from_dict, tokenizer_config_from_dict
from .errors import UnknownModelError

DEFAULT_TOKENIZER = "titok-l32"


@dataclass(frozen=True)
class ModelEntry:
    """One registry row: where a checkpoint lives and what it is."""

    name: str
    kind: str  # "tokenizer" or "generator"
    repo: str | None  # Hugging Face Hub repo id; None for architecture-only presets
    config: dict[str, Any]  # the official nested config (the parts that decide the architecture)
    num_parameters: int
    num_state_dict_keys: int
    description: str = ""
    revision: str | None = None
    files: tuple[str, ...] = ("config.json", "model.safetensors")
    legacy_file: str | None = None  # single-file copy in the fun-research/TiTok repo
    generator: str | None = None  # tokenizer -> its class-conditional generator
    tokenizer: str | None = None  # generator -> the tokenizer whose ids it produces
    sampling: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    architecture_only: bool = False

    @property
    def tokenizer_config(self) -> TokenizerConfig:
        return tokenizer_config_from_dict(self.config)

    @property
    def generator_config(self) -> GeneratorConfig:
        """The generator architecture with the registry's official sampling settings applied."""
        return self.with_sampling(generator_config_from_dict(self.config))

    def with_sampling(self, cfg: GeneratorConfig) -> GeneratorConfig:
        """The one rule for every caller: the registry's sampling settings replace a config's."""
        return replace(cfg, **self.sampling) if self.sampling else cfg

    @property
    def image_size(self) -> int:
        return int(self.config.get("dataset", {}).get("preprocessing", {}).get("crop_size", 256))


LEGACY_REPO = "fun-research/TiTok"


def _registry_text() -> str:
    try:
        return resources.files("titok_cli.weights").joinpath("models.json").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        # Running from a source tree without installation: weights/ sits beside the package.
        return (Path(__file__).resolve().parents[1] / "weights" / "models.json").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _entries() -> dict[str, ModelEntry]:
    raw = json.loads(_registry_text())
    out: dict[str, ModelEntry] = {}
    for row in raw["models"]:
        row = dict(row)
        row["files"] = tuple(row.get("files", ("config.json", "model.safetensors")))
        entry = ModelEntry(**row)
        out[entry.name] = entry
    return out


def available_models(kind: str | None = None) -> list[str]:
    """Names of the known checkpoints, in registry order (optionally only one kind)."""
    return [e.name for e in _entries().values() if kind is None or e.kind == kind]


def all_entries() -> list[ModelEntry]:
    return list(_entries().values())


def find(name: str) -> ModelEntry | None:
    """The entry called `name` (case-insensitive), or the one whose Hub repo is `name`."""
    entries = _entries()
    key = name.strip().lower()
    if key in entries:
        return entries[key]
    for entry in entries.values():
        if entry.repo and entry.repo.lower() == key:
            return entry
    return None


def find_legacy_file(filename: str) -> ModelEntry | None:
    """The entry whose single-file copy in fun-research/TiTok is called `filename` (any folder)."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
    return next((e for e in _entries().values() if e.legacy_file and e.legacy_file.lower() == base), None)


def close_matches(name: str, kind: str | None = None) -> list[str]:
    """Known names that look like `name` (for "did you mean" hints)."""
    import difflib

    return difflib.get_close_matches(name.strip().lower(), available_models(kind), n=3, cutoff=0.6)


def unknown_model(name: str, kind: str | None = None, what: str = "a known model") -> UnknownModelError:
    """The error for a name that is nothing we know: close matches first, then every known name."""
    close = close_matches(name, kind)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return UnknownModelError(
        f"{name!r} is not {what}; {hint}known names: {', '.join(available_models(kind))} "
        "(or give a local folder, a weights file, a Hub repo id owner/name, or owner/name:file)"
    )


def get(name: str) -> ModelEntry:
    """Like `find`, but an unknown name raises an error suggesting close matches."""
    entry = find(name)
    if entry is None:
        raise unknown_model(name)
    return entry
