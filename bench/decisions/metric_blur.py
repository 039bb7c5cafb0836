"""The Gaussian blur of SSIM and MS-SSIM: a depthwise convolution against shifted sums, on the local device.

    python bench/decisions/metric_blur.py [--sizes 256x448,512x1024,1024x2048] [--repeats 5]

`dmvfn_jax.evaluation.metrics` blurs each axis as a weighted sum of 11 shifted slices; the other
form is the same separable 11-tap blur as a depthwise `conv_general_dilated`
(`feature_group_count=3`, precision HIGHEST), written here. Per size (one image, NHWC): the
blur's median time in each form and their largest difference, and today's SSIM and MS-SSIM of a
pair (five blurs per scale). Decision 34 in BENCHMARKS.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for timing.py (BENCHMARKS.md, "Running")

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from dmvfn_jax.evaluation import metrics
from timing import median_ms  # bench/timing.py


def conv_blur(x, win):
    """The blur as depthwise convolutions along H, then W (the other form)."""
    k, c = len(win), x.shape[-1]
    for shape in ((k, 1, 1, 1), (1, k, 1, 1)):
        kernel = jnp.tile(jnp.asarray(win, x.dtype).reshape(shape), (1, 1, 1, c))
        x = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=c, precision=jax.lax.Precision.HIGHEST)
    return x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256x448,512x1024,1024x2048", help="HxW,HxW,...")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    win = metrics.gaussian_window()
    blurs = {"conv": jax.jit(lambda x: conv_blur(x, win)), "shifted sums": jax.jit(lambda x: metrics._blur(x, win))}
    ssim, ms_ssim = jax.jit(metrics.ssim), jax.jit(metrics.ms_ssim)
    print(f"device: {jax.devices()[0].device_kind}; medians of {args.repeats} calls, one image")
    print("| size | blur: conv ms | blur: shifted sums ms | ratio | max abs diff | SSIM ms | MS-SSIM ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes.split(","):
        h, w = map(int, size.split("x"))
        x = jnp.asarray(np.random.default_rng(0).random((1, h, w, 3), dtype=np.float32))
        y = jnp.clip(x * 0.9 + 0.05 * jnp.asarray(np.random.default_rng(1).random(x.shape, dtype=np.float32)), 0, 1)
        ms = {name: median_ms(f, x, repeats=args.repeats) for name, f in blurs.items()}
        diff = float(jnp.max(jnp.abs(blurs["conv"](x) - blurs["shifted sums"](x))))
        print(f"| {h}x{w} | {ms['conv']:.1f} | {ms['shifted sums']:.1f} | {ms['conv'] / ms['shifted sums']:.1f}x | "
              f"{diff:.1e} | {median_ms(ssim, x, y, repeats=args.repeats):.1f} | "
              f"{median_ms(ms_ssim, x, y, repeats=args.repeats):.1f} |")


if __name__ == "__main__":
    main()
