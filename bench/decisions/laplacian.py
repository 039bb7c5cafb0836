"""The Laplacian-pyramid loss: its blurs as a depthwise 5x5 conv over every pixel (the first
version: the downsampling blur then every second pixel kept, the upsampling blur over the
zero-inserted image) against what the package runs now (separable shifted adds, attempt 3, at
the kept pixels only and without the zeros, attempt 13), forward and gradient, in one run.

    python bench/decisions/laplacian.py [--batch 8] [--size 256]

The loss of a training update: 9 outputs against the ground truth, (B, S, S, 3) each.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: timing.py, workloads.py

import argparse
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


def total_loss(outputs, gt):
    return sum(0.8 ** (8 - i) * losses.laplacian_loss(o, gt) for i, o in enumerate(outputs))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((args.batch, args.size, args.size, 3), dtype=np.float32))
    gt = jnp.asarray(rng.random((args.batch, args.size, args.size, 3), dtype=np.float32))
    rows = {}
    package = (losses._blur_half, losses._upsample)
    for name, (half, up) in (("depthwise conv", (half_depthwise, upsample_depthwise)), ("package", package)):
        losses._blur_half, losses._upsample = half, up
        # a new function per variant: jax.jit caches compilations by function
        f = lambda x: total_loss([x * (1 - 0.01 * i) for i in range(9)], gt)  # noqa: E731
        jf = jax.jit(f)
        rows[name] = (median_ms(jf, x), median_ms(jax.jit(jax.grad(f)), x), float(jf(x)))
    losses._blur_half, losses._upsample = package
    print(f"device {jax.devices()[0].device_kind}; 9 outputs of {args.batch}x{args.size}x{args.size}x3; median ms of 5")
    for name, (fwd, grad, val) in rows.items():
        print(f"{name:15s} forward {fwd:8.1f} ms   gradient {grad:8.1f} ms   loss {val:.6f}")


if __name__ == "__main__":
    main()
