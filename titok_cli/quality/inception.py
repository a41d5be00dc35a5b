"""The FID Inception-v3: the 2015-12-05 TensorFlow graph that FID, IS and precision/recall are defined on.

This is the network of pytorch-fid and torch-fidelity (a PyTorch port of the TF graph), written
here so that its attribute names equal the keys of pytorch-fid's public weight file
`pt_inception-2015-12-05-6726825d.pth`: that file loads strictly, unchanged. The port differs from
torchvision's Inception-v3 in ways that change every feature, reproduced on purpose:
  * the average-pool branch of the A, C and E blocks ignores the zero padding
    (`count_include_pad=False`, as TF's average pool does);
  * the pool branch of the LAST E block (`Mixed_7c`) is a 3x3 max pool, not an average pool
    (a quirk of the 2015 graph; the first E block, `Mixed_7b`, averages);
  * 1008 classes (the TF graph's label space), BatchNorm eps 1e-3, no auxiliary head.
Input protocol (pytorch-fid's): float images in [0, 1], any size, resized to 299 x 299 with
`F.interpolate(mode="bilinear", align_corners=False, antialias=False)`, then mapped to [-1, 1].
torch-fidelity and ADM's evaluator feed the same weights uint8 pixels through TF1's own bilinear
resize instead, so their features (and FIDs) differ slightly from these, most where images are
not already 299 x 299. On CUDA, float32 convolutions may run in TF32
(`torch.backends.cudnn.allow_tf32`, on by default), which moves features by about 1e-3; turn it
off for reference-exact features.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from titok_cli.checkpoint import check_state_dict, read_state_dict
from titok_cli.errors import CheckpointError

INPUT_SIZE = 299  # the graph's input side
FEATURE_DIM = 2048  # pool3, the FID features
NUM_CLASSES = 1008  # the graph's softmax, IS's label space
WEIGHTS_NAME = "fid-inception"  # this network's entry in titok_cli.quality.weights


class ConvBNReLU(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3), ReLU: every convolution of the graph."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 average over the pixels that exist: TF's SAME pooling (padding is not counted)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35 x 35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBNReLU(c_in, 64, 1)
        self.branch5x5_1 = ConvBNReLU(c_in, 48, 1)
        self.branch5x5_2 = ConvBNReLU(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBNReLU(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBNReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBNReLU(96, 96, 3, padding=1)
        self.branch_pool = ConvBNReLU(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)  # (N, 64, H, W)
        b = self.branch5x5_2(self.branch5x5_1(x))  # (N, 64, H, W)
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))  # (N, 96, H, W)
        d = self.branch_pool(_avg_pool_same(x))  # (N, pool_features, H, W)
        return torch.cat([a, b, c, d], dim=1)  # (N, 224 + pool_features, H, W)


class BlockB(nn.Module):
    """Reduction 35 -> 17 (Mixed_6a): strided 3x3, strided double 3x3 and a max pool."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBNReLU(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBNReLU(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBNReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBNReLU(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)  # (N, 384, H', W')
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))  # (N, 96, H', W')
        c = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, c_in, H', W')
        return torch.cat([a, b, c], dim=1)  # (N, 480 + c_in, H', W')


class BlockC(nn.Module):
    """17 x 17 block (Mixed_6b..e): factorised 7x7 convolutions (1x7 then 7x1)."""

    def __init__(self, c_in: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBNReLU(c_in, 192, 1)
        self.branch7x7_1 = ConvBNReLU(c_in, c7, 1)
        self.branch7x7_2 = ConvBNReLU(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBNReLU(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBNReLU(c_in, c7, 1)
        self.branch7x7dbl_2 = ConvBNReLU(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBNReLU(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBNReLU(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBNReLU(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBNReLU(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)  # (N, 192, H, W)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))  # (N, 192, H, W)
        c = self.branch7x7dbl_1(x)  # (N, c7, H, W)
        c = self.branch7x7dbl_3(self.branch7x7dbl_2(c))  # (N, c7, H, W)
        c = self.branch7x7dbl_5(self.branch7x7dbl_4(c))  # (N, 192, H, W)
        d = self.branch_pool(_avg_pool_same(x))  # (N, 192, H, W)
        return torch.cat([a, b, c, d], dim=1)  # (N, 768, H, W)


class BlockD(nn.Module):
    """Reduction 17 -> 8 (Mixed_7a): strided 3x3, strided 7x7-then-3x3 and a max pool."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBNReLU(c_in, 192, 1)
        self.branch3x3_2 = ConvBNReLU(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBNReLU(c_in, 192, 1)
        self.branch7x7x3_2 = ConvBNReLU(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBNReLU(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBNReLU(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))  # (N, 320, H', W')
        b = self.branch7x7x3_2(self.branch7x7x3_1(x))  # (N, 192, H, W)
        b = self.branch7x7x3_4(self.branch7x7x3_3(b))  # (N, 192, H', W')
        c = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, c_in, H', W')
        return torch.cat([a, b, c], dim=1)  # (N, 512 + c_in, H', W')


class BlockE(nn.Module):
    """8 x 8 block (Mixed_7b, Mixed_7c): split 1x3 / 3x1 heads; `max_pool` is the 7c quirk."""

    def __init__(self, c_in: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBNReLU(c_in, 320, 1)
        self.branch3x3_1 = ConvBNReLU(c_in, 384, 1)
        self.branch3x3_2a = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBNReLU(c_in, 448, 1)
        self.branch3x3dbl_2 = ConvBNReLU(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBNReLU(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)  # (N, 320, H, W)
        b = self.branch3x3_1(x)  # (N, 384, H, W)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], dim=1)  # (N, 768, H, W)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))  # (N, 384, H, W)
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], dim=1)  # (N, 768, H, W)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)  # (N, c_in, H, W)
        else:
            pooled = _avg_pool_same(x)  # (N, c_in, H, W)
        d = self.branch_pool(pooled)  # (N, 192, H, W)
        return torch.cat([a, b, c, d], dim=1)  # (N, 2048, H, W)


class InceptionOutput(NamedTuple):
    """What one forward gives: FID features and the logits Inception Score is computed from."""

    features: torch.Tensor  # (N, 2048) pool3
    logits: torch.Tensor  # (N, 1008) pool3 @ fc.weight.T, WITHOUT fc.bias (see `logits`)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3; attribute names are the keys of pytorch-fid's weight file."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBNReLU(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBNReLU(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBNReLU(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBNReLU(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBNReLU(80, 192, 3)
        self.Mixed_5b = BlockA(192, pool_features=32)
        self.Mixed_5c = BlockA(256, pool_features=64)
        self.Mixed_5d = BlockA(288, pool_features=64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, c7=128)
        self.Mixed_6c = BlockC(768, c7=160)
        self.Mixed_6d = BlockC(768, c7=160)
        self.Mixed_6e = BlockC(768, c7=192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, max_pool=False)
        self.Mixed_7c = BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images of any size -> the graph's input: 299 x 299, in [-1, 1] (pytorch-fid's way)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
        size = (INPUT_SIZE, INPUT_SIZE)
        x = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=False)  # (N, 3, 299, 299)
        return 2 * x - 1  # (N, 3, 299, 299)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared input (N, 3, 299, 299) -> pool3 features (N, 2048)."""
        x = self.Conv2d_1a_3x3(x)  # (N, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)  # (N, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)  # (N, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (N, 768, 17, 17)
        x = self.Mixed_7a(x)  # (N, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (N, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # (N, 2048)

    def logits(self, features: torch.Tensor, bias: bool = False) -> torch.Tensor:
        """pool3 (N, 2048) -> class logits (N, 1008).

        Without the bias by default: the Inception Score of the original TF code, ADM's evaluator
        and torch-fidelity ("logits_unbiased") all take the softmax of pool3 @ W only.
        """
        out = features @ self.fc.weight.t()  # (N, 1008)
        return out + self.fc.bias if bias else out  # (N, 1008)

    def forward(self, images: torch.Tensor) -> InceptionOutput:
        """[0, 1] images (N, 3, H, W) -> pool3 features (N, 2048) and IS logits (N, 1008)."""
        x = self.prepare(images.to(self.fc.weight.dtype))  # (N, 3, 299, 299)
        features = self.pool3(x)  # (N, 2048)
        return InceptionOutput(features, self.logits(features))


def _fill_batch_counters(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the BatchNorm step counters a file may lack (they do not affect inference)."""
    for key in model.state_dict():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    return state


def load_fid_inception(path: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> FIDInceptionV3:  # fmt: skip
    """The FID Inception-v3 in eval mode with pytorch-fid's weights, strictly loaded.

    `path`: the weight file (`--inception`); None looks in the cache and downloads once when
    online (see titok_cli.quality.weights). Float32 unless asked otherwise: the reference
    numbers are float32.
    """
    from titok_cli.quality.weights import weights_path

    file = weights_path(WEIGHTS_NAME, path)
    with torch.device("meta"):  # no random init: every tensor is overwritten below
        model = FIDInceptionV3()
    state = _fill_batch_counters(model, read_state_dict(file))
    check_state_dict(model, state, str(file))
    model = model.to_empty(device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # pragma: no cover - check_state_dict catches what strict loading would
        raise CheckpointError(f"{file}: {str(exc).splitlines()[0]}") from None
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
