"""Where weights come from: a registry name, a Hub repo (or one file in it), a local folder or file.

Accepted spellings of a model (`resolve`):
  * a registry name: `titok-l32` (a tokenizer's name selects its paired generator and back);
  * a Hub repo id `owner/name`, optionally `owner/name@revision`, holding config.json + weights;
  * one file of a Hub repo: `owner/name:file` or `owner/name@revision:file`, e.g. the official
    single-file checkpoints `fun-research/TiTok:tokenizer_titok_l32.bin`;
  * a local folder with config.json + model.safetensors (or pytorch_model.bin);
  * a local weights file, with a config.json beside it, a `preset`, or a registry file name
    (`tokenizer_titok_l32.bin`) that says which architecture it is.
Network access goes through huggingface_hub (its cache, HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT); when
the Hub cannot be reached, one short probe says so and only the cache is used.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import registry
from .config import read_config_file
from .errors import CheckpointError, ConfigError, HubError, UnknownModelError, UsageError
from .source import Source, read_provenance, recognise, repo_of_cache_folder

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class HubSpec:
    """A model named on the Hub: `owner/name[@revision][:file]`."""

    repo: str
    revision: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.repo}{rev}" + (f":{self.filename}" if self.filename else "")


def parse_hub_spec(text: str) -> HubSpec | None:
    """`owner/name[@revision][:file]` -> HubSpec, or None when `text` is no Hub repo id
    (checked by huggingface_hub's own validator; a bare `name` without owner is not taken)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    head, _, filename = text.strip().partition(":")
    repo, _, revision = head.partition("@")
    if "/" not in repo:
        return None
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return None
    return HubSpec(repo, revision or None, filename or None)


@dataclass
class Resolved:
    """A checkpoint located on disk: its config document and where it came from."""

    config: dict[str, Any]
    source: Source
    config_where: str = "config.json"  # the file (or preset) the config came from, for messages


# -- the network -------------------------------------------------------------------------------


def _probe_target() -> tuple[str, int]:
    from huggingface_hub import constants

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
    url = urlparse(proxy or constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


@lru_cache(maxsize=4)
def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """One TCP connect (at most PROBE_SECONDS) to the Hub endpoint or proxy, once per process."""
    return _reachable(*_probe_target())


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _download(repo: str, filename: str, revision: str | None, local_dir: str | None, cache_only: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_dir=local_dir,
                                    local_files_only=cache_only))  # fmt: skip
    except LocalEntryNotFoundError:
        if local_dir is None:
            raise
        # Offline with a local_dir: huggingface_hub does not look in its cache then; we do.
        cached = Path(hf_hub_download(repo, filename, revision=revision, local_files_only=True))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, target)
        return target


def hub_file(repo: str, filename: str, revision: str | None = None, local_dir: str | None = None) -> Path:
    """One file from the Hub (or its cache); errors name the repo and file asked for.

    Raises FileNotFoundError when the repo exists but lacks the file.
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo}/{filename}" + (f"@{revision}" if revision else "")
    cache_only = bool(constants.HF_HUB_OFFLINE) or not hub_reachable()
    try:
        return _download(repo, filename, revision, local_dir, cache_only)
    except GatedRepoError:
        raise HubError(f"{where}: the repository is gated; log in or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubError(f"{where}: no such Hub repository (or no access; set HF_TOKEN for private repos)") from None
    except RevisionNotFoundError:
        raise HubError(f"{where}: revision {revision!r} does not exist") from None
    except LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else
               f"the Hub ({constants.ENDPOINT}) cannot be reached; set HF_HUB_OFFLINE=1 to skip the network")  # fmt: skip
        raise HubError(
            f"{where} is not in the local Hugging Face cache ({_cache_dir()}) and {why}; download it "
            "elsewhere with `titok download` and copy the cache, or pass a local folder holding "
            "config.json + model.safetensors (e.g. --model /path/to/folder)"
        ) from None
    except EntryNotFoundError:
        raise FileNotFoundError(where) from None
    except OSError as exc:
        raise HubError(f"{where}: could not download ({exc})") from None


def hub_weights(repo: str, revision: str | None, local_dir: str | None = None) -> Path:
    """The first of WEIGHT_FILES that the repo holds."""
    for name in WEIGHT_FILES:
        try:
            return hub_file(repo, name, revision, local_dir)
        except FileNotFoundError:
            continue
    raise HubError(f"{repo}: has neither {' nor '.join(WEIGHT_FILES)}")


# -- resolving a model name ----------------------------------------------------------------------


def _of_kind(entry: registry.ModelEntry, kind: str) -> registry.ModelEntry:
    if entry.kind == kind:
        return entry
    paired = entry.generator if kind == "generator" else entry.tokenizer
    if not paired:
        raise UnknownModelError(f"{entry.name} is a {entry.kind}; it has no paired {kind}")
    return registry.get(paired)


def _sampling_origin(kind: str, entry: registry.ModelEntry | None) -> str | None:
    if kind != "generator":
        return None
    return "registry" if entry is not None and entry.sampling else "config"


def _made(config: dict[str, Any], kind: str, entry: registry.ModelEntry | None, how: str | None,
          config_where: str = "config.json", **where: Any) -> Resolved:  # fmt: skip
    if entry is None and how is None:
        entry = recognise(config, kind)
        how = "config" if entry is not None else None
    src = Source(kind=kind, entry=entry, recognised_by=how, sampling_origin=_sampling_origin(kind, entry), **where)
    return Resolved(config, src, config_where)


def _preset_entry(preset: str, kind: str) -> registry.ModelEntry:
    entry = registry.find(preset)
    if entry is None:
        close = registry.close_matches(preset, kind)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownModelError(
            f"preset {preset!r} is not a known model; {hint}presets: {', '.join(registry.available_models(kind))}"
        )
    return _of_kind(entry, kind)


def _check_preset_applies(text: str, path: Path) -> None:
    """A preset describes weights that come without a config.json; anything else is refused."""
    if (path.is_dir() and (path / "config.json").is_file()) or (path.name == "config.json" and path.is_file()):
        raise UsageError(f"{path} has its own config.json; a preset is only for a weights file without one")
    if path.exists():
        return
    spec = parse_hub_spec(text)
    if registry.find(text) is not None or (spec is not None and spec.filename is None):
        raise UsageError(
            f"{text} is a known model or a Hub repo with its own config.json; a preset is only for a "
            "single weights file (a local file or owner/name:file)"
        )


def _legacy_entry(filename: str, kind: str) -> registry.ModelEntry | None:
    entry = registry.find_legacy_file(filename)
    if entry is not None and entry.kind != kind:
        raise ConfigError(
            f"{filename} is the single-file checkpoint of the {entry.kind} {entry.name}, not a {kind}"
        )
    return entry


def _folder(path: Path, kind: str, preset: str | None) -> Resolved:
    weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path}: no {' or '.join(WEIGHT_FILES)} in this folder")
    where = dict(weights=weights, local_path=str(path.resolve()))
    if not (path / "config.json").is_file():
        if not preset:
            raise ConfigError(f"{path}: no config.json in this folder (pass a preset to describe the architecture)")
        entry = _preset_entry(preset, kind)
        return _made(entry.config, kind, entry, "preset", f"preset {entry.name}", preset=entry.name, **where)
    config = read_config_file(path / "config.json")
    where["config_where"] = str(path / "config.json")
    entry, _ = read_provenance(path, weights, kind)
    if entry is not None:
        return _made(config, kind, entry, "provenance", **where)
    cached_repo = repo_of_cache_folder(path)
    entry = registry.find(cached_repo) if cached_repo else None
    if entry is not None and entry.kind == kind:
        return _made(config, kind, entry, "hub-cache", repo=cached_repo, **where)
    return _made(config, kind, None, None, **where)


def _file(path: Path, kind: str, preset: str | None) -> Resolved:
    if path.name == "config.json":
        return _folder(path.parent, kind, preset)
    where = dict(weights=path, local_path=str(path.resolve()))
    entry = _preset_entry(preset, kind) if preset else _legacy_entry(path.name, kind)
    if entry is not None:
        how = "preset" if preset else "legacy-file"
        return _made(entry.config, kind, entry, how, f"preset {entry.name}", preset=entry.name, **where)
    beside = path.parent / "config.json"
    if beside.is_file():
        return _made(read_config_file(beside), kind, None, None, config_where=str(beside), **where)
    raise ConfigError(
        f"{path}: a single weights file needs a preset naming its architecture "
        f"(one of {', '.join(registry.available_models(kind))}), a config.json beside it, "
        "or an official file name such as tokenizer_titok_l32.bin"
    )


def _hub(spec: HubSpec, kind: str, preset: str | None) -> Resolved:
    repo, rev = spec.repo, spec.revision
    if spec.filename is None:
        config_path = hub_file(repo, "config.json", rev)
        config = read_config_file(config_path)
        weights = hub_weights(repo, rev)
        entry = registry.find(repo)
        entry = entry if entry is not None and entry.kind == kind else None
        return _made(config, kind, entry, "repo" if entry else None, config_where=str(config_path),
                     weights=weights, repo=repo, revision=rev)  # fmt: skip
    entry = _preset_entry(preset, kind) if preset else _legacy_entry(spec.filename, kind)
    where = dict(repo=repo, revision=rev, filename=spec.filename)
    if entry is not None:
        weights = hub_file(repo, spec.filename, rev)
        return _made(entry.config, kind, entry, "preset" if preset else "legacy-file", f"preset {entry.name}",
                     preset=entry.name, weights=weights, **where)  # fmt: skip
    folder = spec.filename.rpartition("/")[0]
    try:
        config_path = hub_file(repo, f"{folder}/config.json" if folder else "config.json", rev)
    except FileNotFoundError:
        raise ConfigError(
            f"{spec}: no config.json beside this file in the repo; pass a preset naming its architecture "
            f"(one of {', '.join(registry.available_models(kind))})"
        ) from None
    return _made(read_config_file(config_path), kind, None, None, str(config_path),
                 weights=hub_file(repo, spec.filename, rev), **where)  # fmt: skip


def _registry(entry: registry.ModelEntry, kind: str) -> Resolved:
    entry = _of_kind(entry, kind)
    if entry.architecture_only or entry.repo is None:
        raise UnknownModelError(
            f"{entry.name} is architecture only: no public weights exist "
            "(use it for benchmarks with random weights, or pass your own weights file with this preset)"
        )
    try:  # the repo's own config.json, as for a downloaded folder; the registry's copy otherwise
        config_path = str(hub_file(entry.repo, "config.json", entry.revision))
        config = read_config_file(config_path)
    except FileNotFoundError:
        config, config_path = entry.config, f"preset {entry.name}"
    weights = hub_weights(entry.repo, entry.revision)
    return _made(config, kind, entry, "name", config_path, weights=weights, repo=entry.repo, revision=entry.revision)


_CONFIG_SUFFIXES = (".yaml", ".yml")


def resolve(source: str | os.PathLike, kind: str, preset: str | None = None) -> Resolved:
    """Locate config and weights for `source` (the spellings are in this module's docstring)."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.suffix.lower() in _CONFIG_SUFFIXES:
        raise ConfigError(
            f"{path}: a YAML training config describes a model but holds no weights; pass the folder "
            "with config.json + model.safetensors, or the weights file with a preset "
            "(e.g. tokenizer_titok_l32.bin, preset titok-l32)"
        )
    if preset is not None:
        _check_preset_applies(text, path)
    if path.is_dir():
        return _folder(path, kind, preset)
    if path.is_file():
        return _file(path, kind, preset)
    entry = registry.find(text)
    if entry is not None:
        return _registry(entry, kind)
    spec = parse_hub_spec(text)
    if spec is not None and not text.startswith((".", "/", "~")):
        if len(path.parts) > 1 and Path(path.parts[0]).is_dir():  # `run/final` before the run made it
            raise CheckpointError(f"{path}: no such file or folder (not read as a Hub repo id: "
                                  f"{path.parts[0]}/ is a local folder)")  # fmt: skip
        return _hub(spec, kind, preset)
    if text.startswith((".", "/", "~")) or path.suffix in (".safetensors", ".bin", ".pt", ".pth", ".json"):
        raise CheckpointError(f"{path}: no such file or folder")
    raise registry.unknown_model(text, kind, "a file, a folder, a known model or a Hub repo id")
