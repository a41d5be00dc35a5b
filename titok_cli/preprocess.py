"""Image file -> center-cropped RGB image -> float tensor in [0, 1], as the official pipeline does.

TiTok's tokens are only comparable with the official ones when the pixels are identical, so
`center_crop` follows the ADM center crop of the reference's pretokenization script step by step
(BOX halving, BICUBIC with Python's round(), floor crop offsets). `load_image` adds what the
reference lacks: every unreadable file becomes an `ImageError` that names the file.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from titok_cli.errors import ImageError
from titok_cli.image_modes import PixelRangeError, to_rgb

# Largest image we agree to decode, in pixels. Equal to the point where Pillow's own default
# protection turns its warning into DecompressionBombError (2 * 89,478,485), i.e. about 13400 x
# 13400 or a 180-megapixel photo: roughly 0.7 GB once decoded, which is the most we want a batch
# job to allocate for one input. Checked from the header, before any pixel is decoded.
MAX_PIXELS = 178_956_970

# Suffixes (lower case) that count as images when a folder is scanned.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)

def center_crop(image: Image.Image, size: int) -> Image.Image:
    """ADM center crop to `size` x `size` RGB, pixel-identical to the official pretokenization.

    Halve with BOX while the short side is at least twice the target (cheap anti-aliasing), then
    BICUBIC so the short side equals `size` (sides rounded half-to-even by round(), as in the
    reference; Pillow skips resampling when nothing changes), then crop at floor offsets.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    img = to_rgb(image)
    if min(img.size) < 1:
        raise ValueError(f"image has no pixels (size {img.size[0]} x {img.size[1]})")
    while min(img.size) >= 2 * size:
        img = img.resize((img.size[0] // 2, img.size[1] // 2), resample=Image.Resampling.BOX)
    scale = size / min(img.size)
    new_size = (round(img.size[0] * scale), round(img.size[1] * scale))
    img = img.resize(new_size, resample=Image.Resampling.BICUBIC)
    left = (img.size[0] - size) // 2
    top = (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor(images: list[Image.Image] | Image.Image) -> torch.Tensor:
    """uint8 RGB images -> float32 [B, 3, S, S] (or [3, S, S] for one image) in [0, 1].

    Divides in float32 with numpy (`uint8 -> float32, / 255`), exactly like the reference, so the
    tensor is bit-identical to the official model input.
    """
    single = isinstance(images, Image.Image)
    batch = [images] if single else list(images)
    if not batch:
        raise ValueError("to_tensor needs at least one image")
    arrays = [np.asarray(to_rgb(img), dtype=np.uint8) for img in batch]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise ValueError(f"images in one batch must have the same size, got {shapes}")
    pixels = np.stack(arrays).astype(np.float32) / np.float32(255.0)  # (B, H, W, 3)
    tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))  # (B, 3, H, W)
    return tensor[0] if single else tensor


def _pixel_limit() -> int:
    """Our limit, or Pillow's error threshold if someone lowered it process-wide."""
    pillow = Image.MAX_IMAGE_PIXELS
    return MAX_PIXELS if pillow is None else min(MAX_PIXELS, 2 * int(pillow))


def _too_large(width: int, height: int) -> str:
    return f"image too large ({width} x {height} pixels, limit {_pixel_limit()})"


def _header_size(fh: IO[bytes]) -> tuple[int, int] | None:
    """Width and height from the file header alone, bypassing Pillow's bomb check.

    Used only to word the error when Pillow itself refuses the file at open time. Pillow's format
    registry has no public "identify" call, so this is best effort and returns None on any doubt.
    """
    try:
        Image.init()
        fh.seek(0)
        prefix = fh.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            verdict = accept(prefix) if accept is not None else True
            if isinstance(verdict, str) or not verdict:
                continue
            try:
                fh.seek(0)
                probe = factory(fh, "")
                return int(probe.size[0]), int(probe.size[1])
            except Exception:  # noqa: BLE001 - any plugin failure just means "not this format"
                continue
    except Exception:  # noqa: BLE001 - wording aid only, never worth a crash
        return None
    return None


def _bomb_reason(fh: IO[bytes], error: Exception) -> str:
    """Explain a DecompressionBombError with the image size, as precisely as we can get it."""
    size = _header_size(fh)
    if size is not None:
        return _too_large(*size)
    match = re.search(r"\((\d+) pixels\)", str(error))
    pixels = match.group(1) if match else "too many"
    return f"image too large ({pixels} pixels, limit {_pixel_limit()})"


def _os_reason(error: OSError) -> str:
    """Short wording for file-system failures."""
    if isinstance(error, FileNotFoundError):
        return "no such file or directory"
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    if isinstance(error, PermissionError):
        return "permission denied"
    if error.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot read file ({error.strerror or error})"


def _missing_reason(path: str) -> str:
    """Why `path` cannot be stat'ed: a dangling link and a link loop are worded as such."""
    try:
        os.stat(path)
    except OSError as error:
        if isinstance(error, FileNotFoundError) and os.path.islink(path):
            return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
        return _os_reason(error)
    return "no such file or directory"


_FILE_KINDS = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "not a regular file (a named pipe)"),
    (stat.S_ISSOCK, "not a regular file (a socket)"),
    (stat.S_ISCHR, "not a regular file (a character device)"),
    (stat.S_ISBLK, "not a regular file (a block device)"),
)


def _not_regular(mode: int) -> str | None:
    """The reason a file of this st_mode is refused, or None for a regular file."""
    for test, reason in _FILE_KINDS:
        if test(mode):
            return reason
    return None if stat.S_ISREG(mode) else "not a regular file"


def _open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a regular file for reading, refusing pipes, devices and folders before any read.

    A FIFO named `x.png` would block a plain `open()` forever and `/dev/zero` would never end,
    so the file type is checked first, then again on the open descriptor (no race: O_NONBLOCK
    keeps the open itself from waiting for a writer).
    """
    name = os.fspath(path)
    try:
        info = os.stat(name)
    except OSError as error:
        reason = _missing_reason(name) if isinstance(error, FileNotFoundError) else _os_reason(error)
        raise ImageError(str(path), reason) from error
    reason = _not_regular(info.st_mode)
    if reason is not None:
        raise ImageError(str(path), reason)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
    except OSError as error:
        raise ImageError(str(path), _os_reason(error)) from error
    reason = _not_regular(os.fstat(fd).st_mode)
    if reason is not None:
        os.close(fd)
        raise ImageError(str(path), reason)
    return os.fdopen(fd, "rb")


def _decode(fh: IO[bytes], name: str, exif_transpose: bool) -> Image.Image:
    """Open, size-check and fully decode the first frame; the caller maps exceptions to reasons.

    The Image is not used as a context manager on purpose: it reads from `fh`, which the caller
    closes, and closing the Image itself would free the decoded pixels we return.
    """
    with warnings.catch_warnings():
        # We enforce our own limit below; Pillow's warning band would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(fh)
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageError(name, "image has no pixels")
        if width * height > _pixel_limit():
            raise ImageError(name, _too_large(width, height))
        img.load()  # decode now, so truncation is reported here and not later
    return ImageOps.exif_transpose(img) if exif_transpose else img


# What Pillow's decoders raise for damaged data (their OSErrors carry no errno, unlike real I/O).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def load_image(
    path: str | os.PathLike[str], size: int | None, exif_transpose: bool = False
) -> Image.Image:
    """Read an image file and return its `size` x `size` RGB center crop (size None: the whole image
    in RGB, for training crops).

    Every failure (missing, broken link, not a regular file, empty, not an image, truncated, too
    large, pixel values of unknown range) raises ImageError with a short reason, so a batch job
    can report the file and go on. EXIF orientation is ignored by
    default because the official pipeline ignores it and tokens must match; multi-frame files
    (GIF, APNG, ...) use their first frame.
    """
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    with _open_regular(path) as fh:
        return read_image(fh, str(path), size, exif_transpose)


def read_image(fh: IO[bytes], name: str, size: int | None, exif_transpose: bool = False) -> Image.Image:
    """`load_image` for an open binary stream (a tar member, bytes in memory); `name` labels errors."""
    try:
        fh.seek(0, os.SEEK_END)
        empty = fh.tell() == 0
        fh.seek(0)
        if empty:
            raise ImageError(name, "empty file")
        image = _decode(fh, name, exif_transpose)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(name, _bomb_reason(fh, error)) from error
    except UnidentifiedImageError as error:
        raise ImageError(name, "not an image (cannot identify format)") from error
    except MemoryError as error:
        raise ImageError(name, "not enough memory to decode image") from error
    except _DECODE_ERRORS as error:
        if isinstance(error, OSError) and error.errno is not None:
            raise ImageError(name, _os_reason(error)) from error  # a real I/O failure mid-read
        # Pillow reports decoder trouble as errno-less OSError, SyntaxError, EOFError, ...
        raise ImageError(name, "truncated or corrupt image data") from error
    try:
        return center_crop(image, size) if size is not None else to_rgb(image)
    except PixelRangeError as error:
        raise ImageError(name, str(error)) from error
    except MemoryError as error:
        raise ImageError(name, "not enough memory to decode image") from error
    except (ValueError, OSError) as error:  # a mode Pillow cannot turn into RGB
        detail = " ".join(str(error).split())
        raise ImageError(name, f"cannot convert {image.mode} image to RGB ({detail})") from error


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _sorted_entries(directory: str) -> list[os.DirEntry[str]]:
    """One directory's visible entries, sorted by name; only this level is held in memory."""
    try:
        with os.scandir(directory) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as error:
        reason = _os_reason(error)
        if reason.startswith("cannot read file"):
            reason = f"cannot list folder ({error.strerror or error})"
        raise ImageError(directory, reason) from error


def _walk_folder(root: str) -> Iterator[tuple[Path, str]]:
    """Depth-first, name-sorted walk yielding image files below `root` with POSIX relative names.

    Hidden entries are skipped. Real folders are entered (also one named `x.jpg/`); symlinked
    folders are not (no cycles). Every other entry with an image suffix is yielded without being
    opened or even stat'ed through its link, whatever it is (dangling or looping link, FIFO,
    device), so `load_image` reports it like any bad file and the walk never blocks.
    """
    stack: list[tuple[Iterator[os.DirEntry[str]], str]] = [(iter(_sorted_entries(root)), "")]
    while stack:
        entries, prefix = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        relative = prefix + entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            stack.append((iter(_sorted_entries(entry.path)), relative + "/"))
        elif _is_image_name(entry.name):
            yield Path(entry.path), relative


def iter_image_files(inputs: Sequence[str | os.PathLike[str]]) -> Iterator[tuple[Path, str]]:
    """Expand files and folders into (absolute path, relative name) pairs in a stable order.

    Names are relative to the input folder when one folder is given; with several inputs,
    relative to their common parent folder, so rows from `a/` and `b/` stay distinguishable
    (`a/x.png`, `b/x.png`). A single file is named by its file name. Files named explicitly
    are always yielded (whatever their suffix, so a bad one is reported, not silently
    dropped); folders are walked recursively, yielding only IMAGE_EXTENSIONS files. All inputs
    are checked for existence before anything is yielded.
    """
    roots: list[str] = []
    for item in inputs:
        absolute = os.path.abspath(os.fspath(item))
        if not os.path.exists(absolute):
            raise ImageError(str(item), _missing_reason(absolute))
        roots.append(absolute)
    if len(roots) == 1:
        base = roots[0] if os.path.isdir(roots[0]) else os.path.dirname(roots[0])
    else:
        base = os.path.commonpath([r if os.path.isdir(r) else os.path.dirname(r) for r in roots])
        if any(r == base for r in roots):  # one input folder holds the others: name from its parent
            base = os.path.dirname(base)
    for root in roots:
        prefix = os.path.relpath(root, base).replace(os.sep, "/")
        if os.path.isdir(root):
            lead = "" if prefix == "." else prefix + "/"
            for path, name in _walk_folder(root):
                yield path, lead + name
        else:
            yield Path(root), prefix
