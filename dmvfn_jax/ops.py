"""Ops that are not layers: backward warp, bilinear resizes, PReLU, transposed conv, padding.

Everything here is NHWC and matches the PyTorch op named in each docstring (see
`tests/test_ops_parity.py` for the measured differences).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

# Which backward warp the model uses: "map_coordinates" (default; faster on CPU, see
# BENCHMARKS.md) or "gather". Both are tested for parity against PyTorch's grid_sample.
WARP_IMPLS = ("map_coordinates", "gather")
WARP_IMPL = os.environ.get("DMVFN_WARP", "map_coordinates")
if WARP_IMPL not in WARP_IMPLS:
    raise ValueError(f"DMVFN_WARP must be one of {WARP_IMPLS}, got {WARP_IMPL!r}")


def warp(img: jax.Array, flow: jax.Array) -> jax.Array:
    """Backward warp with the implementation `WARP_IMPL` names (`warp_map_coordinates` or `warp_gather`)."""
    return warp_gather(img, flow) if WARP_IMPL == "gather" else warp_map_coordinates(img, flow)


def _check_warp_args(img, flow) -> None:
    if img.shape[:3] != flow.shape[:3] or flow.shape[-1] != 2:
        raise ValueError(f"warp: img {img.shape} and flow {flow.shape} do not match (flow needs 2 channels)")


def warp_gather(img: jax.Array, flow: jax.Array) -> jax.Array:
    """The same backward warp as `warp_map_coordinates`, from four gathers of whole pixels.

    Coordinates are clamped to [0, W-1] x [0, H-1] first (grid_sample's border mode), then the
    four neighbours' C-vectors are gathered at once and blended bilinearly.
    """
    _check_warp_args(img, flow)
    b, h, w, c = img.shape
    ys = jnp.arange(h, dtype=flow.dtype)[:, None]
    xs = jnp.arange(w, dtype=flow.dtype)[None, :]
    x = jnp.clip(xs + flow[..., 0], 0, w - 1)
    y = jnp.clip(ys + flow[..., 1], 0, h - 1)
    x0, y0 = jnp.floor(x), jnp.floor(y)
    wx, wy = (x - x0)[..., None].astype(img.dtype), (y - y0)[..., None].astype(img.dtype)
    x0i, y0i = x0.astype(jnp.int32), y0.astype(jnp.int32)
    x1i, y1i = jnp.minimum(x0i + 1, w - 1), jnp.minimum(y0i + 1, h - 1)
    flat = img.reshape(b, h * w, c)

    def at(yi, xi):
        return jnp.take_along_axis(flat, (yi * w + xi).reshape(b, h * w, 1), axis=1).reshape(b, h, w, c)

    top = at(y0i, x0i) * (1 - wx) + at(y0i, x1i) * wx
    bottom = at(y1i, x0i) * (1 - wx) + at(y1i, x1i) * wx
    return top * (1 - wy) + bottom * wy


def warp_map_coordinates(img: jax.Array, flow: jax.Array) -> jax.Array:
    """Backward warp: samples `img` bilinearly at `(x + flow[..., 0], y + flow[..., 1])`.

    Coordinates are in pixels and clamped to the image, which is PyTorch's
    `grid_sample(mode='bilinear', padding_mode='border', align_corners=True)` on a grid
    normalised by `(W - 1) / 2`, `(H - 1) / 2`.

    Args:
      img: (B, H, W, C) image.
      flow: (B, H, W, 2) displacement, channel 0 horizontal, channel 1 vertical.
    Returns:
      (B, H, W, C) warped image.
    """
    _check_warp_args(img, flow)
    _, h, w, _ = img.shape
    ys = jnp.arange(h, dtype=flow.dtype)[:, None]
    xs = jnp.arange(w, dtype=flow.dtype)[None, :]

    def one_image(im, fl):  # im (H, W, C), fl (H, W, 2)
        coords = [ys + fl[..., 1], xs + fl[..., 0]]
        # order=1 with mode='nearest' is bilinear with border clamping.
        per_channel = lambda ch: map_coordinates(ch, coords, order=1, mode="nearest")
        return jax.vmap(per_channel, in_axes=-1, out_axes=-1)(im)

    return jax.vmap(one_image)(img, flow)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear resize of an NHWC array without antialiasing.

    Equals `F.interpolate(mode='bilinear', align_corners=False)` for integer scale factors,
    in both directions (PyTorch never antialiases there; `jax.image.resize` does by default
    when downsampling, so it is switched off).
    """
    b, _, _, c = x.shape
    return jax.image.resize(x, (b, height, width, c), method="bilinear", antialias=False)


def resize_by(x: jax.Array, factor: float) -> jax.Array:
    """Resizes an NHWC array by `factor` (e.g. 0.25 or 8); the result must be whole pixels."""
    _, h, w, _ = x.shape
    nh, nw = h * factor, w * factor
    if nh != int(nh) or nw != int(nw):
        raise ValueError(f"resize_by: {h}x{w} times {factor} is not a whole number of pixels")
    return resize_bilinear(x, int(nh), int(nw))


def prelu(x: jax.Array, slope: jax.Array) -> jax.Array:
    """PyTorch's PReLU with one slope per channel (last axis)."""
    return jnp.where(x >= 0, x, slope * x)


def conv_transpose(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, stride: int, padding: int):
    """PyTorch's `ConvTranspose2d(stride, padding)` in NHWC.

    `kernel` is (kh, kw, in, out) with `kernel[i, j, a, b] == torch_weight[a, b, i, j]` (no
    spatial flip stored; the flip happens here). The transposed conv is a stride-1 conv over
    the input dilated by `stride`, padded by `k - 1 - padding`, with the flipped kernel.
    """
    kh, kw = kernel.shape[:2]
    pad = ((kh - 1 - padding, kh - 1 - padding), (kw - 1 - padding, kw - 1 - padding))
    y = jax.lax.conv_general_dilated(
        x,
        kernel[::-1, ::-1].astype(x.dtype),
        window_strides=(1, 1),
        padding=pad,
        lhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y


def pad_to_multiple(x: jax.Array, multiple: int) -> jax.Array:
    """Pads H and W of an NHWC array at the bottom/right by edge replication to `multiple`."""
    _, h, w, _ = x.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
