"""The training objective for fine-tuning a TiTok tokenizer's decoder (official stage-2 losses).

Follows `ReconstructionLoss_Stage2` / `ReconstructionLoss_Single_Stage` of bytedance/1d-tokenizer
(modeling/modules/losses.py). Generator step, all in float32 with images in [0, 1]:

  total = reconstruction_weight * l2 (or l1)(images, recon)          mean over every pixel
        + perceptual_weight * perceptual(images, recon)                 see perceptual_loss.py
        + quantizer_weight * quantizer_loss                          VQ, when the encoder trains
        + kl_weight * mean_b KL_b                                    VAE, when the encoder trains
        + discriminator_weight * discriminator_factor * -mean(D(recon))   once step >= start

The GAN weight is fixed (no adaptive weight from last-layer gradients), as in the official.
Discriminator step (only once step >= discriminator_start; the official trainer never calls it
before): discriminator_factor * hinge(D(images), D(recon)) + lecam_weight * LeCAM, where LeCAM
pulls each batch's mean real / fake logit towards the running (EMA, decay 0.999) mean of the
other side, and the two running means are updated after use.

The defaults follow the model's official recipe: for the two-stage models (TiTok stage 2)
ConvNeXt-S at 0.1 and the GAN at 0.01 from step 20,000; for single-stage ones LPIPS + 0.1
ConvNeXt-S and the GAN at 0.1 from step 200,000.

Differences from the official, on purpose:
- The VAE term leaves out the official `logvar`: it is a frozen 0 there, so dividing by exp(0) is a no-op.
- Metrics are plain floats (one device sync per call), under the official names.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .perceptual_loss import DEFAULT_WEIGHTS, MIX, build_perceptual, check_name, official_recipe

RECONSTRUCTION_LOSSES = ("l1", "l2")
# two_stage -> (discriminator weight, first step): configs/training/TiTok/stage2 (two-stage models)
# and the single-stage recipes (configs/training/TA-TiTok)
GAN_RECIPES = {True: (0.01, 20_000), False: (0.1, 200_000)}


@dataclass(frozen=True)
class LossSettings:
    """Loss weights. Defaults: the official configs'. What depends on the recipe (`perceptual`
    "auto", the perceptual weight, the GAN's weight and start, None) is filled in for the model by
    `for_model`; the rest is common to both recipes (VQ/KL weights of the single-stage configs)."""

    reconstruction: str = "l2"  # "l1" | "l2"
    reconstruction_weight: float = 1.0
    perceptual: str = "auto"  # "auto" | "lpips" | "convnext_s" | "lpips-convnext_s" (perceptual_loss.py)
    perceptual_weight: float | None = None  # None: the recipe's (perceptual_loss.DEFAULT_WEIGHTS)
    quantizer_weight: float = 1.0
    kl_weight: float = 1e-6
    discriminator_weight: float | None = None  # None: the recipe's (GAN_RECIPES); 0 turns the GAN off entirely
    discriminator_factor: float = 1.0
    discriminator_start: int | None = None  # None: the recipe's
    lecam_weight: float = 0.001
    lecam_decay: float = 0.999

    WEIGHTS = ("reconstruction_weight", "perceptual_weight", "quantizer_weight", "kl_weight",
               "discriminator_weight", "discriminator_factor", "lecam_weight")  # fmt: skip

    def check(self) -> None:
        """UsageError for values no run can use (before anything is loaded)."""
        if self.reconstruction not in RECONSTRUCTION_LOSSES:
            raise UsageError(f"reconstruction loss {self.reconstruction!r} is not one of {', '.join(RECONSTRUCTION_LOSSES)}")
        check_name(self.perceptual)
        for name in self.WEIGHTS:
            value = getattr(self, name)
            if value is None and name in ("perceptual_weight", "discriminator_weight"):
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UsageError(f"{name.replace('_', '-')} must be a finite number >= 0, got {value}")
        start = self.discriminator_start
        if start is not None and (not isinstance(start, int) or isinstance(start, bool) or start < 0):
            raise UsageError(f"discriminator-start must be a whole number of steps >= 0, got {start}")
        if not (isinstance(self.lecam_decay, (int, float)) and 0.0 <= self.lecam_decay <= 1.0):
            raise UsageError(f"lecam-decay must be in [0, 1], got {self.lecam_decay}")

    def for_model(self, two_stage: bool) -> LossSettings:
        """These settings with what they leave open ("auto", None) made the official recipe's for a
        two-stage (TiTok stage 2) or single-stage tokenizer."""
        name = official_recipe(two_stage) if self.perceptual == "auto" else self.perceptual
        weight = DEFAULT_WEIGHTS[name] if self.perceptual_weight is None else self.perceptual_weight
        gan_weight, gan_start = GAN_RECIPES[two_stage]
        return replace(self, perceptual=name, perceptual_weight=weight,
                       discriminator_weight=gan_weight if self.discriminator_weight is None else self.discriminator_weight,
                       discriminator_start=gan_start if self.discriminator_start is None else self.discriminator_start)

    def official_block(self) -> dict[str, Any]:
        """The `losses` block of an official training config holding these (resolved) settings,
        under the official key names (what modeling/modules/losses.py reads)."""
        name = "lpips-convnext_s-%.1f-%.1f" % MIX if self.perceptual == "lpips-convnext_s" else self.perceptual
        return {"discriminator_start": self.discriminator_start, "quantizer_weight": self.quantizer_weight,
                "discriminator_factor": self.discriminator_factor, "discriminator_weight": self.discriminator_weight,
                "perceptual_loss": name, "perceptual_weight": self.perceptual_weight,
                "reconstruction_loss": self.reconstruction, "reconstruction_weight": self.reconstruction_weight,
                "lecam_regularization_weight": self.lecam_weight, "lecam_ema_decay": self.lecam_decay,
                "kl_weight": self.kl_weight}  # fmt: skip

    @property
    def uses_perceptual(self) -> bool:
        return self.perceptual_weight is None or self.perceptual_weight > 0

    @property
    def uses_gan(self) -> bool:
        """Whether a discriminator exists at all (the official adds the GAN term only when both are > 0)."""
        return (self.discriminator_weight is None or self.discriminator_weight > 0) and self.discriminator_factor > 0


def hinge_discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """0.5 * (mean relu(1 - real) + mean relu(1 + fake)): zero once real >= 1 and fake <= -1."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def lecam_penalty(real_mean: Tensor, fake_mean: Tensor, ema_real: Tensor, ema_fake: Tensor) -> Tensor:
    """LeCAM (Tseng et al. 2021): squared excess of the real mean over the fake EMA, plus of the real
    EMA over the fake mean; keeps the discriminator's outputs from drifting apart on small data."""
    return (F.relu(real_mean - ema_fake).pow(2).mean() + F.relu(ema_real - fake_mean).pow(2).mean())


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """requires_grad False on `module`'s parameters inside, their previous flags after. Autograd
    records the flag at forward time, so a graph built inside never reaches these parameters."""
    params = list(module.parameters())
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)


def _floats(values: dict[str, Tensor | float]) -> dict[str, float]:
    """Tensors -> floats with one device transfer for all of them."""
    keys = [k for k, v in values.items() if isinstance(v, Tensor)]
    out = {k: float(v) for k, v in values.items() if not isinstance(v, Tensor)}
    if keys:
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys]).cpu().tolist()
        out.update(zip(keys, stacked))
    return {k: out[k] for k in values}


class TokenizerObjective(nn.Module):
    """Holds the perceptual net (frozen), the discriminator (trainable, or None) and LeCAM EMA buffers.

    The perceptual net is kept out of `state_dict` (it is loaded from its own public files and
    never changes), so a checkpoint of this module holds only `discriminator.*` (the official
    loss module's key names) and the two LeCAM buffers; `.to()` still moves it.
    """

    def __init__(self, settings: LossSettings, perceptual: nn.Module | None, discriminator: nn.Module | None) -> None:
        super().__init__()
        settings.check()
        if (settings.perceptual_weight is None or (settings.perceptual == "auto" and settings.perceptual_weight > 0)
                or settings.discriminator_weight is None or settings.discriminator_start is None):
            raise ValueError("resolve the recipe's perceptual loss and GAN settings first (LossSettings.for_model)")
        if settings.perceptual_weight > 0 and perceptual is None:
            raise ValueError("perceptual_weight > 0 needs a perceptual network")
        if settings.uses_gan != (discriminator is not None):
            raise ValueError("a discriminator is needed exactly when the GAN is on (discriminator weight and factor > 0)")
        self.settings = settings
        self.__dict__["perceptual"] = perceptual.requires_grad_(False).eval() if perceptual is not None else None
        self.discriminator = discriminator
        self.register_buffer("ema_real_logits_mean", torch.zeros(1))  # (1,) as in the official loss module
        self.register_buffer("ema_fake_logits_mean", torch.zeros(1))  # (1,)

    def _apply(self, fn: Any, recurse: bool = True) -> TokenizerObjective:
        super()._apply(fn, recurse)
        if self.perceptual is not None:
            self.perceptual._apply(fn, recurse)
        return self

    def gan_active(self, step: int) -> bool:
        """Whether step `step` has the GAN terms (official: global_step >= discriminator_start)."""
        return self.discriminator is not None and step >= self.settings.discriminator_start

    def trainable_discriminator(self) -> nn.Module | None:
        """The module whose parameters the discriminator optimizer updates (None: no GAN)."""
        return self.discriminator

    @torch.no_grad()
    def update_lecam(self, real_mean: Tensor | float, fake_mean: Tensor | float) -> None:
        """Move the LeCAM averages toward these mean logits (decay `lecam_decay`, as officially);
        nothing moves when LeCAM is off, whoever calls."""
        if self.settings.lecam_weight <= 0:
            return
        d = self.settings.lecam_decay
        self.ema_real_logits_mean.mul_(d).add_((1 - d) * torch.as_tensor(real_mean, dtype=torch.float32))
        self.ema_fake_logits_mean.mul_(d).add_((1 - d) * torch.as_tensor(fake_mean, dtype=torch.float32))

    def generator_loss(self, images: Tensor, recon: Tensor, extra: dict[str, Tensor],
                       step: int) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
        """images/recon in [0,1], (B,3,H,W). extra: {"quantizer_loss": scalar} for VQ when the encoder trains,
        {"kl": per-sample KL (B,)} for VAE when the encoder trains; missing keys = term absent. Computed in float32
        (cast inputs), discriminator params not updated by this loss (requires_grad False during it)."""
        s = self.settings
        with torch.autocast(device_type=images.device.type, enabled=False):
            x = images.float().contiguous()  # (B, 3, H, W)
            y = recon.float().contiguous()  # (B, 3, H, W)
            if x.shape != y.shape:
                raise ValueError(f"images {tuple(x.shape)} and reconstructions {tuple(y.shape)} differ in shape")
            rec = F.l1_loss(y, x) if s.reconstruction == "l1" else F.mse_loss(y, x)
            rec = rec * s.reconstruction_weight
            total = rec
            metrics: dict[str, Tensor | float] = {"reconstruction_loss": rec}
            if s.perceptual_weight > 0:
                perceptual = s.perceptual_weight * self.perceptual(x, y).mean()  # (B,) or scalar -> scalar
                total = total + perceptual
                metrics["perceptual_loss"] = perceptual
            if "quantizer_loss" in extra:
                quantizer = s.quantizer_weight * extra["quantizer_loss"].float()
                total = total + quantizer
                metrics["quantizer_loss"] = quantizer
            if "kl" in extra:
                kl = extra["kl"].float()  # (B,)
                kl = s.kl_weight * kl.sum() / kl.shape[0]
                total = total + kl
                metrics["kl_loss"] = kl
            for name in ("commitment_loss", "codebook_loss"):
                if name in extra:
                    metrics[name] = extra[name]
            factor = s.discriminator_factor if self.gan_active(step) else 0.0
            gan = torch.zeros((), device=x.device)
            if factor > 0:
                with frozen(self.discriminator):
                    gan = -self.discriminator(y).mean()  # D's (B, 1, 16, 16) logits -> scalar
            weighted_gan = s.discriminator_weight * factor * gan
            total = total + weighted_gan
        metrics.update(weighted_gan_loss=weighted_gan, gan_loss=gan, discriminator_factor=factor,
                       d_weight=s.discriminator_weight)  # fmt: skip
        return total, _floats({"total_loss": total, **metrics})

    def discriminator_loss(self, images: Tensor, recon: Tensor, step: int,
                           update_averages: bool = True) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
        """Hinge + LeCAM; updates the LeCAM EMA buffers (buffers -> they land in state_dict for exact resume).

        Before discriminator_start (or without a GAN) the loss is a constant 0 with no graph, the
        discriminator is not run and the buffers do not move: the official trainer skips the
        discriminator step there, so callers check `gan_active(step)` and skip it too.
        `update_averages=False` leaves the buffers to one `update_lecam` call per optimizer step
        (with the logits' means over all micro-batches and ranks: then the averages, and so the
        run, do not depend on how the global batch is split)."""
        s = self.settings
        if not self.gan_active(step):
            zero = torch.zeros((), device=images.device)
            return zero, {"discriminator_loss": 0.0, "lecam_loss": 0.0, "discriminator_factor": 0.0}
        with torch.autocast(device_type=images.device.type, enabled=False):
            self.discriminator.requires_grad_(True)
            logits_real = self.discriminator(images.detach().float())  # (B, 1, 16, 16)
            logits_fake = self.discriminator(recon.detach().float())  # (B, 1, 16, 16)
            loss = s.discriminator_factor * hinge_discriminator_loss(logits_real, logits_fake)
            lecam = torch.zeros((), device=images.device)
            real_mean, fake_mean = logits_real.mean(), logits_fake.mean()
            if s.lecam_weight > 0:
                ema_real = self.ema_real_logits_mean.clone()  # values before this step's update
                ema_fake = self.ema_fake_logits_mean.clone()
                lecam = s.lecam_weight * lecam_penalty(real_mean, fake_mean, ema_real, ema_fake)
            if update_averages:
                self.update_lecam(real_mean.detach(), fake_mean.detach())
            loss = loss + lecam
        metrics = {"discriminator_loss": loss, "logits_real": real_mean, "logits_fake": fake_mean,
                   "lecam_loss": lecam, "discriminator_factor": s.discriminator_factor}  # fmt: skip
        return loss, _floats(metrics)


def _lpips_paths(lpips_weights: str | os.PathLike | Sequence[str | os.PathLike] | None,
                 feature_dir: str | os.PathLike | None) -> list[str | os.PathLike]:  # fmt: skip
    if lpips_weights is not None:
        return [lpips_weights] if isinstance(lpips_weights, (str, os.PathLike)) else list(lpips_weights)
    return [feature_dir] if feature_dir is not None else []


def build_objective(settings: LossSettings, device: torch.device | str,
                    lpips_weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                    feature_dir: str | os.PathLike | None = None, seed: int = 0,
                    convnext_weights: str | os.PathLike | None = None) -> TokenizerObjective:  # fmt: skip
    """The objective on `device` for resolved settings (`for_model`): the perceptual networks found
    as `titok eval recon` finds LPIPS (`lpips_weights`: a folder holding both files or the two
    files; else `feature_dir` as such a folder; else the cache `$HF_HOME/titok-cli`, downloaded
    once when online; ConvNeXt-S from `convnext_weights`, else the cache) and, only when the GAN
    is on, a fresh discriminator initialised from `seed`. `objective.weights` names the files used."""
    from .discriminator import build_discriminator

    settings.check()
    weights: dict[str, Any] = {}
    perceptual = None
    if settings.uses_perceptual and settings.perceptual != "auto":
        perceptual, weights = build_perceptual(settings.perceptual, device, _lpips_paths(lpips_weights, feature_dir),
                                               convnext_weights)  # fmt: skip
    discriminator = build_discriminator(seed) if settings.uses_gan else None
    objective = TokenizerObjective(settings, perceptual, discriminator).to(device)
    objective.weights = weights
    return objective
