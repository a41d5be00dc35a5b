"""`titok download`: fetch checkpoints into the Hugging Face cache (or a folder) and check they open."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from .common import QuietOpt, note, usage_error

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class Target:
    """One checkpoint to download."""

    label: str
    repo: str
    revision: str | None
    files: tuple[str, ...]  # empty: config.json + the first weights file that exists


def _targets(names: list[str], everything: bool, revision: str | None) -> list[Target]:
    from titok_cli import registry
    from titok_cli.errors import UnknownModelError

    if everything:
        if names:
            raise usage_error("give model names or --all, not both")
        entries = [e for e in registry.all_entries() if not e.architecture_only and e.repo]
        return [Target(e.name, e.repo, revision or e.revision, e.files) for e in entries]  # type: ignore[arg-type]
    if not names:
        default = registry.get(registry.DEFAULT_TOKENIZER)
        names = [default.name] + ([default.generator] if default.generator else [])

    targets = []
    for name in names:
        entry = registry.find(name)
        if entry is not None:
            if entry.architecture_only or entry.repo is None:
                raise UnknownModelError(
                    f"{entry.name} is architecture only: no public weights exist to download "
                    "(`titok bench --model` runs it with random weights)"
                )
            targets.append(Target(entry.name, entry.repo, revision or entry.revision, entry.files))
            continue
        if os.path.exists(name):
            raise usage_error(f"{name} is a local path, not something to download; pass it to --model directly")
        repo, _, rev = name.partition("@")
        if not _REPO_ID.match(repo):
            raise UnknownModelError(
                f"{name!r} is neither a known model ({', '.join(registry.available_models())}) "
                "nor a Hub repo id (owner/name)"
            )
        targets.append(Target(repo, repo, revision or rev or None, ()))
    return targets


def _verify(path: Path) -> None:
    """Open the file the way loading will: config as JSON, weights as tensors."""
    from titok_cli.config import read_config_file
    from titok_cli.hub import read_state_dict

    if path.suffix == ".json":
        read_config_file(path)
    elif path.suffix in (".safetensors", ".bin"):
        read_state_dict(path)


def _fetch(target: Target, local_dir: Path | None, quiet: bool) -> Path:
    """Download and verify every file of `target`; return the folder holding them."""
    from titok_cli.errors import HubError
    from titok_cli.hub import hub_file

    where = f"{target.repo}" + (f"@{target.revision}" if target.revision else "")
    note(where if target.label == target.repo else f"{target.label}: {where}", quiet)
    folder_arg = str(local_dir) if local_dir is not None else None
    paths = []
    if target.files:
        for filename in target.files:
            paths.append(hub_file(target.repo, filename, target.revision, folder_arg))
    else:
        paths.append(hub_file(target.repo, "config.json", target.revision, folder_arg))
        for filename in WEIGHT_FILES:
            try:
                paths.append(hub_file(target.repo, filename, target.revision, folder_arg))
                break
            except FileNotFoundError:
                continue
        else:
            raise HubError(f"{where}: has neither {' nor '.join(WEIGHT_FILES)}")
    for path in paths:
        _verify(path)
        note(f"  {path.name}: {path.stat().st_size:,} bytes, opens", quiet)
    return paths[0].parent


def download(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAME", help="Registry names or Hub repo ids (owner/name[@revision]).",
                       show_default=False),  # fmt: skip
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every checkpoint that has public weights.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", metavar="REV", help="Branch, tag or commit on the Hub.")
    ] = None,
    local_dir: Annotated[
        Path | None,
        typer.Option("--local-dir", help="Put the files in this folder (one sub-folder per model when several) "
                     "instead of the Hugging Face cache.", file_okay=False, metavar="DIR"),
    ] = None,  # fmt: skip
    quiet: QuietOpt = False,
) -> None:
    """Download checkpoints from the Hugging Face Hub and check that each file opens.

    Default: titok-l32 and its generator titok-l32-gen. Files go to the Hugging Face cache
    (HF_HOME / HF_HUB_CACHE; HF_TOKEN and HF_ENDPOINT are honoured) unless --local-dir is
    given. Prints each model's local folder, one per line, the last line last (--quiet: only those).

    Example:  titok download titok-b64 --local-dir checkpoints/
    """
    targets = _targets(list(names or []), everything, revision)
    folders = []
    for target in targets:
        dest = None
        if local_dir is not None:
            dest = local_dir if len(targets) == 1 else local_dir / target.label.replace("/", "--")
        folders.append(_fetch(target, dest, quiet))
    for folder in folders:
        typer.echo(str(folder))
