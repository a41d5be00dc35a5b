"""Held-out reconstruction metrics during fine-tuning: `titok eval recon` on the EMA weights.

Each measurement is an `eval_recon` run with its report at RUN_DIR/heldout/step-<N>.json, so a
resumed run finds the measurements it already made (same step, same weights after an exact
resume) instead of repeating them, and the before/after table can be read back at the end.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import UsageError
from .ema import EMA
from .tokenizer_settings import HELDOUT_KEYS

HELDOUT = "heldout"


class Heldout:
    """The held-out images, the feature networks that measure them, and the reports folder."""

    def __init__(self, inputs: Sequence[str | os.PathLike], run_dir: Path, device: torch.device, batch_size: int,
                 lpips_weights: str | os.PathLike | None = None,
                 inception_weights: str | os.PathLike | None = None) -> None:  # fmt: skip
        from ..inputs import has_inputs
        from ..quality.feature_nets import load_feature_nets

        self.inputs = [os.fspath(p) for p in inputs]
        if not has_inputs(self.inputs):
            raise UsageError(f"no image files found in {', '.join(self.inputs)} (held-out images)")
        self.folder = run_dir / HELDOUT
        self.batch_size = batch_size
        self.nets = load_feature_nets(device, lpips=True, fid=inception_weights is not None,
                                      lpips_paths=[lpips_weights] if lpips_weights else [],
                                      inception_path=inception_weights)  # fmt: skip

    def report_path(self, step: int) -> Path:
        return self.folder / f"step-{step:08d}.json"

    def measure(self, step: int, model: torch.nn.Module, ema: EMA) -> dict[str, Any]:
        """The metrics of the EMA weights after `step` steps (collective under torchrun)."""
        from ..eval_recon import ReconSettings, eval_recon

        frozen = copy.deepcopy(model).eval()
        ema.copy_to(frozen)
        self.folder.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            result = eval_recon(self.inputs, frozen, self.nets, ReconSettings(batch_size=self.batch_size),
                                output=self.report_path(step))  # fmt: skip
        return record(step, result.to_dict())

    def history(self, last_step: int) -> list[dict[str, Any]]:
        """Every measurement up to `last_step`, oldest first (step 0: the starting checkpoint)."""
        out = []
        for path in sorted(self.folder.glob("step-*.json")):
            step = int(path.stem.removeprefix("step-"))
            if step <= last_step:
                out.append(record(step, json.loads(path.read_text(encoding="utf-8"))))
        return out


def record(step: int, report: dict[str, Any]) -> dict[str, Any]:
    return {"step": step, "images": report.get("count"), **{k: report.get(k) for k in HELDOUT_KEYS}}
