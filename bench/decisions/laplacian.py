"""The Laplacian-pyramid loss in its three forms, forward and gradient, over a sweep of frame sizes
in one run: its blurs as a depthwise 5x5 conv over every pixel (the first version: the
downsampling blur then every second pixel kept, the upsampling blur over the zero-inserted
image); as separable shifted adds at the kept pixels only and without the zeros (attempts 3 and
13); and what the package runs now (attempt 17: each axis as one matrix product up to
`losses.MATRIX_MAX`, the shifted adds on longer axes). For each form and size: the seconds XLA
takes to compile the gradient (a fresh function, no compilation cache), and the median forward
and gradient milliseconds.

    python bench/decisions/laplacian.py [--sizes 64x64 256x256 ...] [--forms ...] [--pixels N]

The loss of a training update: 9 outputs against the ground truth, (B, H, W, 3) each, with B
such that B*H*W is `--pixels` (8 clips at 256x256 by default; at least one clip).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: timing.py, workloads.py

import argparse
import time
import jax
import jax.numpy as jnp
import numpy as np

from dmvfn_jax import losses
from timing import median_ms  # bench/timing.py (bench/ is on sys.path when run as a script)

_KERNEL = losses.GAUSS_KERNEL


def blur_depthwise_conv(x, gain=1.0):
    c = x.shape[-1]
    kernel = jnp.asarray(np.tile((gain * _KERNEL)[:, :, None, None], (1, 1, 1, c)), x.dtype)
    padded = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    return jax.lax.conv_general_dilated(padded, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=c, precision=jax.lax.Precision.HIGHEST)


def half_depthwise(x):
    return blur_depthwise_conv(x)[:, ::2, ::2]


def upsample_depthwise(x):
    b, h, w, c = x.shape
    return blur_depthwise_conv(jnp.zeros((b, 2 * h, 2 * w, c), x.dtype).at[:, ::2, ::2, :].set(x), gain=4.0)


# form -> (blur-and-halve, upsample, losses.MATRIX_MAX) while it is traced
FORMS = {
    "depthwise conv": (half_depthwise, upsample_depthwise, losses.MATRIX_MAX),
    "shifted adds": (losses._blur_half, losses._upsample, 0),
    "package": (losses._blur_half, losses._upsample, losses.MATRIX_MAX),
}


def total_loss(outputs, gt):
    """The training loss's Laplacian term (`dmvfn_loss` without VGG: one pyramid over the 9 outputs
    and gt stacked)."""
    return losses.dmvfn_loss(outputs, gt)[0]


def measure(form: str, x, gt) -> tuple[float, float, float, float]:
    """(compile s of the gradient, forward ms, gradient ms, loss) of one form at x's shape."""
    package = (losses._blur_half, losses._upsample, losses.MATRIX_MAX)
    losses._blur_half, losses._upsample, losses.MATRIX_MAX = FORMS[form]
    try:
        # a new function per form and size: jax.jit caches compilations by function
        f = lambda x: total_loss([x * (1 - 0.01 * i) for i in range(9)], gt)  # noqa: E731
        t = time.perf_counter()
        grad = jax.jit(jax.grad(f)).lower(x).compile()
        compile_s = time.perf_counter() - t
        forward = jax.jit(f).lower(x).compile()
    finally:
        losses._blur_half, losses._upsample, losses.MATRIX_MAX = package
    return compile_s, median_ms(forward, x), median_ms(grad, x), float(forward(x))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["64x64", "128x128", "256x256", "512x512", "256x832", "512x1024",
                                                  "1024x1024"], help="HxW")
    p.add_argument("--forms", nargs="+", choices=list(FORMS), default=list(FORMS))
    p.add_argument("--pixels", type=int, default=8 * 256 * 256, help="clips x H x W per size")
    args = p.parse_args()
    print(f"device {jax.devices()[0].device_kind}; 9 outputs of (B, H, W, 3); MATRIX_MAX {losses.MATRIX_MAX}; "
          "median ms of 5")
    print("| H x W | B | form | gradient compile s | forward ms | gradient ms | loss |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        batch = max(1, args.pixels // (h * w))
        x = jnp.asarray(rng.random((batch, h, w, 3), dtype=np.float32))
        gt = jnp.asarray(rng.random((batch, h, w, 3), dtype=np.float32))
        for form in args.forms:
            compile_s, fwd, grad, val = measure(form, x, gt)
            print(f"| {h}x{w} | {batch} | {form} | {compile_s:.2f} | {fwd:.1f} | {grad:.1f} | {val:.6f} |", flush=True)


if __name__ == "__main__":
    main()
