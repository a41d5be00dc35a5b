"""The grid of a sampling sweep: values per swept field, parsed and checked, and their combinations.

Every point is the generator's own `SamplingParams` with the swept fields overridden, so nothing
here spells a default.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .sampling_params import FLAGS, SamplingParams

# column titles of the swept fields (tables, plot)
TITLES = {"num_steps": "steps", "guidance_scale": "guidance scale", "guidance_decay": "guidance decay",
          "guidance_scale_pow": "guidance pow", "randomize_temperature": "temperature",
          "softmax_temperature_annealing": "annealing"}  # fmt: skip


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "on", "yes", "1"):
        return True
    if low in ("false", "off", "no", "0"):
        return False
    raise ValueError(text)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "num_steps": int, "guidance_scale": float, "guidance_decay": str, "guidance_scale_pow": float,
    "randomize_temperature": float, "softmax_temperature_annealing": _parse_bool,
}  # fmt: skip


def parse_axis(name: str, values: Sequence[Any]) -> list[Any]:
    """One swept field's values (text from the command line, or already typed), checked; UsageError naming the flag."""
    if name not in FLAGS:
        raise UsageError(f"{name} is not a sampling setting; sweepable: {', '.join(FLAGS)}")
    flag = FLAGS[name]
    if not values:
        raise UsageError(f"{flag}: give at least one value")
    parsed = []
    for value in values:
        try:
            typed = _PARSERS[name](value) if isinstance(value, str) else value
        except ValueError:
            raise UsageError(f"{flag}: {value!r} is not a valid value") from None
        SamplingParams.check(**{name: typed})
        parsed.append(typed)
    canonical = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and _PARSERS[name] is float
                 else v for v in parsed]  # fmt: skip
    if len(set(canonical)) != len(canonical):
        raise UsageError(f"{flag}: a value is repeated in {', '.join(map(str, values))}")
    return canonical


@dataclass(frozen=True)
class GridPoint:
    """One combination of the swept settings, and the full sampling settings it stands for."""

    index: int
    settings: dict[str, Any]  # swept field -> value, in axis order
    params: SamplingParams

    @property
    def label(self) -> str:
        return ", ".join(f"{TITLES[k]} {v}" for k, v in self.settings.items())

    @property
    def slug(self) -> str:
        text = "_".join(f"{k}-{v}" for k, v in self.settings.items())
        return re.sub(r"[^0-9A-Za-z._-]+", "", text.lower())


def parse_axes(axes: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Every swept field's values, checked (UsageError when nothing is swept or a value is bad)."""
    if not axes:
        raise UsageError(f"nothing to sweep: give a list of values to at least one of {', '.join(FLAGS.values())}")
    return {name: parse_axis(name, values) for name, values in axes.items()}


def build_grid(base: SamplingParams, axes: Mapping[str, Sequence[Any]]) -> list[GridPoint]:
    """Every combination of `axes` (the first axis varies slowest), each `base.override(...)`."""
    typed = parse_axes(axes)
    names = list(typed)
    return [GridPoint(i, dict(zip(names, combo)), base.override(**dict(zip(names, combo))))
            for i, combo in enumerate(itertools.product(*typed.values()))]  # fmt: skip


__all__ = ["TITLES", "GridPoint", "build_grid", "parse_axes", "parse_axis"]
