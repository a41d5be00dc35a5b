"""Downloading checkpoints (the library side of `titok download`): plan, fetch, verify, record.

A download into a folder (`local_dir`) also writes the provenance file `titok.json` beside the
files, so that the folder loads exactly as the registry name does (same sampling settings).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from . import registry
from .errors import HubError, UnknownModelError, UsageError
from .hub import WEIGHT_FILES, hub_file, parse_hub_spec


@dataclass(frozen=True)
class DownloadTarget:
    """One checkpoint to download."""

    label: str  # registry name, or the Hub spelling given
    repo: str
    revision: str | None
    files: tuple[str, ...]  # empty: config.json + the first weights file that exists
    entry: registry.ModelEntry | None = None


def _target(entry: registry.ModelEntry, revision: str | None) -> DownloadTarget:
    if entry.architecture_only or entry.repo is None:
        raise UnknownModelError(
            f"{entry.name} is architecture only: no public weights exist to download "
            "(`titok bench --model` runs it with random weights)"
        )
    return DownloadTarget(entry.name, entry.repo, revision or entry.revision, entry.files, entry)


def download_targets(names: Sequence[str], everything: bool = False, revision: str | None = None) -> list[DownloadTarget]:
    """What to download for these names (registry names, `owner/name[@rev]`, `owner/name:file`);
    no names: the default tokenizer and its generator."""
    if everything:
        if names:
            raise UsageError("give model names or --all, not both")
        return [_target(e, revision) for e in registry.all_entries() if not e.architecture_only and e.repo]
    if not names:
        default = registry.get(registry.DEFAULT_TOKENIZER)
        names = [default.name] + ([default.generator] if default.generator else [])
    targets = []
    for name in names:
        entry = registry.find(name)
        if entry is not None:
            targets.append(_target(entry, revision))
            continue
        if os.path.exists(name):
            raise UsageError(f"{name} is a local path, not something to download; pass it to --model directly")
        spec = parse_hub_spec(name)
        if spec is None:
            raise registry.unknown_model(name, None, "a known model or a Hub repo id (owner/name)")
        files = (spec.filename,) if spec.filename else ()
        entry = registry.find(spec.repo) if not spec.filename else registry.find_legacy_file(spec.filename)
        targets.append(DownloadTarget(str(spec), spec.repo, revision or spec.revision, files, entry))
    return targets


def _verify(path: Path) -> None:
    """Open the file the way loading will: config as JSON, weights as tensors."""
    from .checkpoint import read_state_dict
    from .config import read_config_file

    if path.suffix == ".json":
        read_config_file(path)
    elif path.suffix in (".safetensors", ".bin"):
        read_state_dict(path)


def download(target: DownloadTarget, local_dir: Path | None = None,
             on_file: Callable[[Path], None] | None = None) -> Path:  # fmt: skip
    """Download and verify every file of `target` (into `local_dir`, else the Hugging Face
    cache); return the folder holding them. `on_file` is called with each verified file."""
    from .source import write_provenance

    folder_arg = str(local_dir) if local_dir is not None else None
    paths = [hub_file(target.repo, name, target.revision, folder_arg) for name in target.files]
    if not target.files:
        paths.append(hub_file(target.repo, "config.json", target.revision, folder_arg))
        for name in WEIGHT_FILES:
            try:
                paths.append(hub_file(target.repo, name, target.revision, folder_arg))
                break
            except FileNotFoundError:
                continue
        else:
            raise HubError(f"{target.label}: has neither {' nor '.join(WEIGHT_FILES)}")
    for path in paths:
        _verify(path)
        if on_file is not None:
            on_file(path)
    if local_dir is not None:
        write_provenance(paths[0].parent, target.repo, target.revision, paths, target.entry)
    return paths[0].parent
