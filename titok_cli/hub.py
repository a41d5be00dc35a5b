"""Where weights come from: a preset name, a Hub repo, a local folder, or a single file.

Everything ends in a strict load: missing, unexpected or mis-shaped keys are listed in
one error. Pickled `.bin` files are opened only with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from . import registry
from .config import has_generator, has_tokenizer, read_config_file
from .errors import CheckpointError, ConfigError, HubError, UnknownModelError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
IGNORED_KEYS = ("model.embeddings.position_ids",)  # a buffer some BERT checkpoints carry
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


@dataclass
class ResolvedSource:
    """A checkpoint located on disk, plus how it was found (for manifests and messages)."""

    config: dict[str, Any]
    weights: Path | None  # None: architecture only (random weights)
    entry: registry.ModelEntry | None = None
    repo: str | None = None
    revision: str | None = None
    local_path: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.entry is not None:
            return self.entry.name
        return self.repo or self.local_path or "unknown"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repo": self.repo,
            "revision": self.revision,
            "local_path": self.local_path,
            "weights": str(self.weights) if self.weights else None,
        }


def split_revision(source: str) -> tuple[str, str | None]:
    """`owner/name@rev` -> (`owner/name`, `rev`)."""
    if "@" in source and not os.path.exists(source):
        repo, rev = source.rsplit("@", 1)
        return repo, rev or None
    return source, None


def hub_file(repo: str, filename: str, revision: str | None = None, local_dir: str | None = None) -> Path:
    """One file from the Hub through huggingface_hub (its cache, HF_HUB_OFFLINE, HF_TOKEN)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo}/{filename}" + (f"@{revision}" if revision else "")
    try:
        try:
            return Path(hf_hub_download(repo, filename, revision=revision, local_dir=local_dir))
        except LocalEntryNotFoundError:
            if local_dir is None:
                raise
            # Offline with --local-dir: huggingface_hub does not look in its cache then; we do.
            cached = Path(hf_hub_download(repo, filename, revision=revision))
            target = Path(local_dir) / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, target)
            return target
    except GatedRepoError:
        raise HubError(f"{where}: the repository is gated; log in or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubError(f"{where}: no such Hub repository (or no access; set HF_TOKEN for private repos)") from None
    except RevisionNotFoundError:
        raise HubError(f"{where}: revision {revision!r} does not exist") from None
    except LocalEntryNotFoundError:
        raise HubError(
            f"{where} is not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline?); download it elsewhere with `titok download` and copy the cache, "
            "or pass a local folder holding config.json + model.safetensors (e.g. --model /path/to/folder)"
        ) from None
    except EntryNotFoundError:
        raise FileNotFoundError(where) from None
    except OSError as exc:
        raise HubError(f"{where}: could not download ({exc})") from None


def _hub_weights(repo: str, revision: str | None, local_dir: str | None = None) -> Path:
    for name in WEIGHT_FILES:
        try:
            return hub_file(repo, name, revision, local_dir)
        except FileNotFoundError:
            continue
    raise HubError(f"{repo}: has neither {' nor '.join(WEIGHT_FILES)}")


def _folder_weights(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: no {' or '.join(WEIGHT_FILES)} in this folder")


def resolve(source: str | os.PathLike, kind: str, preset: str | None = None) -> ResolvedSource:
    """Locate config and weights for `source` (see load_tokenizer for the accepted forms)."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        cfg_path = path / "config.json"
        if cfg_path.is_file():
            config = read_config_file(cfg_path)
        elif preset:
            config = registry.get(preset).config
        else:
            raise ConfigError(f"{path}: no config.json in this folder (pass a preset to describe the architecture)")
        return ResolvedSource(config, _folder_weights(path), local_path=str(path.resolve()),
                              entry=registry.find(preset) if preset else None)  # fmt: skip
    if path.is_file():
        beside = path.parent / "config.json"
        if preset:
            config = registry.get(preset).config
        elif path.name == "config.json":
            return resolve(path.parent, kind)
        elif beside.is_file():
            config = read_config_file(beside)
        else:
            raise ConfigError(
                f"{path}: a single weights file needs a preset naming its architecture "
                f"(one of {', '.join(registry.available_models(kind))})"
            )
        return ResolvedSource(config, path, local_path=str(path.resolve()),
                              entry=registry.find(preset) if preset else None)  # fmt: skip

    entry = registry.find(text)
    if entry is not None:
        if entry.kind != kind:
            paired = entry.generator if kind == "generator" else entry.tokenizer
            if not paired:
                raise UnknownModelError(f"{entry.name} is a {entry.kind}; it has no paired {kind}")
            entry = registry.get(paired)
        if entry.architecture_only or entry.repo is None:
            raise UnknownModelError(
                f"{entry.name} is architecture only: no public weights exist "
                "(use it for benchmarks with random weights, or pass your own weights file with this preset)"
            )
        weights = _hub_weights(entry.repo, entry.revision)
        return ResolvedSource(entry.config, weights, entry=entry, repo=entry.repo, revision=entry.revision)

    repo, revision = split_revision(text)
    if _REPO_ID.match(repo):
        config = read_config_file(hub_file(repo, "config.json", revision))
        weights = _hub_weights(repo, revision)
        return ResolvedSource(config, weights, entry=registry.find(repo), repo=repo, revision=revision)
    raise UnknownModelError(
        f"{text!r} is not a file, a folder, a known model ({', '.join(registry.available_models(kind))}) "
        "or a Hub repo id (owner/name)"
    )


# -- reading weights ----------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a pickled state dict loaded with weights_only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(f"{path}: refused to unpickle: the file holds more than tensors ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({exc})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(obj)


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise one CheckpointError naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {list(state[k].shape)} (expected {list(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
            problems.append(f"{len(keys)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{where}: weights do not fit the architecture: " + "; ".join(problems))


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> nn.Module:
    """Strictly load `state` into `model` (which may live on the meta device)."""
    state = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
    check_state_dict(model, state, where)
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if v.dtype != ref[k].dtype else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model


def has_kind(config: Mapping[str, Any], kind: str) -> bool:
    return has_tokenizer(config) if kind == "tokenizer" else has_generator(config)
