"""PSNR, SSIM, MS-SSIM and LPIPS in JAX against the reference packages, on real and random images.

SSIM and MS-SSIM against `pytorch_msssim` 1.0 (max abs difference <= 1e-5); LPIPS against the
`lpips` package's own `LPIPS.forward` (<= 1e-4) with the same random weights. The `lpips` package
builds its trunk with `torchvision.models.alexnet`; torchvision has no CPU build that imports
beside the CPU torch here, so the tests hand `lpips` a stand-in `torchvision` module whose
`models.alexnet` returns torchvision's exact `features` layout holding our random weights.
"""

from __future__ import annotations

import sys
import types

import jax
import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim as torch_ms_ssim
from pytorch_msssim import ssim as torch_ssim

from conftest import random_alexnet_state, random_linear_state
from dmvfn_jax.convert import conversions
from dmvfn_jax.data.resize import resize_linear
from dmvfn_jax.errors import InputError
from dmvfn_jax.evaluation import metrics
from dmvfn_jax.evaluation.lpips import load_lpips
from dmvfn_jax.image_io import load_image


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def noisy_pair(seed: int, b: int, h: int, w: int, noise: float = 0.1):
    rng = np.random.default_rng(seed)
    x = rng.random((b, h, w, 3), dtype=np.float32)
    y = np.clip(x + noise * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def real_pairs(real_data):
    """(frame t, frame t+1) pairs in [0, 1]: Vimeo 448x256, KITTI at 832x256, Cityscapes at 1024x512."""
    def pair(files, size=None):
        a, b = (load_image(f) for f in files)
        if size:
            a, b = resize_linear(a, *size), resize_linear(b, *size)
        return a[None].astype(np.float32) / 255, b[None].astype(np.float32) / 255

    v = real_data / "vimeo_00001_0002"
    k = sorted((real_data / "kitti_0023").glob("*.png"))
    c = sorted((real_data / "cityscapes_aachen00").glob("*.jpg"))
    return {
        "vimeo": pair([v / "im1.png", v / "im2.png"]),
        "kitti": pair(k[2:4], (832, 256)),
        "cityscapes": pair(c[3:5], (1024, 512)),
        "bedroom": pair(sorted((real_data / "sam2_bedroom").glob("*.jpg"))[:2]),  # 960x540
    }


def test_psnr_is_the_official_formula(real_pairs):
    x, y = real_pairs["vimeo"]
    want = -10 * np.log10(np.mean((x.astype(np.float64) - y) ** 2))
    np.testing.assert_allclose(np.asarray(metrics.psnr(x, y)), [want], rtol=1e-5)


@pytest.mark.parametrize("name", ["vimeo", "kitti", "cityscapes", "bedroom"])
def test_ssim_and_ms_ssim_match_pytorch_msssim_on_real_frames(real_pairs, name):
    x, y = real_pairs[name]
    for ours, theirs in ((metrics.ssim, torch_ssim), (metrics.ms_ssim, torch_ms_ssim)):
        got = np.asarray(jax.jit(ours)(x, y))
        want = theirs(nchw(x), nchw(y), data_range=1.0, size_average=False).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("h,w", [(256, 448), (171, 205), (161, 163), (33, 47), (9, 20), (12, 11)])
def test_ssim_and_ms_ssim_match_pytorch_msssim_on_random_images(h, w):
    x, y = noisy_pair(h * w, 3, h, w)
    with pytest.warns() if min(h, w) < 11 else _no_warning():
        want = torch_ssim(nchw(x), nchw(y), data_range=1.0, size_average=False).numpy()
    np.testing.assert_allclose(np.asarray(metrics.ssim(x, y)), want, atol=1e-5, rtol=0)
    if min(h, w) > 160:
        want = torch_ms_ssim(nchw(x), nchw(y), data_range=1.0, size_average=False).numpy()
        np.testing.assert_allclose(np.asarray(metrics.ms_ssim(x, y)), want, atol=1e-5, rtol=0)
    else:
        with pytest.raises(InputError, match="MS-SSIM needs both sides > 160 pixels"):
            metrics.ms_ssim(x, y)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_metrics_reject_mismatched_shapes():
    x, y = noisy_pair(0, 1, 20, 20)
    with pytest.raises(InputError, match=r"ssim: images of different shapes"):
        metrics.ssim(x, y[:, :10])
    with pytest.raises(InputError, match=r"psnr: expected \(B, H, W, C\) images"):
        metrics.psnr(x[0], y[0])


# -- LPIPS ----------------------------------------------------------------------------------
ALEXNET_LAYERS = [  # torchvision.models.alexnet().features
    lambda: torch.nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), lambda: torch.nn.ReLU(inplace=True),
    lambda: torch.nn.MaxPool2d(kernel_size=3, stride=2),
    lambda: torch.nn.Conv2d(64, 192, kernel_size=5, padding=2), lambda: torch.nn.ReLU(inplace=True),
    lambda: torch.nn.MaxPool2d(kernel_size=3, stride=2),
    lambda: torch.nn.Conv2d(192, 384, kernel_size=3, padding=1), lambda: torch.nn.ReLU(inplace=True),
    lambda: torch.nn.Conv2d(384, 256, kernel_size=3, padding=1), lambda: torch.nn.ReLU(inplace=True),
    lambda: torch.nn.Conv2d(256, 256, kernel_size=3, padding=1), lambda: torch.nn.ReLU(inplace=True),
    lambda: torch.nn.MaxPool2d(kernel_size=3, stride=2),
]


@pytest.fixture(scope="module")
def lpips_pair(tmp_path_factory):
    """The `lpips` package's LPIPS (AlexNet, v0.1) and ours, converted from the same random files."""
    alex, lin = random_alexnet_state(1), random_linear_state(2)

    def alexnet(pretrained=False, **kwargs):
        net = types.SimpleNamespace(features=torch.nn.Sequential(*[make() for make in ALEXNET_LAYERS]))
        net.features.load_state_dict({k[len("features."):]: torch.from_numpy(v)
                                      for k, v in alex.items() if k.startswith("features.")})
        return net

    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(alexnet=alexnet)
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.models")}
    sys.modules["torchvision"], sys.modules["torchvision.models"] = fake, fake.models
    try:
        import lpips

        ref = lpips.LPIPS(net="alex", version="0.1", pretrained=False, verbose=False)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in lin.items()}, strict=False)
    ref.eval()

    d = tmp_path_factory.mktemp("lpips")
    torch.save({k: torch.from_numpy(v) for k, v in alex.items()}, d / "alexnet.pth")
    torch.save({k: torch.from_numpy(v) for k, v in lin.items()}, d / "alex_linear.pth")
    out = conversions.convert_lpips(d / "alexnet.pth", d / "ckpt", linear_path=d / "alex_linear.pth")
    ours = load_lpips(out)
    return ref, ours


def _lpips_check(lpips_pair, x, y):
    ref, ours = lpips_pair
    with torch.no_grad():
        want = ref(nchw(x * 2 - 1), nchw(y * 2 - 1)).numpy().reshape(-1)
    got = np.asarray(jax.jit(lambda a, b: ours(a, b))(x * 2 - 1, y * 2 - 1))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    return got


@pytest.mark.parametrize("name", ["vimeo", "kitti", "bedroom"])
def test_lpips_matches_the_lpips_package_on_real_frames(lpips_pair, real_pairs, name):
    x, y = real_pairs[name]
    got = _lpips_check(lpips_pair, x, y)
    assert got[0] > 0


@pytest.mark.parametrize("h,w", [(64, 64), (67, 93), (101, 77), (256, 448)])
def test_lpips_matches_the_lpips_package_on_random_images(lpips_pair, h, w):
    x, y = noisy_pair(h + w, 2, h, w, noise=0.2)
    _lpips_check(lpips_pair, x, y)
    _, ours = lpips_pair
    np.testing.assert_allclose(np.asarray(ours(x * 2 - 1, x * 2 - 1)), 0.0, atol=1e-7)


def test_lpips_converter_errors(tmp_path):
    alex, lin = random_alexnet_state(0), random_linear_state(0)
    bad = dict(alex)
    bad["features.3.weight"] = bad["features.3.weight"][:, :10]
    torch.save({k: torch.from_numpy(v) for k, v in bad.items()}, tmp_path / "bad.pth")
    torch.save({k: torch.from_numpy(v) for k, v in lin.items()}, tmp_path / "lin.pth")
    with pytest.raises(Exception, match=r"(?s)bad\.pth: does not match torchvision AlexNet.*features\.3\.weight"):
        conversions.convert_lpips(tmp_path / "bad.pth", tmp_path / "out", linear_path=tmp_path / "lin.pth")
    with pytest.raises(Exception, match=r"lin\.pth: holds another network, not torchvision AlexNet"):
        conversions.convert_lpips(tmp_path / "lin.pth", tmp_path / "out2", linear_path=tmp_path / "lin.pth")
    torch.save({k: torch.from_numpy(v) for k, v in alex.items()}, tmp_path / "alex.pth")
    with pytest.raises(Exception, match=r"alex\.pth: holds another network, not the LPIPS v0\.1 AlexNet linear"):
        conversions.convert_lpips(tmp_path / "alex.pth", tmp_path / "out2", linear_path=tmp_path / "alex.pth")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_lpips_command_takes_the_linear_layers_from_the_lpips_package(tmp_path, capsys):
    from dmvfn_jax.convert import cli

    alex = random_alexnet_state(3)
    torch.save({k: torch.from_numpy(v) for k, v in alex.items()}, tmp_path / "alexnet-owt.pth")
    assert cli.main(["lpips", "--alexnet", str(tmp_path / "alexnet-owt.pth"), "--output", str(tmp_path / "o")]) == 0
    assert "wrote LPIPS" in capsys.readouterr().out
    shipped = torch.load(conversions.installed_lpips_linear(), map_location="cpu", weights_only=True)
    ours = load_lpips(tmp_path / "o")
    np.testing.assert_array_equal(np.asarray(ours.lin2.kernel[...]).reshape(-1),
                                  shipped["lin2.model.1.weight"].numpy().reshape(-1))
    np.testing.assert_array_equal(np.asarray(ours.conv6.bias[...]), alex["features.6.bias"])
