"""Independent PyTorch oracle of the DMVFN training loss, written from docs/reference-dmvfn.md only.

Laplacian pyramid L1, a torchvision-layout VGG19 `features` (built here: torchvision's wheels do
not import beside the CPU torch), the perceptual loss and the combined per-triplet loss, plus
random VGG19 weights saved in torchvision's key layout. NCHW, float32, plain torch. Used by the
tests and by the benchmarks (the PyTorch side of bench/run.py and bench/train_memory.py); needs
torch, and nothing in the package imports it.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# torchvision's `cfgs["E"]` (VGG19): conv widths, "M" for a 2x2 max pool.
VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
VGG19_CONV_KEYS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
FEATURE_AT = [1, 6, 11, 20, 29]
VGG_WEIGHTS = [1.0 / 2.6, 1.0 / 4.8, 1.0 / 3.7, 1.0 / 5.6, 10.0 / 1.5]


# -- Laplacian pyramid --------------------------------------------------------------------
def gauss_kernel(channels: int, gain: float = 1.0) -> torch.Tensor:
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = torch.outer(taps, taps) / 256.0 * gain
    return k.expand(channels, 1, 5, 5).contiguous()


def blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), gauss_kernel(x.shape[1], gain).to(x), groups=x.shape[1])


def down(x: torch.Tensor) -> torch.Tensor:
    return x[:, :, ::2, ::2]


def up(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    z = x.new_zeros(b, c, 2 * h, 2 * w)
    z[:, :, ::2, ::2] = x
    return blur(z, gain=4.0)


def laplacian_pyramid(img: torch.Tensor, levels: int = 5) -> list[torch.Tensor]:
    bands, current = [], img
    for _ in range(levels):
        d = down(blur(current))
        bands.append(current - up(d))
        current = d
    return bands


def laplacian_loss(pred: torch.Tensor, gt: torch.Tensor, levels: int = 5) -> torch.Tensor:
    return sum(F.l1_loss(a, b) for a, b in zip(laplacian_pyramid(pred, levels), laplacian_pyramid(gt, levels)))


# -- VGG19 --------------------------------------------------------------------------------
def vgg19_features() -> nn.Sequential:
    """torchvision `vgg19().features`: 37 layers, convs at the indices in VGG19_CONV_KEYS."""
    layers, cin = [], 3
    for v in VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            cin = v
    return nn.Sequential(*layers)


class TorchVGG19(nn.Module):
    """Holds `features` so that the state dict keys read `features.N.weight` as torchvision's do."""

    def __init__(self):
        super().__init__()
        self.features = vgg19_features()
        assert [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)] == VGG19_CONV_KEYS

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in FEATURE_AT:
                out.append(x)
            if i == FEATURE_AT[-1]:
                break
        return out


def randomize_vgg_(model: TorchVGG19, seed: int = 0) -> TorchVGG19:
    """He-normal weights (scale-preserving, so deep features still depend on the input), small biases."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.features:
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.copy_((torch.rand(m.bias.shape, generator=gen) - 0.5) * 0.1)
    return model


def random_vgg_state(seed: int = 0, classifier: bool = True) -> dict[str, torch.Tensor]:
    """A VGG19 state dict in torchvision's layout (features 0..34), plus a small fake classifier."""
    state = dict(randomize_vgg_(TorchVGG19(), seed).state_dict())
    if classifier:
        gen = torch.Generator().manual_seed(seed + 1)
        state["classifier.0.weight"] = torch.randn(8, 16, generator=gen)
        state["classifier.0.bias"] = torch.zeros(8)
    return state


def save_random_vgg_pth(path: str | Path, seed: int = 0, classifier: bool = True) -> Path:
    torch.save(random_vgg_state(seed, classifier), path)
    return Path(path)


def vgg_from_state(state: dict[str, torch.Tensor]) -> TorchVGG19:
    model = TorchVGG19().eval()
    model.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")}, strict=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def perceptual_loss(vgg: TorchVGG19, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std applied to the channels as given (the official BGR quirk), 5 weighted L1 terms."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    fp = vgg.taps((pred - mean) / std)
    fg = vgg.taps((gt - mean) / std)
    return sum(0.1 * w * F.l1_loss(a, b) for w, a, b in zip(VGG_WEIGHTS, fp, fg))


def dmvfn_loss(outputs, gt, vgg=None):
    """`sum_i 0.8^(n-1-i) Lap(out_i, gt) + 0.5 VGG(out_last, gt)`; returns (total, lap, vgg)."""
    n = len(outputs)
    lap = sum(0.8 ** (n - 1 - i) * laplacian_loss(o, gt) for i, o in enumerate(outputs))
    vgg_term = 0.5 * perceptual_loss(vgg, outputs[-1], gt) if vgg is not None else torch.zeros(())
    return lap + vgg_term, lap, vgg_term
