"""How many images one decoder call may take: a memory budget over a per-image estimate.

The two-stage models' conv pixel decoder keeps several full-resolution activations alive per
image (measured on CPU: about 1.6 GB per 512x512 image in float32), so a large batch can
exhaust memory. `decode` splits a batch into chunks of `decode_batch_limit` images: a fraction
of the memory that is free now (CPU: MemAvailable, capped at 1 GiB; CUDA: `torch.cuda.mem_get_info`) divided
by `decode_bytes_per_image`, which follows the decoder's shape (resolution, channels, width,
sequence length). Outputs do not depend on the chunking.
"""

from __future__ import annotations

import os

import torch

from ..config import VIT_SIZES, TokenizerConfig

CPU_FRACTION = 0.5  # of MemAvailable: the rest stays for the process's other arrays and for neighbours
# On CPU, more images per call buy no speed (measured, L-32 256x256 on 2 cores: 2 vs 8 images per
# call within 5%), so activations are capped: decoding 1,000 rows at -b 16 stays under 4 GB RSS.
CPU_CAP_BYTES = 1 << 30
CUDA_FRACTION = 0.8  # of the free device memory
# Live full-resolution tensors at the pixel decoder's first level, per channel of it: residual
# input, GroupNorm output, conv output, the sub-pixel upsampling's phase buffers. Measured peak
# RSS growth per image (float32, random L-32 weights): about 6 at 256x256 and 9 at 512x512.
PIXEL_LIVE_TENSORS = 8
VIT_LIVE_TENSORS = 12  # per token and channel: residual, LayerNorm, qkv, MLP hidden (4x), output


def decode_bytes_per_image(config: TokenizerConfig, dtype: torch.dtype = torch.float32) -> int:
    """Estimated peak bytes one image adds to a decoder call (activations only, not weights)."""
    elem = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    width, _, heads = VIT_SIZES[config.vit_dec_model_size]
    grid = config.image_size // config.vit_dec_patch_size
    seq = grid * grid + config.num_latent_tokens + 1
    vit = elem * (VIT_LIVE_TENSORS * seq * width + 2 * heads * seq * seq)
    pixel = 0
    if config.finetune_decoder:
        # the pixel decoder runs in float32 unless the model is bfloat16 (see pixel_decoder.py)
        pelem = 2 if dtype == torch.bfloat16 else 4
        pixel = pelem * PIXEL_LIVE_TENSORS * config.pixel_hidden_channels * config.image_size**2
    else:
        pixel = 4 * 3 * config.image_size**2 * 4
    return int(vit + pixel)


def available_memory(device: torch.device) -> int | None:
    """Bytes free now for this device's allocations (None when it cannot be told)."""
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(free * CUDA_FRACTION)
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return min(CPU_CAP_BYTES, int(int(line.split()[1]) * 1024 * CPU_FRACTION))
    except (OSError, ValueError, IndexError):
        pass
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return min(CPU_CAP_BYTES, int(free * CPU_FRACTION))
    except (ValueError, OSError, AttributeError):
        return None


def decode_batch_limit(config: TokenizerConfig, dtype: torch.dtype, device: torch.device) -> int:
    """Images per decoder call that fit the budget now (at least 1; very large without a budget)."""
    budget = available_memory(device)
    if budget is None:
        return 1 << 30
    return max(1, budget // decode_bytes_per_image(config, dtype))
