"""The one definition of MaskGIT sampling settings (no torch import, so flags are checked fast).

Defaults are never written here: a `SamplingParams` is built from a generator's config
(`SamplingParams.from_config`, which already holds the registry's official values when the
model came from the registry), then changed field by field (`override`, which ignores None,
so CLI flags that were not given leave the model's value in place). The same object goes
unchanged to `generate`, the PNG loop, the FID job and bench.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .config import GUIDANCE_DECAYS, GeneratorConfig
from .errors import ConfigError, UsageError

# field -> the `titok sample` flag that sets it (error messages name the flag)
FLAGS = {
    "num_steps": "--steps",
    "guidance_scale": "--guidance-scale",
    "guidance_decay": "--guidance-decay",
    "guidance_scale_pow": "--guidance-scale-pow",
    "randomize_temperature": "--temperature",
    "softmax_temperature_annealing": "--annealing",
}


def _problem(name: str, value: Any) -> str | None:
    """What is wrong with one field's value, or None."""
    if name == "num_steps":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number, not {value!r}"
        return None if value >= 1 else f"must be >= 1, not {value}"
    if name == "guidance_decay":
        return None if value in GUIDANCE_DECAYS else f"must be one of {', '.join(GUIDANCE_DECAYS)}, not {value!r}"
    if name == "softmax_temperature_annealing":
        return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"must be a finite number, not {value!r}"
    if name == "randomize_temperature" and value < 0:
        return f"must be >= 0, not {value}"
    return None


@dataclass(frozen=True)
class SamplingParams:
    """Arguments of the official MaskGIT sampler (validated on construction: UsageError naming the flag)."""

    num_steps: int
    guidance_scale: float
    guidance_decay: str
    guidance_scale_pow: float
    randomize_temperature: float
    softmax_temperature_annealing: bool

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = _problem(f.name, getattr(self, f.name))
            if problem:
                raise UsageError(f"{FLAGS[f.name]} {problem}")
        for name in ("guidance_scale", "guidance_scale_pow", "randomize_temperature"):
            object.__setattr__(self, name, float(getattr(self, name)))  # 3 and 3.0: one value, one JSON spelling

    @classmethod
    def from_config(cls, config: GeneratorConfig) -> "SamplingParams":
        """The generator's own settings (config.json, or the registry's official values)."""
        values = config.sampling_defaults()
        for name, value in values.items():
            problem = _problem(name, value)
            if problem:
                raise ConfigError(f"generator config: {name} {problem}")
        return cls(**values)

    @classmethod
    def check(cls, **values: Any) -> None:
        """Validate some fields before a model is loaded (None = not given); UsageError naming the flag."""
        for name, value in values.items():
            if name not in FLAGS:
                raise TypeError(f"SamplingParams has no field {name!r}")
            problem = None if value is None else _problem(name, value)
            if problem:
                raise UsageError(f"{FLAGS[name]} {problem}")

    def override(self, **changes: Any) -> "SamplingParams":
        """A copy with the given fields replaced; None values leave a field as it is."""
        self.check(**changes)
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **given) if given else self

    def to_dict(self) -> dict[str, Any]:
        """Field -> value, in field order (JSON output, token-file headers, job fingerprints)."""
        return asdict(self)


__all__ = ["FLAGS", "SamplingParams"]
