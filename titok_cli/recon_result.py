"""The report of one `titok eval recon` run and its JSON results file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .quality.codebook import CodebookStats

RESULT_FORMAT = "titok-eval-recon"


@dataclass
class ReconResult:
    """The report of one `eval recon` run (means over the images that were read)."""

    count: int  # images measured
    psnr: float  # dB, mean of per-image PSNR
    ssim: float  # mean of per-image SSIM
    lpips: float | None  # mean of per-image LPIPS-VGG; None when skipped
    rfid: float | None  # Fréchet distance, references vs reconstructions; None when skipped
    inception_score: tuple[float, float] | None  # of the reconstructions: (mean, std over splits)
    inception_score_reference: tuple[float, float] | None  # of the references, for comparison
    codebook: CodebookStats | None  # VQ models; None for VAE models (see codebook_note)
    codebook_note: str | None
    model: dict[str, Any]  # where the tokenizer came from (as token files record it)
    protocol: dict[str, Any]  # crop, quantisation, dtype, Inception resize, metric definitions
    weights: dict[str, list[dict[str, Any]]]  # feature network weight files used
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, reason), skipped
    fingerprint: str = ""
    output: Path | None = None
    resumed_from: int = 0  # inputs this rank had done in an earlier, interrupted run
    already_done: bool = False  # `output` already held the report of this identical run

    def to_dict(self) -> dict[str, Any]:
        """The results file's content (JSON types only; Infinity for a lossless PSNR)."""
        out: dict[str, Any] = {"format": RESULT_FORMAT, "version": 1}
        for key in ("count", "psnr", "ssim", "lpips", "rfid", "inception_score", "inception_score_reference"):
            out[key] = getattr(self, key)
        for key in ("inception_score", "inception_score_reference"):
            if out[key] is not None:
                out[key] = {"mean": out[key][0], "std": out[key][1]}
        out["codebook"] = None if self.codebook is None else {
            **asdict(self.codebook), "position_usage": list(self.codebook.position_usage),
            "mean_position_usage": self.codebook.mean_position_usage}  # fmt: skip
        out.update(codebook_note=self.codebook_note, model=self.model, protocol=self.protocol,
                   weights=self.weights, failures=[{"path": p, "reason": r} for p, r in self.failures],
                   fingerprint=self.fingerprint)  # fmt: skip
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], output: Path | None = None) -> ReconResult:
        def pair(value: Any) -> tuple[float, float] | None:
            return None if value is None else (value["mean"], value["std"])

        book = data.get("codebook")
        if book is not None:
            book = {k: v for k, v in book.items() if k != "mean_position_usage"}
            book = CodebookStats(**{**book, "position_usage": tuple(book["position_usage"])})
        return cls(count=data["count"], psnr=data["psnr"], ssim=data["ssim"], lpips=data["lpips"], rfid=data["rfid"],
                   inception_score=pair(data["inception_score"]),
                   inception_score_reference=pair(data["inception_score_reference"]), codebook=book,
                   codebook_note=data.get("codebook_note"), model=data["model"], protocol=data["protocol"],
                   weights=data.get("weights", {}), failures=[(f["path"], f["reason"]) for f in data["failures"]],
                   fingerprint=data["fingerprint"], output=output)  # fmt: skip


def read_result(path: Path) -> ReconResult | None:
    """The report in `path`, or None when it is not one (then the overwrite rule decides)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
            return None
        return ReconResult.from_dict(data, path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
