"""Ops that are not layers: backward warp, bilinear resizes, PReLU, transposed conv, the
stride-2 conv with a faster gradient, padding.

Everything here is NHWC and matches the PyTorch op named in each docstring (see
`tests/test_ops_parity.py` for the measured differences). Where XLA's CPU code for an op was
slow, the op is written another way that computes the same values; BENCHMARKS.md (attempts
10-14) measures each.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

# The backward warp's forms, all tested against PyTorch's grid_sample:
#   "map_coordinates": jax.scipy's per channel (the CPU's and GPU's; faster on CPU, BENCHMARKS.md);
#   "gather": four gathers of whole pixels;
#   "pallas": the corners picked by one-hot products in a Pallas TPU kernel (`dmvfn_jax.models.tpu_warp`;
#             TPU only): XLA's TPU gathers fetch a tile per scalar;
#   "pallas_interpret": the same kernel in Pallas's interpret mode, on any backend (the tests), and
#             with it the relayouts' kernels (`pallas_mode`).
# `warp_impl_for` chooses per platform; DMVFN_WARP forces one everywhere.
WARP_IMPLS = ("map_coordinates", "gather", "pallas", "pallas_interpret")
WARP_IMPL = os.environ.get("DMVFN_WARP") or None
if WARP_IMPL is not None and WARP_IMPL not in WARP_IMPLS:
    raise ValueError(f"DMVFN_WARP must be one of {WARP_IMPLS}, got {WARP_IMPL!r}")
_TARGETS: list[tuple[str, Any]] = []  # the (platform, device) of each `compiling_for`, innermost last


@contextlib.contextmanager
def compiling_for(platform: str, device=None):
    """Warps traced inside are chosen for `platform` ("cpu", "gpu", "tpu") instead of JAX's default
    backend: for programs compiled ahead of time for other devices (`dmvfn_jax.planning.plan` traces on a CPU
    host for compile-only TPU devices). `device`: one of those devices, made JAX's default device
    inside, for Pallas kernels whose lowering asks the chip (`tpu_relayout`); lower inside too."""
    _TARGETS.append((platform, device))
    try:
        if device is None:
            yield
        else:
            with jax.default_device(device):
                yield
    finally:
        _TARGETS.pop()


def platform() -> str:
    """The platform being compiled for: the innermost `compiling_for`, else JAX's default backend."""
    return _TARGETS[-1][0] if _TARGETS else jax.default_backend()


def device_kind() -> str:
    """The kind of chip being compiled for (`jax.Device.device_kind`, "TPU v4", ...): the innermost
    `compiling_for`'s device, else JAX's first device."""
    for _, device in reversed(_TARGETS):
        if device is not None:
            return device.device_kind
    return jax.devices()[0].device_kind


def pallas_mode() -> str | None:
    """How the model's Pallas kernels (the warp's, `tpu_warp`; the relayouts' between planes and cells,
    `tpu_relayout`) run in the program being traced: "interpret" where DMVFN_WARP=pallas_interpret
    (Pallas's interpret mode, on any backend: how the tests run every kernel), "compiled" for a TPU,
    else None (XLA's ops)."""
    if WARP_IMPL == "pallas_interpret":
        return "interpret"
    return "compiled" if platform() == "tpu" else None


def warp_impl_for(platform: str, channels: int, height: int, width: int) -> str:
    """The warp's form for an image of this size on `platform`: DMVFN_WARP if set; on a TPU the
    Pallas kernel where the image fits its on-chip memory (`tpu_warp.fits`), else map_coordinates."""
    if WARP_IMPL is not None:
        return WARP_IMPL
    if platform == "tpu":
        from dmvfn_jax.models import tpu_warp  # noqa: PLC0415 (Pallas is imported only where it is used)

        if tpu_warp.fits(channels, -(-height // tpu_warp.TILE_ROWS) * tpu_warp.TILE_ROWS, width):
            return "pallas"
    return "map_coordinates"


def warp(img: jax.Array, flow: jax.Array) -> jax.Array:
    """Backward warp in the form `warp_impl_for` chooses for the platform being compiled for
    (`warp_map_coordinates`, `warp_gather` or `warp_pallas`; the same values).

    Its operations are named `warp` in the compiled program (`dmvfn_jax.planning.hlo.source`)."""
    with jax.named_scope("warp"):
        _check_warp_args(img, flow)
        impl = warp_impl_for(platform(), img.shape[3], img.shape[1], img.shape[2])
        if impl == "gather":
            return warp_gather(img, flow)
        if impl in ("pallas", "pallas_interpret"):
            return warp_pallas(img, flow, interpret=impl == "pallas_interpret")
        return warp_map_coordinates(img, flow)


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
    wx, wy, *corners = corner_indices(img, flow)
    flat = img.reshape(b, h * w, c)

    def take(i):  # whole pixels at flat indices i (B, H, W)
        return jnp.take_along_axis(flat, i.reshape(b, h * w, 1), axis=1).reshape(b, h, w, c)

    return _gathered_bilinear(take, w, *corners, wx[..., None], wy[..., None])


def _gathered_bilinear(take, w: int, x0, x1, y0, y1, wx, wy):
    """`bilinear` of the four corners, each fetched by `take` from flat indices `y * w + x`."""
    return bilinear(take(y0 * w + x0), take(y0 * w + x1), take(y1 * w + x0), take(y1 * w + x1), wx, wy)


def corner_indices(img: jax.Array, flow: jax.Array):
    """The bilinear sample points of a backward warp, clamped to [0, W-1] x [0, H-1]
    (grid_sample's border mode): `(wx, wy, x0, x1, y0, y1)`, the weights (B, H, W) in img's dtype
    and the corners' int32 indices (B, H, W)."""
    _, h, w, _ = img.shape
    wx, wy, *corners = _planes_corner_indices(h, w, flow[..., 0], flow[..., 1])
    return (wx.astype(img.dtype), wy.astype(img.dtype), *corners)


def bilinear(v00, v01, v10, v11, wx, wy):
    """The blend of the four corners (y0, x0), (y0, x1), (y1, x0), (y1, x1): across x, then y."""
    return (v00 * (1 - wx) + v01 * wx) * (1 - wy) + (v10 * (1 - wx) + v11 * wx) * wy


def warp_pallas(img: jax.Array, flow: jax.Array, interpret: bool = False) -> jax.Array:
    """The same backward warp as `warp_gather`, its four corners picked by `tpu_warp`'s kernels (Pallas:
    compiled for a TPU, or in interpret mode anywhere) from the image as planes (B, C, H, W), and
    blended as `warp_gather` blends (`bilinear`)."""
    _check_warp_args(img, flow)
    planes = jnp.transpose(img, (0, 3, 1, 2))
    out = planes_warp_pallas(planes, flow[..., 0], flow[..., 1], interpret)
    return jnp.transpose(out, (0, 2, 3, 1))


def _planes_corner_indices(h: int, w: int, fx: jax.Array, fy: jax.Array):
    """`corner_indices` for flows given as planes fx, fy (B, H, W)."""
    x = jnp.clip(jnp.arange(w, dtype=fx.dtype)[None, None, :] + fx, 0, w - 1)
    y = jnp.clip(jnp.arange(h, dtype=fy.dtype)[None, :, None] + fy, 0, h - 1)
    x0, y0 = jnp.floor(x), jnp.floor(y)
    x0i, y0i = x0.astype(jnp.int32), y0.astype(jnp.int32)
    return x - x0, y - y0, x0i, jnp.minimum(x0i + 1, w - 1), y0i, jnp.minimum(y0i + 1, h - 1)


def planes_warp_pallas(planes: jax.Array, fx: jax.Array, fy: jax.Array, interpret: bool = False) -> jax.Array:
    """`warp_pallas` on planes: the image (B, C, H, W), the flow's components (B, H, W) each; the
    warped planes (`tpu_warp.blended`: blended in the kernel unless differentiated). Rows are padded
    to a multiple of the kernel's tile (never read: the corners' rows are clamped to the image)."""
    from dmvfn_jax.models import tpu_warp  # noqa: PLC0415 (Pallas is imported only where it is used)

    _, _, h, w = planes.shape
    wx, wy, x0, x1, y0, y1 = _planes_corner_indices(h, w, fx, fy)
    wx, wy = wx.astype(planes.dtype), wy.astype(planes.dtype)
    pad = -h % tpu_warp.TILE_ROWS
    if pad:
        planes = jnp.pad(planes, ((0, 0), (0, 0), (0, pad), (0, 0)))
        x0, x1, y0, y1, wx, wy = (jnp.pad(a, ((0, 0), (0, pad), (0, 0)), mode="edge") for a in (x0, x1, y0, y1, wx, wy))
    return tpu_warp.blended(planes, y0, y1, x0, x1, wx, wy, bilinear, interpret)[:, :, :h]


def planes_warp_gather(planes: jax.Array, fx: jax.Array, fy: jax.Array) -> jax.Array:
    """The same warp on planes from four gathers (any backend; `warp_gather`'s values)."""
    b, c, h, w = planes.shape
    wx, wy, *corners = _planes_corner_indices(h, w, fx, fy)
    flat = planes.reshape(b, c, h * w)

    def take(i):  # every plane at flat indices i (B, H, W)
        return jnp.take_along_axis(flat, i.reshape(b, 1, h * w), axis=2).reshape(b, c, h, w)

    return _gathered_bilinear(take, w, *corners, wx.astype(planes.dtype)[:, None], wy.astype(planes.dtype)[:, None])


def warp_planes(planes: jax.Array, fx: jax.Array, fy: jax.Array) -> jax.Array:
    """Backward warp of planes (B, C, H, W) by the flow's components fx, fy (B, H, W): the Pallas
    kernel where `warp_impl_for` chooses it, else four gathers. Named `warp` like `warp`."""
    with jax.named_scope("warp"):
        _, c, h, w = planes.shape
        if fx.shape != (planes.shape[0], h, w) or fy.shape != fx.shape:
            raise ValueError(f"warp_planes: planes {planes.shape} and flow {fx.shape}, {fy.shape} do not match")
        impl = warp_impl_for(platform(), c, h, w)
        if impl in ("pallas", "pallas_interpret"):
            return planes_warp_pallas(planes, fx, fy, interpret=impl == "pallas_interpret")
        return planes_warp_gather(planes, fx, fy)


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
    """Resizes an NHWC array by `factor` (e.g. 0.25 or 8); the result must be whole pixels.

    Powers of two and their inverses, the only factors DMVFN uses, run as slices and weighted
    adds along each axis (`_downsample_axis`, `_upsample_axis`): the same bilinear values as
    `resize_bilinear`, without its dense interpolation matrices (BENCHMARKS.md, attempt 14).
    """
    _, h, w, _ = x.shape
    nh, nw = h * factor, w * factor
    if nh != int(nh) or nw != int(nw):
        raise ValueError(f"resize_by: {h}x{w} times {factor} is not a whole number of pixels")
    f = float(factor) if factor >= 1 else 1.0 / factor
    if f == 1:
        return x
    if f.is_integer() and (int(f) & (int(f) - 1)) == 0:  # a power of two: exact weights, as PyTorch's
        f = int(f)
        if factor > 1:
            return _upsample_axis(_upsample_axis(x, 1, f), 2, f)
        return _downsample_axis(_downsample_axis(x, 1, f), 2, f)
    return resize_bilinear(x, int(nh), int(nw))


def _downsample_axis(x: jax.Array, axis: int, f: int) -> jax.Array:
    """Bilinear (align_corners=False, no antialiasing) downsampling by an integer `f` on `axis`.

    Output i samples the input at f*i + (f-1)/2: one pixel for odd f, the mean of two for even f.
    (`resize_by` calls it for powers of two only.)
    """
    n = x.shape[axis]
    groups = x.reshape(x.shape[:axis] + (n // f, f) + x.shape[axis + 1 :])
    pick = lambda j: jax.lax.index_in_dim(groups, j, axis=axis + 1, keepdims=False)  # noqa: E731
    if f % 2:
        return pick((f - 1) // 2)
    return (pick(f // 2 - 1) + pick(f // 2)) * 0.5


def _upsample_axis(x: jax.Array, axis: int, f: int) -> jax.Array:
    """Bilinear (align_corners=False) upsampling by an integer `f` on `axis`.

    Output f*m + p samples the input at m + d with d = (2p + 1 - f) / (2f): between x[m-1] and
    x[m] when d < 0, between x[m] and x[m+1] when d > 0; beyond the ends the edge pixel repeats
    (PyTorch clamps the source coordinate). For powers of two, d is exact in binary and the
    weights equal PyTorch's; for other factors PyTorch's float32 source coordinates drift
    with the position, so `resize_by` leaves those to `resize_bilinear`.
    """
    n = x.shape[axis]
    take = lambda start, stop: jax.lax.slice_in_dim(x, start, stop, axis=axis)  # noqa: E731
    prev = jnp.concatenate([take(0, 1), take(0, n - 1)], axis=axis) if n > 1 else x
    nxt = jnp.concatenate([take(1, n), take(n - 1, n)], axis=axis) if n > 1 else x
    phases = []
    for p in range(f):
        d = (2 * p + 1 - f) / (2 * f)
        if d < 0:
            phases.append(x * (1.0 + d) + prev * (-d))
        elif d > 0:
            phases.append(x * (1.0 - d) + nxt * d)
        else:
            phases.append(x)
    both = jnp.stack(phases, axis=axis + 1)
    return both.reshape(x.shape[:axis] + (f * n,) + x.shape[axis + 1 :])


def prelu(x: jax.Array, slope: jax.Array) -> jax.Array:
    """PyTorch's PReLU with one slope per channel (last axis)."""
    return jnp.where(x >= 0, x, slope * x)


def conv_transpose(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, stride: int, padding: int):
    """PyTorch's `ConvTranspose2d(stride, padding)` in NHWC.

    `kernel` is (kh, kw, in, out) with `kernel[i, j, a, b] == torch_weight[a, b, i, j]` (no
    spatial flip stored). DMVFN's only transposed conv (4x4, stride 2, padding 1) runs as a
    sub-pixel conv (`conv_transpose_subpixel`); any other shape runs as the textbook dilated conv
    (`conv_transpose_dilated`). Both are tested against PyTorch.
    """
    kh, kw = kernel.shape[:2]
    if (kh, kw, stride, padding) == (4, 4, 2, 1):
        y = conv_transpose_subpixel(x, kernel)
    else:
        y = conv_transpose_dilated(x, kernel, stride, padding)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y


def conv_transpose_dilated(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Transposed conv without bias as a stride-1 conv over the input dilated by `stride`,
    padded by `k - 1 - padding`, with the spatially flipped kernel.

    Simple and general, but slow on XLA CPU: its kernel gradient is a conv with a dilated
    window, which took about 40% of a training step there (BENCHMARKS.md, attempt 10).
    """
    kh, kw = kernel.shape[:2]
    pad = ((kh - 1 - padding, kh - 1 - padding), (kw - 1 - padding, kw - 1 - padding))
    return jax.lax.conv_general_dilated(
        x,
        kernel[::-1, ::-1].astype(x.dtype),
        window_strides=(1, 1),
        padding=pad,
        lhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


# For ConvTranspose2d(k=4, s=2, p=1), output row 2m + r takes input rows m - 1, m, m + 1 through
# kernel rows _SUBPIXEL_TAPS[r] (None: unused): y[2m] = x[m-1] w[3] + x[m] w[1] and
# y[2m+1] = x[m] w[2] + x[m+1] w[0].
_SUBPIXEL_TAPS = ((3, 1, None), (None, 2, 0))


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`ConvTranspose2d(k=4, stride=2, padding=1)` without bias, as one 3x3 stride-1 conv to
    4x the output channels (one group per output phase (r, s)) and a depth-to-space.

    Every op here is a plain conv, so the forward and both gradients avoid dilated windows.
    """
    b, h, w, _ = x.shape
    cin, cout = kernel.shape[2:]
    zero = jnp.zeros((cin, cout), kernel.dtype)
    tap = lambda ky, kx: zero if ky is None or kx is None else kernel[ky, kx]  # noqa: E731
    # k3[t, u, :, (r, s, :)] = kernel[_SUBPIXEL_TAPS[r][t], _SUBPIXEL_TAPS[s][u]]
    k3 = jnp.stack(
        [
            jnp.stack(
                [
                    jnp.stack([tap(_SUBPIXEL_TAPS[r][t], _SUBPIXEL_TAPS[s][u]) for r in range(2) for s in range(2)], 1)
                    for u in range(3)
                ]
            )
            for t in range(3)
        ]
    ).reshape(3, 3, cin, 4 * cout)
    y = jax.lax.conv_general_dilated(
        x, k3.astype(x.dtype), (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = y.reshape(b, h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * w, cout)


_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`jax.lax.conv_general_dilated` that routes 3x3 stride-2 NHWC convs to `conv3x3_stride2`.

    A drop-in for `nnx.Conv(conv_general_dilated=...)`: the result is the same conv, only its
    gradient is computed differently. Every other conv goes to `jax.lax` unchanged.
    """
    args = (lhs, rhs, window_strides, padding)
    opts = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                feature_group_count=feature_group_count, precision=precision, **kwargs)
    if _is_nhwc_3x3_stride2(*args, **opts):
        return conv3x3_stride2(lhs, rhs, precision)
    return jax.lax.conv_general_dilated(*args, **opts)


def _is_nhwc_3x3_stride2(lhs, rhs, window_strides, padding, *, dimension_numbers, lhs_dilation, rhs_dilation,
                         feature_group_count, precision, **kwargs) -> bool:
    del precision
    if kwargs.get("out_sharding") is not None or kwargs.get("preferred_element_type") is not None:
        return False
    if lhs.ndim != 4 or rhs.ndim != 4 or tuple(rhs.shape[:2]) != (3, 3) or tuple(window_strides) != (2, 2):
        return False
    if isinstance(padding, str) or [tuple(p) for p in padding] != [(1, 1), (1, 1)]:
        return False
    if tuple(lhs_dilation or (1, 1)) != (1, 1) or tuple(rhs_dilation or (1, 1)) != (1, 1) or feature_group_count != 1:
        return False
    nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    if jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc:
        return False
    return lhs.shape[1] % 2 == 0 and lhs.shape[2] % 2 == 0


def _conv_s2(x, kernel, precision):
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_NHWC,
                                        precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3_stride2(x: jax.Array, kernel: jax.Array, precision=None) -> jax.Array:
    """`Conv2d(k=3, stride=2, padding=1)` without bias, NHWC, for even H and W.

    The forward pass is XLA's conv. The input gradient, a transposed conv, is computed as a
    sub-pixel conv (a 2x2 stride-1 conv to 4x the channels and a depth-to-space) instead of
    XLA's conv over a dilated input, which is slow on CPU (BENCHMARKS.md, attempt 12).
    """
    return _conv_s2(x, kernel, precision)


def _conv_s2_fwd(x, kernel, precision):
    return _conv_s2(x, kernel, precision), (x, kernel)


# Per axis, input row 2m takes g[m] through kernel row 1, and row 2m + 1 takes g[m] through
# kernel row 2 and g[m + 1] through kernel row 0: _S2_TAPS[phase][window offset].
_S2_TAPS = ((1, None), (2, 0))


def _conv_s2_bwd(precision, res, g):
    x, kernel = res
    b, h, w, cin = x.shape
    cout = kernel.shape[-1]
    kt = jnp.swapaxes(kernel, 2, 3).astype(g.dtype)  # (3, 3, out, in)
    zero = jnp.zeros((cout, cin), g.dtype)
    tap = lambda ky, kx: zero if ky is None or kx is None else kt[ky, kx]  # noqa: E731
    k2 = jnp.stack(
        [
            jnp.stack([jnp.stack([tap(_S2_TAPS[r][t], _S2_TAPS[s][u]) for r in range(2) for s in range(2)], 1)
                       for u in range(2)])
            for t in range(2)
        ]
    ).reshape(2, 2, cout, 4 * cin)
    gx = jax.lax.conv_general_dilated(g, k2, (1, 1), ((0, 1), (0, 1)), dimension_numbers=_NHWC, precision=precision)
    gx = gx.reshape(b, h // 2, w // 2, 2, 2, cin).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, cin)
    _, kernel_vjp = jax.vjp(lambda k: _conv_s2(x, k, precision), kernel)
    (gk,) = kernel_vjp(g)
    return gx.astype(x.dtype), gk


conv3x3_stride2.defvjp(_conv_s2_fwd, _conv_s2_bwd)


def pad_to_multiple(x: jax.Array, multiple: int) -> jax.Array:
    """Pads H and W of an NHWC array at the bottom/right by edge replication to `multiple`."""
    ph, pw = (-x.shape[1]) % multiple, (-x.shape[2]) % multiple
    if not (ph or pw):
        return x
    return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
