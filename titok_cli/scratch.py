"""The crash-safe per-rank scratch log of a job: append-only files plus a committed state.json.

Rows are appended to plain files; every few seconds (right after a batch) the files are
fsynced and `state.json` (their byte lengths, the next input number, the run's fingerprint
and its parts) is atomically replaced: that is the commit point. Reopening truncates the files
back to the last commit, so a kill -9 or power loss loses at most the work since then. A rerun
with another fingerprint is refused, naming the parts (model, inputs, settings) that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import TitokError


def fingerprint_of(parts: dict[str, Any]) -> str:
    """A stable hash of a run's description (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def changed_parts(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Which top-level parts of two run descriptions differ (all of them if `old` is unknown)."""
    if not isinstance(old, dict):
        return list(new)
    return [key for key in new if old.get(key) != new[key]] + [key for key in old if key not in new]


class Scratch:
    """Append-only files of one rank, committed by an atomically replaced state.json."""

    def __init__(self, folder: Path, parts: dict[str, Any], files: Sequence[str]) -> None:
        self.folder = folder
        self.state_path = folder / "state.json"
        self.files = tuple(files)
        fingerprint = fingerprint_of(parts)
        self.state: dict[str, Any] = {"fingerprint": fingerprint, "parts": parts, "next_index": 0, "rows": 0,
                                      "done": False, **{f: 0 for f in self.files}}  # fmt: skip
        if self.state_path.is_file():
            old = json.loads(self.state_path.read_text())
            if old.get("fingerprint") != fingerprint:
                what = ", ".join(changed_parts(old.get("parts"), parts))
                raise TitokError(
                    f"{folder.parent} holds an unfinished run with a different {what}; "
                    "rerun that exact command to finish it, or delete the folder to start over"
                )
            self.state = old
        folder.mkdir(parents=True, exist_ok=True)
        self.handles = {}
        for name in self.files:
            path = folder / name
            path.touch()
            with open(path, "rb+") as fh:  # drop anything written after the last commit
                fh.truncate(self.state[name])
            self.handles[name] = open(path, "ab")

    def commit(self, next_index: int, rows: int, done: bool = False) -> None:
        """Make everything appended so far durable and record where to continue."""
        for name, fh in self.handles.items():
            fh.flush()
            os.fsync(fh.fileno())
            self.state[name] = fh.tell()
        self.state.update(next_index=next_index, rows=rows, done=done)
        tmp = self.state_path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(self.state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)
        fsync_dir(self.folder)

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
