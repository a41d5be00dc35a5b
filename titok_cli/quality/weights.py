"""Where the feature networks' weight files come from: a path given, the cache, or one download.

Order: an explicit local file (`--inception PATH`, `--lpips PATH`) wins; else the file in the
cache folder `$HF_HOME/titok-cli/` (HF_HOME resolved as huggingface_hub does: the variable, else
`$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`); else, when online, one download into
that folder (a temporary file, its sha256 checked where known, then renamed into place). Offline
(HF_HUB_OFFLINE=1 or no network), a missing file is a FeatureWeightsError of one sentence that
names the file, where to put it and where to get it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from titok_cli.errors import FeatureWeightsError

CACHE_SUBDIR = "titok-cli"
TIMEOUT_SECONDS = 30.0
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class KnownWeights:
    """One public weight file a feature network needs."""

    name: str  # our key for it
    filename: str  # its name in the cache folder
    url: str
    what: str  # a few words for messages
    option: str  # the command-line flag that takes a local copy
    sha256: str | None = None  # hex digest or its leading digits (torch hub names carry 8)


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.name: w
    for w in (
        KnownWeights(
            "fid-inception", "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            "pytorch-fid's FID Inception-v3 weights", "--inception", sha256="6726825d",
        ),
        KnownWeights(
            "vgg16", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
            "torchvision's VGG-16, the LPIPS trunk", "--lpips", sha256="397923af",
        ),
        KnownWeights(
            "convnext-s", "convnext_small-0c510722.pth", "https://download.pytorch.org/models/convnext_small-0c510722.pth",
            "torchvision's ConvNeXt-S, the official stage-2 perceptual network", "--convnext", sha256="0c510722",
        ),
        KnownWeights(
            "lpips-vgg", "lpips-v0.1-vgg.pth",
            "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/vgg.pth",
            "the LPIPS v0.1 linear heads for VGG, lpips's vgg.pth", "--lpips",
        ),
    )
}  # fmt: skip


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, or as set in the environment since."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE")
    return _is_true(env) if env is not None else bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> Path:
    """`$HF_HOME/titok-cli`: beside the Hub cache, with the same HF_HOME resolution."""
    from huggingface_hub import constants

    home = os.environ.get("HF_HOME")
    home = os.path.expandvars(os.path.expanduser(home)) if home else constants.HF_HOME
    return Path(home) / CACHE_SUBDIR


def known(name: str) -> KnownWeights:
    """The table entry for `name`; a KeyError lists the known ones (a programming error)."""
    try:
        return KNOWN_WEIGHTS[name]
    except KeyError:
        raise KeyError(f"unknown weight file {name!r}; known: {', '.join(KNOWN_WEIGHTS)}") from None


def weights_path(name: str, path: str | os.PathLike | None = None, download: bool = True,
                 on_progress: Callable[[int, int | None], None] | None = None) -> Path:  # fmt: skip
    """The local file for known weights `name`: `path` if given, else the cache, else downloaded.

    `on_progress(bytes_done, bytes_total_or_None)` is called while downloading.
    """
    entry = known(name)
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FeatureWeightsError(f"{file}: no such file ({entry.what}, given with {entry.option})")
        return file
    cached = cache_dir() / entry.filename
    if cached.is_file():
        return cached
    if not download or offline():
        why = "HF_HUB_OFFLINE is set" if download else "downloading is turned off"
        raise FeatureWeightsError(_missing_sentence(entry, cached, why))
    return _download(entry, cached, on_progress)


def _missing_sentence(entry: KnownWeights, cached: Path, why: str) -> str:
    return (
        f"{entry.filename} ({entry.what}) is not in {cached.parent} and {why}: download it from "
        f"{entry.url} into that folder, or pass its path with {entry.option}"
    )


def _download(entry: KnownWeights, target: Path, on_progress: Callable[[int, int | None], None] | None) -> Path:
    """Fetch `entry` into `target` through a temporary file; verify the hash before renaming."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(entry.url, timeout=TIMEOUT_SECONDS) as response:
                    total = response.headers.get("Content-Length")
                    total = int(total) if total and total.isdigit() else None
                    done = 0
                    while chunk := response.read(CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if on_progress is not None:
                            on_progress(done, total)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise FeatureWeightsError(
                    _missing_sentence(entry, target, f"downloading it failed ({reason})")
                ) from None
        got = digest.hexdigest()
        if entry.sha256 and not got.startswith(entry.sha256.lower()):
            raise FeatureWeightsError(
                f"{entry.url}: downloaded file has sha256 {got[:16]}..., expected {entry.sha256}...; "
                f"nothing was saved to {target}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
