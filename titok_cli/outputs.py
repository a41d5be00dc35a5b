"""Where results go: the overwrite rule every command shares, and safe per-row file names.

The rule (the habit of pip, `hf download`, timm's scripts): an existing output is never
silently replaced by a full re-run. A command refuses with a hint to pass `--overwrite`,
except when the output is the finished result of the identical run (same fingerprint in its
manifest header): then there is nothing to do and the command says so.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Sequence

from .errors import TokenFileError, UsageError
from .token_file import legacy_manifest_path, manifest_path


class OutputExistsError(UsageError):
    """The output is already there and --overwrite was not given (exit 2)."""


def recorded_fingerprint(path: str | os.PathLike) -> str | None:
    """The run fingerprint in the header of the manifest that belongs to token file `path`."""
    for mpath in (manifest_path(path), legacy_manifest_path(path)):
        try:
            with open(mpath, encoding="utf-8") as fh:
                header = json.loads(fh.readline())
        except (OSError, ValueError):
            continue
        return header.get("fingerprint") if isinstance(header, dict) else None
    return None


def check_output(path: str | os.PathLike, overwrite: bool = False, fingerprint: str | None = None) -> bool:
    """Apply the overwrite rule to one output file or folder, before any work starts.

    Returns True when `path` already holds the finished result of the run `fingerprint`
    describes (nothing to do), False when the command should go ahead (nothing there, an empty
    folder, or `overwrite`). Raises OutputExistsError otherwise.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_dir() and not any(path.iterdir()):
        return False
    if fingerprint is not None and not overwrite and path.is_file() and recorded_fingerprint(path) == fingerprint:
        return True
    if overwrite:
        return False
    what = "folder is not empty" if path.is_dir() else "exists"
    raise OutputExistsError(f"{path} {what}; pass --overwrite to replace it (or choose another output)")


def row_file_names(
    names: Sequence[str] | None, count: int, suffix: str = ".png", where: str = "token file"
) -> list[PurePosixPath]:
    """Output file per row: the source name with `suffix` (`a/b.jpg` -> `a/b.png`), else `000123.png`.

    Names that would leave the output folder (absolute, `..`, drive letters, empty) are refused;
    rows whose names collide get `_row<i>` appended so no file overwrites another.
    """
    if names is None:
        width = max(6, len(str(max(count - 1, 0))))
        return [PurePosixPath(f"{i:0{width}d}{suffix}") for i in range(count)]
    targets = []
    for name in names:
        path = PurePosixPath(name.replace("\\", "/"))
        parts = [p for p in path.parts if p not in ("", ".")]
        if path.is_absolute() or ".." in parts or not parts or ":" in parts[0] or "\0" in name:
            raise TokenFileError(f"{where}: row name {name!r} is not a relative path; refusing to write outside the output folder")
        targets.append(PurePosixPath(*parts).with_suffix(suffix))
    seen = Counter(targets)
    return [t if seen[t] == 1 else t.with_name(f"{t.stem}_row{i}{suffix}") for i, t in enumerate(targets)]


def check_output_file(path: Path | None, suffixes: tuple[str, ...], flag: str) -> None:
    """UsageError for an output file with the wrong suffix, or one that names a folder."""
    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        choices = ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else suffixes[0]
        raise UsageError(f"{flag} {path} must end with {choices}")
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder")
