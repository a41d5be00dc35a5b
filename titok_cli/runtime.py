"""Runtime switches and facts about the machine, in one place (timm's `layers/config.py` pattern).

Every `TITOK_*` environment variable the package honours is declared here, read once (on first
use) and then held in this module. Code asks through the getters below; tests change a switch
with `set_switch` or the `switches(...)` context manager, never by patching private globals.

| variable               | values (default first)  | effect                                                 |
|------------------------|-------------------------|--------------------------------------------------------|
| `TITOK_CPU_LINEAR`     | `onednn`, `aten`        | CPU float32/bfloat16 linear layers through oneDNN      |
|                        |                         | (x86-64 only) or ATen's `F.linear` everywhere          |
| `TITOK_CHANNELS_LAST`  | `auto`, `1`, `0`        | CPU float32 pixel decoder layout: `auto` is            |
|                        |                         | channels-last on AMD CPUs, NCHW elsewhere              |
| `TITOK_DEFAULT_MALLOC` | `0`, `1`                | `1`: keep glibc's default malloc in the `titok` command|
|                        |                         | (see `allocator.tune_cpu_allocator`)                   |
| `TITOK_DEBUG`          | `0`, `1`                | `1`: the CLI shows Python tracebacks (read whenever an |
|                        |                         | error is shown, so a test may set it per invocation)   |
| `TITOK_COMMIT_SECONDS` | `2.0` (float >= 0)      | how much encode work a crash may lose                  |
| `TITOK_DIST_BACKEND`   | unset, `gloo`, `nccl`...| torch.distributed backend (unset: nccl with CUDA, else |
|                        |                         | gloo)                                                  |

This module imports neither torch nor anything heavy at import time.
"""

from __future__ import annotations

import os
import platform
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterator

from .errors import UsageError


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError("expected 0 or 1")


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise ValueError("expected a number of seconds >= 0")
    return value


def _optional(text: str) -> str | None:
    return text.strip() or None


@dataclass(frozen=True)
class Switch:
    """One environment switch: its variable, default and parser."""

    env: str
    default: Any
    parse: Callable[[str], Any]
    doc: str
    live: bool = False  # read at every call instead of once (consulted only on errors)


SWITCHES: dict[str, Switch] = {
    s.env: s
    for s in (
        Switch("TITOK_CPU_LINEAR", "onednn", _choice("onednn", "aten"), "CPU linear layers: oneDNN or ATen"),
        Switch("TITOK_CHANNELS_LAST", "auto", _choice("auto", "1", "0"), "CPU float32 pixel-decoder layout"),
        Switch("TITOK_DEFAULT_MALLOC", False, _flag, "keep glibc's default malloc settings"),
        Switch("TITOK_DEBUG", False, _flag, "show tracebacks in the CLI", live=True),
        Switch("TITOK_COMMIT_SECONDS", 2.0, _seconds, "seconds of encode work between commits"),
        Switch("TITOK_DIST_BACKEND", None, _optional, "torch.distributed backend"),
    )
}

_values: dict[str, Any] = {}


def _read(env: str) -> Any:
    spec = SWITCHES[env]
    text = os.environ.get(env)
    if text is None:
        return spec.default
    try:
        return spec.parse(text)
    except ValueError as exc:
        raise UsageError(f"environment variable {env}={text!r}: {exc}") from None


def get(env: str) -> Any:
    """The value of switch `env` (read from the environment the first time it is asked for)."""
    if env not in SWITCHES:
        raise KeyError(f"unknown switch {env!r}; known: {', '.join(SWITCHES)}")
    if env in _values:
        return _values[env]
    value = _read(env)
    if not SWITCHES[env].live:
        _values[env] = value
    return value


def set_switch(env: str, value: Any) -> Any:
    """Set switch `env` for this process (a string is parsed as the variable would be; None
    goes back to the environment's value). Returns the previous value."""
    previous = get(env)
    spec = SWITCHES[env]
    if value is None:
        _values.pop(env, None)
        _derived.cache_clear()
        return previous
    if isinstance(value, bool) and isinstance(spec.default, str):
        value = spec.parse("1" if value else "0")
    elif isinstance(value, str):
        value = spec.parse(value)
    _store(env, value)
    return previous


def _store(env: str, value: Any) -> None:
    _values[env] = value
    _derived.cache_clear()


@contextmanager
def switches(**values: Any) -> Iterator[None]:
    """Temporarily set switches, keyed by variable name: `with switches(TITOK_CPU_LINEAR="aten"):`."""
    saved = dict(_values)
    try:
        for env, value in values.items():
            set_switch(env, value)
        yield
    finally:
        _values.clear()
        _values.update(saved)
        _derived.cache_clear()


# -- typed getters ------------------------------------------------------------------------


def debug() -> bool:
    return bool(get("TITOK_DEBUG"))


def default_malloc() -> bool:
    return bool(get("TITOK_DEFAULT_MALLOC"))


def commit_seconds() -> float:
    return float(get("TITOK_COMMIT_SECONDS"))


def dist_backend() -> str | None:
    return get("TITOK_DIST_BACKEND")


def onednn_linear() -> bool:
    """Whether CPU inference runs linear layers through oneDNN (models/layers.py): the switch says
    `onednn`, the machine is x86-64 (where it was measured), and this torch build has the op."""
    return _derived()[0]


def float32_channels_last() -> bool:
    """Whether the CPU float32 pixel decoder runs channels-last (models/pixel_decoder.py)."""
    return _derived()[1]


@lru_cache(maxsize=1)
def _derived() -> tuple[bool, bool]:
    onednn = False
    if get("TITOK_CPU_LINEAR") == "onednn" and platform.machine().lower() in ("x86_64", "amd64"):
        import torch

        onednn = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    layout = get("TITOK_CHANNELS_LAST")
    channels_last = cpu_info().vendor == "AuthenticAMD" if layout == "auto" else layout == "1"
    return onednn, channels_last


# -- the machine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says about the first CPU (empty strings where it does not say)."""

    vendor: str  # "AuthenticAMD", "GenuineIntel", ...
    model_name: str
    flags: frozenset[str]


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """The one reader of /proc/cpuinfo; off Linux, `platform.processor()` gives the model name."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or "unknown cpu"
    return CpuInfo(fields.get("vendor_id", ""), model, frozenset(fields.get("flags", "").split()))


__all__ = [
    "SWITCHES",
    "CpuInfo",
    "commit_seconds",
    "cpu_info",
    "debug",
    "default_malloc",
    "dist_backend",
    "float32_channels_last",
    "get",
    "onednn_linear",
    "set_switch",
    "switches",
]
