"""MVFB: the multi-scale voxel flow block of DMVFN (NHWC)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dmvfn_jax import ops
from dmvfn_jax.models.layers import ConvTranspose, ConvUnit

IN_PLANES = 17  # img0, img1, warped img0, warped img1 (3 each), mask (1), flow (4)


class MVFB(nnx.Module):
    """One voxel-flow block with `nf` features, run at a given `scale` (4, 2 or 1).

    Attribute names follow the official state-dict keys (`conv0`, `convblock`, `conv_sq`,
    `conv1`, `convblock1`, `lastconv`).
    """

    def __init__(self, nf: int, *, in_planes: int = IN_PLANES, dtype=None, rngs: nnx.Rngs):
        if nf % 4:
            raise ValueError(f"MVFB width must be a multiple of 4, got {nf}")
        d = dict(dtype=dtype, rngs=rngs)
        self.conv0 = nnx.List([ConvUnit(in_planes, nf // 2, 2, **d), ConvUnit(nf // 2, nf, 2, **d)])
        self.convblock = nnx.List([ConvUnit(nf, nf, **d) for _ in range(3)])
        self.conv_sq = ConvUnit(nf, nf // 4, **d)
        self.conv1 = ConvUnit(in_planes, 8, 2, **d)
        self.convblock1 = ConvUnit(8, 8, **d)
        self.lastconv = ConvTranspose(nf // 4 + 8, 5, 4, 2, 1, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x13: jax.Array, flow4: jax.Array, scale: int) -> tuple[jax.Array, jax.Array]:
        """Returns `(flow_d, mask_d)`, (B, H, W, 4) and (B, H, W, 1), for inputs at H x W.

        `x13` is `cat(img0, img1, warped0, warped1, mask)`, `flow4` the flow so far.
        H and W must be multiples of 16. With a computation `dtype` (bfloat16), the convs run in
        it and the outputs come back as float32.
        """
        if self.dtype is not None:
            x13, flow4 = x13.astype(self.dtype), flow4.astype(self.dtype)
        if scale == 1:
            xs, fs = x13, flow4
        else:
            xs = ops.resize_by(x13, 1.0 / scale)
            fs = ops.resize_by(flow4, 1.0 / scale) * (1.0 / scale)
        a = jnp.concatenate([xs, fs], axis=-1)
        for unit in self.conv0:
            a = unit(a)
        b = a
        for unit in self.convblock:
            b = unit(b)
        a = self.conv_sq(b + a)
        a = ops.resize_by(a, scale * 2)  # back to H/2
        c = self.convblock1(self.conv1(jnp.concatenate([x13, flow4], axis=-1)))
        out = self.lastconv(jnp.concatenate([a, c], axis=-1)).astype(jnp.float32)
        return out[..., 0:4], out[..., 4:5]
