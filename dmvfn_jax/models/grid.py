"""DMVFN's blocks over cells, the TPU's layout: every full- and half-resolution tensor held as
cells of `CELL` x `CELL` full-resolution pixels, `(B, H / CELL, W / CELL, C * f * f)` for a tensor
with `f` x `f` pixels per cell, so that its minor (lane) dimension is wide.

Why: the TPU tiles the two minor dimensions of an array by (8, 128). With channels minor, a
DMVFN tensor of 1 to 17 channels fills 1 to 17 of the 128 lanes, and the TPU compiler counts and
moves the padding (BENCHMARKS.md, "Where the TPU's bytes go"). In cells of 8 x 8 pixels a frame
has 192 channels, the blocks' input 1,088, a half-resolution 8-channel map 128.

Channels are ordered by channel, then pixel: channel `c * f * f + y * f + x` of a cell holds
channel c of its pixel (y, x), so concatenating two tensors of cells along the last axis gives the
cells of their concatenation, and a slice of channels the cells of a slice of channels.

Each conv of a block becomes one stride-1 conv over cells (`lift`): its kernel spans the cells its
taps reach (2 x 2 for the stride-2 convs, 3 x 3 for the others) and holds the block's own kernel's
entries, placed exactly, with the bilinear downsampling before `conv0[0]` folded in (weights 0.5
per axis, exact in binary) and the transposed conv `lastconv` written as one. The convs add the
same products as the pixel layout's, with many more zero terms (every output pixel of a cell reads
all the cell's input pixels): up to 28x the multiply-adds, on the MXU that a DMVFN leaves idle on a
TPU. Upsampling is a conv over cells at `Precision.HIGHEST` (its weights exact in float32 and
bfloat16). Results equal the pixel layout's up to float reassociation (`tests/test_grid.py`).

The warp reads planes (`ops.warp_planes`); planes and cells are converted by `cells_from_planes` and
`planes_from_cells` (on a TPU, `tpu_relayout`'s kernels). Sizes: H and W multiples of 16 (`DMVFN`
pads to them); a block at scale 4 runs its convs after `conv0[0]` on pixels of H / 16.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from dmvfn_jax.models import ops

CELL = 8  # full-resolution pixels per cell along each axis
HALF = CELL // 2  # half-resolution pixels per cell
FLOW = 4  # the flow's channels, the last of a block's input
_HIGHEST = jax.lax.Precision.HIGHEST
_CELLS = ("NHWC", "HWIO", "NHWC")


# -- moving between layouts ---------------------------------------------------------------

def to_grid(x: jax.Array, f: int = CELL) -> jax.Array:
    """(B, H, W, C) pixels -> (B, H / f, W / f, C * f * f) cells of f x f pixels."""
    b, h, w, c = x.shape
    if h % f or w % f:
        raise ValueError(f"to_grid: {h}x{w} is not a whole number of {f}x{f} cells")
    return x.reshape(b, h // f, f, w // f, f, c).transpose(0, 1, 3, 5, 2, 4).reshape(b, h // f, w // f, c * f * f)


def from_grid(x: jax.Array, f: int = CELL) -> jax.Array:
    """The inverse of `to_grid`: (B, G, Gw, C * f * f) -> (B, G * f, Gw * f, C)."""
    b, g, gw, k = x.shape
    c = k // (f * f)
    return x.reshape(b, g, gw, c, f, f).transpose(0, 1, 4, 2, 5, 3).reshape(b, g * f, gw * f, c)


def to_planes(x: jax.Array, f: int = CELL) -> jax.Array:
    """(B, G, Gw, C * f * f) cells -> (B, C, G * f, Gw * f) planes (width minor)."""
    b, g, gw, k = x.shape
    c = k // (f * f)
    return x.reshape(b, g, gw, c, f, f).transpose(0, 3, 1, 4, 2, 5).reshape(b, c, g * f, gw * f)


def from_planes(p: jax.Array, f: int = CELL) -> jax.Array:
    """(B, C, H, W) planes -> (B, H / f, W / f, C * f * f) cells."""
    b, c, h, w = p.shape
    return p.reshape(b, c, h // f, f, w // f, f).transpose(0, 2, 4, 1, 3, 5).reshape(b, h // f, w // f, c * f * f)


def _kernels() -> tuple[bool, str] | None:
    """How planes and cells are converted: None for XLA's transposes, else `(interpret, form)` for
    `tpu_relayout`'s Pallas kernels (`ops.pallas_mode`), in the form for the chip being compiled for."""
    mode = ops.pallas_mode()
    if mode is None:
        return None
    from dmvfn_jax.models import tpu_relayout  # noqa: PLC0415 (Pallas is imported only where it is used)

    return mode == "interpret", tpu_relayout.form_for(ops.device_kind())


def cells_from_planes(p: jax.Array) -> jax.Array:
    """`from_planes` with CELL, as `tpu_relayout.to_cells` on a TPU."""
    kernels = _kernels()
    if kernels is None:
        return from_planes(p)
    from dmvfn_jax.models import tpu_relayout  # noqa: PLC0415

    return tpu_relayout.to_cells(p, *kernels)


def planes_from_cells(x: jax.Array) -> jax.Array:
    """`to_planes` with CELL, as `tpu_relayout.to_planes` on a TPU."""
    kernels = _kernels()
    if kernels is None:
        return to_planes(x)
    from dmvfn_jax.models import tpu_relayout  # noqa: PLC0415

    return tpu_relayout.to_planes(x, *kernels)


def repeat_channels(v: jax.Array, f: int) -> jax.Array:
    """A per-channel vector (a bias, a PReLU slope) for cells of f x f pixels."""
    return jnp.repeat(v, f * f)


# -- convs over cells ---------------------------------------------------------------------
# A conv along one axis, as a table of taps: (a, rel, k, weight) says that output pixel a of a
# cell reads input pixel `rel` (counted from the first input pixel of the same cell; negative
# or beyond the cell: a neighbouring cell) through kernel tap k (None: no kernel) with `weight`.

def conv_taps(fi: int, fo: int, stride: int, pad: int = 1, size: int = 3, down: int = 1) -> list[tuple]:
    """A conv (`size` taps, `stride`, `pad`) over the input downsampled bilinearly by `down`
    (1 or even: the mean of pixels down*m + down/2 - 1 and down*m + down/2), from cells of `fi` to
    cells of `fo` pixels (fi = down * stride * fo)."""
    if fi != down * stride * fo:
        raise ValueError(f"conv_taps: {fi} input pixels per cell is not {down} x {stride} x {fo}")
    picks = [(down // 2 - 1, 0.5), (down // 2, 0.5)] if down > 1 else [(0, 1.0)]
    return [(a, down * (stride * a - pad + k) + off, k, w) for a in range(fo) for k in range(size) for off, w in picks]


def conv_transpose_taps(fi: int, fo: int, stride: int, pad: int, size: int) -> list[tuple]:
    """PyTorch's ConvTranspose2d along one axis (output o = stride * i - pad + k), from cells of
    `fi` to cells of `fo = stride * fi` pixels."""
    if fo != stride * fi:
        raise ValueError(f"conv_transpose_taps: {fo} output pixels per cell is not {stride} x {fi}")
    return [(a, (a + pad - k) // stride, k, 1.0) for a in range(fo) for k in range(size) if (a + pad - k) % stride == 0]


def upsample_taps(fi: int, f: int) -> list[tuple]:
    """Bilinear upsampling by f (align_corners=False, `ops._upsample_axis`'s weights) from cells of
    `fi` to cells of `fi * f` pixels; reads beyond the image are the caller's (`pad_edge`)."""
    out = []
    for a in range(fi * f):
        m, p = divmod(a, f)
        d = (2 * p + 1 - f) / (2 * f)
        if d < 0:
            out += [(a, m, None, 1.0 + d), (a, m - 1, None, -d)]
        elif d > 0:
            out += [(a, m, None, 1.0 - d), (a, m + 1, None, d)]
        else:
            out.append((a, m, None, 1.0))
    return out


def _axis_table(taps: list[tuple], fi: int, fo: int, size: int):
    """The taps as one array (cell offset, input pixel, output pixel, kernel tap) holding their
    weights (a tap with no kernel: tap 0, `size` 1), and the cell offsets' padding (before, after)."""
    cells = [rel // fi for _, rel, _, _ in taps]
    lo, hi = min(cells + [0]), max(cells + [0])
    table = np.zeros((hi - lo + 1, fi, fo, size), np.float32)
    for (a, rel, k, w), d in zip(taps, cells):
        at = (d - lo, rel % fi, a)
        if table[at].any():
            raise ValueError(f"two taps reach input pixel {rel} of output pixel {a}")
        table[at + (0 if k is None else k,)] = w
    return table, (-lo, hi)


def lift(kernel: jax.Array | None, taps_y: list[tuple], taps_x: list[tuple], fi: int, fo: int,
         channels: int | None = None, order: str | None = None):
    """The kernel over cells of a conv given by its taps along y and x (`conv_taps`, ...):
    `(kernel (ny, nx, Ci * fi * fi, Co * fo * fo), padding)` for a stride-1 conv over cells.

    With `kernel` (kh, kw, Ci, Co): entry (dy, dx, (ci, jy, jx), (co, ay, ax)) is the sum over the
    taps (ky, kx) of `table_y * table_x * kernel[ky, kx, ci, co]`, of which one term at most is
    not zero (a weight 1, or 0.5 per axis), so the entries are the kernel's, exactly. Computed
    without a gather (XLA's TPU gathers fetch a tile per element) and without arrays whose minor
    dimension is a cell's pixels: each kernel row is first repeated per output pixel (a product
    with a 0/1 matrix at `Precision.HIGHEST`, exact), then weighted and summed over the taps.
    Without a kernel (None), the taps' weights alone act on each of `channels` channels. `order`:
    how the sum over the taps is written (`lift_order`; None: the platform's), the same values."""
    size = 1 if kernel is None else kernel.shape[0]
    order = order or lift_order(ops.platform())
    if order not in ("kernel", "swapped"):
        raise ValueError(f"lift: order must be 'kernel' or 'swapped', got {order!r}")
    ty, pad_y = _axis_table(taps_y, fi, fo, size)
    tx, pad_x = _axis_table(taps_x, fi, fo, size)
    ny, nx = ty.shape[0], tx.shape[0]
    if kernel is None:
        full = np.einsum("yjak,xilm,co->yxcjioal", ty, tx, np.eye(channels, dtype=np.float32))
        ci = co = channels
        return jnp.asarray(full.reshape(ny, nx, ci * fi * fi, co * fo * fo)), (pad_y, pad_x)
    kh, kw, ci, co = kernel.shape
    taps, cells_in, cells_out = kh * kw, fi * fi, fo * fo
    repeat = np.kron(np.eye(co, dtype=np.float32), np.ones((1, cells_out), np.float32))  # (Co, Co * A)
    rows = jnp.dot(kernel.reshape(taps * ci, co), jnp.asarray(repeat, kernel.dtype),
                   precision=_HIGHEST).reshape(taps, ci, co * cells_out)  # [t, ci, (co, ay, ax)]
    # table[(ky, kx), (dy, dx), (jy, jx), (co, ay, ax)]: the taps' weights, the same for every co
    table = np.einsum("yjak,xilm->kmyxjial", ty, tx).reshape(taps, ny * nx, cells_in, cells_out)
    table = jnp.asarray(np.tile(table, (1, 1, 1, co)), kernel.dtype)
    if order == "kernel":  # the sum written in the kernel's order (dd, ci, J, Co * A)
        full = jnp.sum(table[:, :, None] * rows[:, None, :, None], axis=0)
    else:  # summed in the order (dd, J, ci, Co * A), then swapped
        full = jnp.swapaxes(jnp.sum(table[:, :, :, None] * rows[:, None, None], axis=0), 1, 2)
    return full.reshape(ny, nx, ci * cells_in, co * cells_out), (pad_y, pad_x)


def lift_order(platform: str) -> str:
    """How `lift` sums over the taps on `platform`. "kernel" on a TPU: the sum written in the lifted
    kernel's order; the swap of the other costs a transpose of each lifted kernel and of its
    gradient (the demo step's scale-4 blocks: 200.5 -> 166.8 TPU MB each, one block with its
    gradient at 64x64; BENCHMARKS.md, attempt 41).
    "swapped" elsewhere: in the kernel's order XLA's CPU compiler (jaxlib 0.10.2, its YNNPACK
    fusion) computes wrong values under `jit` (conv1's kernel: max error 4.9; `tests/test_grid.py`
    checks both orders against numpy, the kernel's op by op)."""
    return "kernel" if platform == "tpu" else "swapped"


def conv_cells(x: jax.Array, lifted, precision=None) -> jax.Array:
    """A stride-1 conv over cells with `lift`'s `(kernel, padding)`, in x's dtype."""
    kernel, padding = lifted
    return jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), padding, dimension_numbers=_CELLS,
                                        precision=precision)


def pad_edge(x: jax.Array, f: int) -> jax.Array:
    """Cells of f x f pixels with one more cell on every side whose pixels repeat the image's edge
    pixels (the bilinear resize's clamp), so that a conv over cells with no padding reads them."""
    if f == 1:
        return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    b, g, gw, n = x.shape
    c = n // (f * f)
    x6 = x.reshape(b, g, gw, c, f, f)
    top = jnp.broadcast_to(x6[:, :1, :, :, :1, :], (b, 1, gw, c, f, f))
    bottom = jnp.broadcast_to(x6[:, -1:, :, :, -1:, :], (b, 1, gw, c, f, f))
    x6 = jnp.concatenate([top, x6, bottom], axis=1)
    left = jnp.broadcast_to(x6[:, :, :1, :, :, :1], (b, g + 2, 1, c, f, f))
    right = jnp.broadcast_to(x6[:, :, -1:, :, :, -1:], (b, g + 2, 1, c, f, f))
    return jnp.concatenate([left, x6, right], axis=2).reshape(b, g + 2, gw + 2, n)


def _upsample_kernel(fi: int, f: int, channels: int) -> jax.Array:
    """The conv kernel over cells of bilinear upsampling by f from cells of fi pixels (`lift`)."""
    taps = upsample_taps(fi, f)
    return lift(None, taps, taps, fi, fi * f, channels=channels)[0]


def upsample(x: jax.Array, fi: int, f: int) -> jax.Array:
    """Bilinear upsampling by f of cells of fi pixels (`ops.resize_by`'s values up to float
    reassociation), as a conv over cells at `Precision.HIGHEST`; cells of fi * f pixels."""
    kernel = _upsample_kernel(fi, f, x.shape[-1] // (fi * fi))
    return conv_cells(pad_edge(x, fi), (kernel, ((0, 0), (0, 0))), precision=_HIGHEST)


def upsample_split(x: jax.Array, f: int, k: int = 2) -> jax.Array:
    """`upsample(x, 1, f)` (pixels upsampled by f into cells of f pixels) split into cells of f / k
    pixels, k x k times as many. The upsampling kernel's outputs are ordered (ky, kx, c, y, x) (a
    permutation of its constant columns), so the split moves whole rows of C * (f / k)^2 channels
    instead of transposing a cell's pixels (which the TPU tiles in 8 x 128 pieces of them)."""
    b, g, gw, c = x.shape
    s = f // k
    kernel = _upsample_kernel(1, f, c)  # columns (c, ky, y, kx, x)
    kernel = kernel.reshape(3, 3, c, c, k, s, k, s).transpose(0, 1, 2, 4, 6, 3, 5, 7).reshape(3, 3, c, c * f * f)
    y = conv_cells(pad_edge(x, 1), (kernel, ((0, 0), (0, 0))), precision=_HIGHEST)  # (B, G, Gw, ky, kx, c s s)
    y = y.reshape(b, g, gw, k, k, c * s * s).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, g * k, gw * k, c * s * s)


# -- a block ------------------------------------------------------------------------------

def _padding(kernel: jax.Array) -> tuple:
    """A lifted kernel's padding, from its size: 2 x 2 kernels reach the cells before, 3 x 3 both."""
    return tuple({2: (1, 0), 3: (1, 1)}[n] for n in kernel.shape[:2])


def _lifted(lifted) -> jax.Array:
    kernel, padding = lifted
    if padding != _padding(kernel):
        raise ValueError(f"a lifted kernel {kernel.shape} reaches cells {padding}, not {_padding(kernel)}")
    return kernel


def _unit_params(unit, lifted, f: int) -> dict:
    return {"kernel": _lifted(lifted), "bias": repeat_channels(unit.conv.bias[...], f),
            "slope": repeat_channels(unit.prelu.slope[...], f)}


def _plain_params(unit) -> dict:
    k = unit.conv
    return {"kernel": k.kernel[...], "bias": k.bias[...], "slope": unit.prelu.slope[...]}


def lift_block(m, scale: int) -> dict:
    """An `MVFB`'s parameters for `run_block` at `scale`: its kernels lifted to cells (`lift`), its
    biases and slopes repeated per pixel of a cell. Depends on the weights only, yet `block` makes
    it in every call: made once and passed in, the nine's forward (2 pairs at 256x256, v5e) counted
    3.08 GB against 2.98 (tried 2026-12-07, not kept): made in the program, it is laid out for its
    convs as it is written."""
    if scale not in (1, 2, 4):
        raise ValueError(f"the grid layout runs blocks at scales 1, 2 and 4, not {scale}")
    out = {}
    k0 = m.conv0[0].conv.kernel[...]
    if scale != 1:  # the flow is downsampled and scaled by 1 / scale before conv0[0]
        k0 = jnp.concatenate([k0[:, :, :-FLOW], k0[:, :, -FLOW:] * (1.0 / scale)], axis=2)
    f0 = CELL // (2 * scale)  # pixels of conv0[0]'s output per cell: 4, 2, 1
    t0 = conv_taps(CELL, f0, 2, down=scale)
    out["conv0_0"] = _unit_params(m.conv0[0], lift(k0, t0, t0, CELL, f0), f0)
    if scale == 4:  # the rest of the low-resolution branch runs on pixels of H / 16
        out["conv0_1"] = _plain_params(m.conv0[1])
        out["convblock"] = [_plain_params(u) for u in m.convblock]
        out["conv_sq"] = _plain_params(m.conv_sq)
    else:
        f1 = f0 // 2  # 2 (scale 1) or 1 (scale 2)
        t1 = conv_taps(f0, f1, 2)
        out["conv0_1"] = _unit_params(m.conv0[1], lift(m.conv0[1].conv.kernel[...], t1, t1, f0, f1), f1)
        t = conv_taps(f1, f1, 1)
        out["convblock"] = [_unit_params(u, lift(u.conv.kernel[...], t, t, f1, f1), f1) for u in m.convblock]
        out["conv_sq"] = _unit_params(m.conv_sq, lift(m.conv_sq.conv.kernel[...], t, t, f1, f1), f1)
    t = conv_taps(CELL, HALF, 2)
    out["conv1"] = _unit_params(m.conv1, lift(m.conv1.conv.kernel[...], t, t, CELL, HALF), HALF)
    t = conv_taps(HALF, HALF, 1)
    out["convblock1"] = _unit_params(m.convblock1, lift(m.convblock1.conv.kernel[...], t, t, HALF, HALF), HALF)
    last = m.lastconv
    tt = conv_transpose_taps(HALF, CELL, last.stride, last.padding, last.kernel.shape[0])
    kernel, padding = lift(last.kernel[...], tt, tt, HALF, CELL)
    out["lastconv"] = {"kernel": _lifted((kernel, padding)), "bias": repeat_channels(last.bias[...], CELL)}
    return out


def _run_unit(p: dict, x: jax.Array, plain_stride: int | None = None) -> jax.Array:
    """A conv unit over cells (`lift_block`'s), or on pixels with `plain_stride` (scale 4's)."""
    dtype = x.dtype
    if plain_stride is None:
        y = conv_cells(x, (p["kernel"], _padding(p["kernel"])))
    else:
        s = plain_stride
        y = jax.lax.conv_general_dilated(x, p["kernel"].astype(dtype), (s, s), ((1, 1), (1, 1)),
                                         dimension_numbers=_CELLS)
    return ops.prelu(y + p["bias"].astype(dtype), p["slope"].astype(dtype))


def run_block(p: dict, x13: jax.Array, flow4: jax.Array, scale: int, dtype=None) -> tuple[jax.Array, jax.Array]:
    """`MVFB.__call__` over cells of CELL pixels, with `lift_block`'s parameters: x13 (B, G, Gw,
    13 * 64) and flow4 (B, G, Gw, 4 * 64) -> (flow_d, mask_d), (B, G, Gw, 4 * 64) and (B, G, Gw, 64)."""
    if dtype is not None:
        x13, flow4 = x13.astype(dtype), flow4.astype(dtype)
    x17 = jnp.concatenate([x13, flow4], axis=-1)
    plain = (2, 1) if scale == 4 else (None, None)  # scale 4: conv0[1] on, and the rest at, pixels of H / 16
    a = _run_unit(p["conv0_0"], x17)
    a = _run_unit(p["conv0_1"], a, plain[0])
    b = a
    for unit in p["convblock"]:
        b = _run_unit(unit, b, plain[1])
    a = _run_unit(p["conv_sq"], b + a, plain[1])
    if scale == 4:
        a = upsample_split(a, 2 * HALF)  # H / 16 -> H / 2, in cells of HALF
    else:
        f1 = CELL // (4 * scale)
        a = upsample(a, f1, HALF // f1)
    c = _run_unit(p["conv1"], x17)
    c = _run_unit(p["convblock1"], c)
    x = jnp.concatenate([a, c], axis=-1)
    last = p["lastconv"]
    out = conv_cells(x, (last["kernel"], _padding(last["kernel"]))) + last["bias"].astype(x.dtype)
    out = out.astype(jnp.float32)
    return out[..., : FLOW * CELL * CELL], out[..., FLOW * CELL * CELL:]


def block(m, x13: jax.Array, flow4: jax.Array, scale: int) -> tuple[jax.Array, jax.Array]:
    """`MVFB.__call__` over cells: `run_block` with the block's parameters lifted here."""
    return run_block(lift_block(m, scale), x13, flow4, scale, m.dtype)


# -- the nine blocks ----------------------------------------------------------------------

LAYOUTS = ("pixels", "cells")


def choose_layout(platform: str, height: int, width: int) -> str:
    """The layout a DMVFN runs its blocks in on `platform` for frames of this (padded) size: cells
    on a TPU where the warp is the Pallas kernel (the frames fit its on-chip memory), else pixels."""
    if platform == "tpu" and ops.warp_impl_for(platform, 3, height, width) in ("pallas", "pallas_interpret"):
        return "cells"
    return "pixels"


class Frames(NamedTuple):
    """The two frames as planes (for the warp) and as cells (for the blocks)."""

    planes0: jax.Array
    planes1: jax.Array
    cells0: jax.Array
    cells1: jax.Array


def frames(img0: jax.Array, img1: jax.Array) -> Frames:
    """NHWC frames (H, W multiples of 16) -> `Frames`."""
    p0, p1 = jnp.transpose(img0, (0, 3, 1, 2)), jnp.transpose(img1, (0, 3, 1, 2))
    return Frames(p0, p1, cells_from_planes(p0), cells_from_planes(p1))


def initial_state(fr: Frames):
    """Zero flow and mask over cells, the frames as the warped frames (a `dmvfn.FlowState`)."""
    b, g, gw, _ = fr.cells0.shape
    zeros = lambda c: jnp.zeros((b, g, gw, c * CELL * CELL), fr.cells0.dtype)  # noqa: E731
    return zeros(4), zeros(1), fr.cells0, fr.cells1


def warps(fr: Frames, flow_cells: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two frames warped by the flow (cells of CELL; channels 0, 1 warp frame 0, 2, 3 frame 1),
    as cells; the flow goes to planes once for both."""
    f = planes_from_cells(flow_cells)
    return (cells_from_planes(ops.warp_planes(fr.planes0, f[:, 0], f[:, 1])),
            cells_from_planes(ops.warp_planes(fr.planes1, f[:, 2], f[:, 3])))


def blend(mask: jax.Array, warped0: jax.Array, warped1: jax.Array) -> jax.Array:
    """`dmvfn.merge`'s blend over cells: clamp(sigmoid(m) * w0 + (1 - sigmoid(m)) * w1, 0, 1)."""
    m = jnp.tile(jax.nn.sigmoid(mask), warped0.shape[-1] // mask.shape[-1])  # the mask for each channel
    return jnp.clip(m * warped0 + (1 - m) * warped1, 0.0, 1.0)


def merge(fr: Frames, flow: jax.Array, mask: jax.Array) -> jax.Array:
    """`dmvfn.merge` over cells."""
    with jax.named_scope("merge"):
        return blend(mask, *warps(fr, flow))


def to_pixels(x: jax.Array) -> jax.Array:
    """Cells of CELL -> NHWC."""
    return jnp.transpose(planes_from_cells(x), (0, 2, 3, 1))
