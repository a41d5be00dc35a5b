"""Write tests/data/convnext_reference.npz: torchvision's ConvNeXt and the official ConvNeXt-S
perceptual formula, run once, for tests/test_convnext.py (see README.md here).

Runs in an environment with torchvision; titok_cli is not imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.convnext import CNBlockConfig, ConvNeXt, convnext_small

OUT = Path(__file__).resolve().parents[1] / "data" / "convnext_reference.npz"
DIMS, DEPTHS, CLASSES = (8, 16, 24, 32), (1, 1, 3, 1), 10
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def small_net() -> ConvNeXt:
    """A narrow ConvNeXt whose every parameter is random and far from its initial value (He-scaled
    weights, layer scales of 0.3-1 rather than 1e-6, LayerNorms off identity), so each block counts."""
    torch.manual_seed(20220110)
    setting = [CNBlockConfig(d, DIMS[i + 1] if i + 1 < len(DIMS) else None, n) for i, (d, n) in enumerate(zip(DIMS, DEPTHS))]
    net = ConvNeXt(setting, stochastic_depth_prob=0.3, num_classes=CLASSES).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1 and not name.endswith("layer_scale"):
                p.normal_(0.0, p[0].numel() ** -0.5)
            elif name.endswith("layer_scale"):
                p.uniform_(0.3, 1.0)
            elif p.dim() == 1:  # LayerNorm weights/biases and all biases
                p.copy_((1.0 if name.endswith("weight") and "norm" in name.lower() else 0.0) + 0.2 * torch.randn_like(p))
    return net


def convnext_distance(net: ConvNeXt, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The official convnext_s term: resize to 224, ImageNet-normalize, MSE of the logits."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    a = F.interpolate(x, size=224, mode="bilinear", align_corners=False, antialias=True)
    b = F.interpolate(y, size=224, mode="bilinear", align_corners=False, antialias=True)
    return F.mse_loss(net((a - mean) / std), net((b - mean) / std), reduction="mean")


def main() -> None:
    net = small_net()
    g = torch.Generator().manual_seed(7)
    inputs = torch.randn(3, 3, 32, 32, generator=g)  # (3, 3, 32, 32), already "normalized"
    images = torch.rand(2, 3, 48, 48, generator=g)  # (2, 3, 48, 48) in [0, 1]
    recon = (images + 0.5 * torch.randn(2, 3, 48, 48, generator=g)).clamp(0, 1)  # far apart
    with torch.no_grad():
        logits = net(inputs)  # (3, 10)
        distance = convnext_distance(net, recon, images)
    small = convnext_small().state_dict()
    arrays = {f"w:{k}": v.numpy() for k, v in net.state_dict().items()}
    arrays.update(inputs=inputs.numpy(), logits=logits.numpy(), images=images.numpy(), recon=recon.numpy(),
                  distance=np.float64(distance.item()), config=json.dumps({"dims": DIMS, "depths": DEPTHS, "classes": CLASSES}),
                  small_shapes=json.dumps({k: list(v.shape) for k, v in small.items()}),
                  versions=json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__}))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"{OUT}: {OUT.stat().st_size} bytes, {len(small)} ConvNeXt-S keys, distance {distance.item():.6g}")


if __name__ == "__main__":
    main()
