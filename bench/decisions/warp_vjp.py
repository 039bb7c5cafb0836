"""A hand-written warp gradient against autodiff of `map_coordinates`, alone and inside the
training gradient, in one run.

    python bench/decisions/warp_vjp.py [--batch 8]

The hand-written VJP needs four gathers for the flow's cotangent, where autodiff goes through
scatters. This script measures whether that pays: the flow gradient of one warp at
Bx256x256, then the gradient of the Laplacian training loss through `train_outputs` (all 9
blocks) with either warp, twice each, alternating.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: timing.py, workloads.py

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dmvfn_jax import losses, ops
from dmvfn_jax.models import DMVFN
from timing import median_ms  # bench/timing.py


@jax.custom_vjp
def warp_custom(img, flow):
    return ops.warp_map_coordinates(img, flow)


def _fwd(img, flow):
    return ops.warp_map_coordinates(img, flow), (img, flow)


def _bwd(res, g):
    img, flow = res
    b, h, w, c = img.shape
    ys = jnp.arange(h, dtype=flow.dtype)[:, None]
    xs = jnp.arange(w, dtype=flow.dtype)[None, :]
    x_raw, y_raw = xs + flow[..., 0], ys + flow[..., 1]
    x, y = jnp.clip(x_raw, 0, w - 1), jnp.clip(y_raw, 0, h - 1)
    x0, y0 = jnp.floor(x), jnp.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    x0i, y0i = x0.astype(jnp.int32), y0.astype(jnp.int32)
    x1i, y1i = jnp.minimum(x0i + 1, w - 1), jnp.minimum(y0i + 1, h - 1)
    flat = img.reshape(b, h * w, c)
    corners = ((y0i, x0i, (1 - wy) * (1 - wx)), (y0i, x1i, (1 - wy) * wx), (y1i, x0i, wy * (1 - wx)), (y1i, x1i, wy * wx))
    idx = [(yi * w + xi).reshape(b, h * w) for yi, xi, _ in corners]
    i00, i01, i10, i11 = (jnp.take_along_axis(flat, i[..., None], axis=1).reshape(b, h, w, c) for i in idx)
    in_x = ((x_raw > 0) & (x_raw < w - 1))[..., None]
    in_y = ((y_raw > 0) & (y_raw < h - 1))[..., None]
    d_x = ((1 - wy) * (i01 - i00) + wy * (i11 - i10)) * in_x
    d_y = ((1 - wx) * (i10 - i00) + wx * (i11 - i01)) * in_y
    g_flow = jnp.stack([jnp.sum(g * d_x, -1), jnp.sum(g * d_y, -1)], -1)
    g_img = jnp.zeros((b, h * w, c), g.dtype)
    for i, (_, _, weight) in zip(idx, corners):
        g_img = g_img.at[jnp.arange(b)[:, None], i].add((g * weight).reshape(b, h * w, c))
    return g_img.reshape(b, h, w, c), g_flow


warp_custom.defvjp(_fwd, _bwd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    b = ap.parse_args().batch
    rng = np.random.default_rng(0)
    img, a, c, gt = (jnp.asarray(rng.random((b, 256, 256, 3), dtype=np.float32)) for _ in range(4))
    flow = jnp.asarray(rng.normal(0, 4, (b, 256, 256, 2)).astype(np.float32))
    weights = jnp.asarray(rng.standard_normal((b, 256, 256, 3)).astype(np.float32))
    print(f"device {jax.devices()[0].device_kind}; batch {b} at 256x256; median ms")
    autodiff = ops.warp_map_coordinates
    for name, warp in (("autodiff", autodiff), ("hand-written", warp_custom)):
        g = jax.jit(jax.grad(lambda f, warp=warp: (warp(img, f) * weights).sum()))
        print(f"one warp, flow gradient, {name:12s}: {median_ms(g, flow):8.1f} ms", flush=True)
    graphdef, params = nnx.split(DMVFN(rngs=nnx.Rngs(0)), nnx.Param)
    gates = jnp.ones((b, 9))
    saved = ops.warp
    try:
        for name, warp in (("autodiff", autodiff), ("hand-written", warp_custom)) * 2:
            ops.warp = warp
            loss = lambda p: losses.dmvfn_loss(nnx.merge(graphdef, p).train_outputs(a, c, gates), gt, None)[0]  # noqa: E731
            print(f"training gradient, {name:12s}: {median_ms(jax.jit(jax.grad(loss)), params, repeats=3):8.0f} ms",
                  flush=True)
    finally:
        ops.warp = saved


if __name__ == "__main__":
    main()
