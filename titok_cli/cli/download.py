"""`titok download`: fetch checkpoints into the Hugging Face cache (or a folder) and check they open."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import HelpOpt, QuietOpt, note


def download(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAME", help="Registry names, Hub repo ids (owner/name[@revision]) or one file "
                       "of a repo (owner/name:file).", show_default=False),
    ] = None,  # fmt: skip
    everything: Annotated[bool, typer.Option("--all", metavar="", help="Every checkpoint that has public weights.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", metavar="REV", help="Branch, tag or commit on the Hub.")
    ] = None,
    local_dir: Annotated[
        Path | None,
        typer.Option("--local-dir", help="Put the files in this folder (one sub-folder per model when several) "
                     "instead of the Hugging Face cache.", file_okay=False, metavar="DIR"),
    ] = None,  # fmt: skip
    quiet: QuietOpt = False,
    _help: HelpOpt = False,
) -> None:
    """Download checkpoints from the Hugging Face Hub and check that each file opens.

    Default: titok-l32 and its generator titok-l32-gen. Files go to the Hugging Face cache
    (HF_HOME / HF_HUB_CACHE; HF_TOKEN and HF_ENDPOINT are honoured) unless --local-dir is
    given; a folder also gets titok.json, which records which checkpoint it holds. Prints each
    model's local folder, one per line, the last line last (--quiet: only those).

    Example:  titok download titok-b64 --local-dir checkpoints/
    """
    from titok_cli.fetch import download as fetch, download_targets

    targets = download_targets(list(names or []), everything, revision)
    folders = []
    for target in targets:
        where = target.repo + (f"@{target.revision}" if target.revision else "")
        note(where if target.label in (target.repo, str(where)) else f"{target.label}: {where}", quiet)
        dest = None
        if local_dir is not None:
            dest = local_dir if len(targets) == 1 else local_dir / target.label.replace("/", "--").replace(":", "--")
        shown = lambda path: note(f"  {path.name}: {path.stat().st_size:,} bytes, opens", quiet)  # noqa: E731
        folders.append(fetch(target, dest, on_file=shown))
    for folder in folders:
        typer.echo(str(folder))
