"""Files that appear under their final name only when complete: write beside, then rename.

Every result file of the tool (token files, manifests, PNGs, checkpoints, reports) goes through
`atomic_path`, so an interrupted run never leaves a half-written output under a real name.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "", durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it into place.

    `durable` fsyncs first (token files, scratch state); per-image PNGs skip that cost.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial" + suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; a result file gets normal permissions
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def zip_member(zf: "zipfile.ZipFile", name: str):
    """A writable .npz member with a fixed timestamp, so equal content gives equal bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return zf.open(info, "w", force_zip64=True)
