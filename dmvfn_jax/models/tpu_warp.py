"""The backward warp for TPUs: the four bilinear corners picked by one-hot matrix products in a
Pallas kernel, instead of per-pixel gathers.

XLA's TPU gathers fetch a (8, 128) tile for every scalar they pick (BENCHMARKS.md, "Where the
TPU's bytes go"), and their results keep the 3 channels in the 128 lanes. Here the image is laid
out as planes `(B, C, H, W)` (width in the lanes) and kept whole in the TPU's on-chip memory for
each batch element; every tile of `TILE_ROWS` output rows loops over the chunks of 8 source rows
its pixels read (`spans`: from the tile's lowest source row to its highest, whatever the flow),
and picks each pixel's columns with a product against a one-hot matrix on the MXU. A one-hot
product at `Precision.HIGHEST` picks float32 values exactly, so the corners are the gathers'
values and the blend (`ops.bilinear`) is the one `ops.warp_gather` uses. Undifferentiated (inference),
`blended` blends the corners in the kernel and writes the warped planes alone; differentiated, the
corners go to HBM and are blended outside, since the gradient reads them.

The gradient with respect to the image is the transposed product, accumulated into the image's
planes (`_scatter_kernel`); with respect to the flow it comes from the blend, as for the gathers.

The kernels' cost in `compiled.cost_analysis()` is what `pl.CostEstimate` declares here, not the
compiler's estimate (see `_cost`). On a CPU the kernels run in Pallas's interpret mode, which is
how the tests check them; only a TPU runs them compiled, and no TPU was used to write them.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

TILE_ROWS = 8  # output rows per kernel step (one sublane tile)
CHUNK = 8  # source rows per one-hot product (one sublane tile)
CORNERS = 4  # (y0, x0), (y0, x1), (y1, x0), (y1, x1)
# The image planes of one batch element stay in on-chip memory (twice, for the pipeline); above
# this the caller keeps the XLA form (`fits`).
VMEM_BUDGET = 8 * 2**20
_HIGHEST = jax.lax.Precision.HIGHEST


def fits(channels: int, height: int, width: int) -> bool:
    """Whether the kernel takes an image of this size: whole rows of `TILE_ROWS`, and the planes of
    one batch element twice within `VMEM_BUDGET`."""
    return height % TILE_ROWS == 0 and 2 * channels * height * width * 4 <= VMEM_BUDGET


def spans(y0: jax.Array, y1: jax.Array) -> jax.Array:
    """(B, H / TILE_ROWS, 2) int32: per tile of output rows, the first source row of its first
    chunk (a multiple of CHUNK) and its number of chunks, so that every row between the tile's
    lowest `y0` and highest `y1` is in one."""
    b, h, w = y0.shape
    lo = jnp.min(y0.reshape(b, h // TILE_ROWS, TILE_ROWS * w), axis=-1) // CHUNK
    hi = jnp.max(y1.reshape(b, h // TILE_ROWS, TILE_ROWS * w), axis=-1) // CHUNK
    return jnp.stack([lo * CHUNK, hi - lo + 1], axis=-1).astype(jnp.int32)


def _one_hot_columns(x: jax.Array, width: int) -> jax.Array:
    """(width, W) float32: entry (j, p) is 1 where pixel p reads source column j (`x`: (1, W))."""
    return (jax.lax.broadcasted_iota(jnp.int32, (width, x.shape[-1]), 0) == x).astype(jnp.float32)


def _chunk_rows(start, n):
    return pl.multiple_of(start + n * CHUNK, CHUNK)


def _row(i, y0_ref, y1_ref, x0_ref, x1_ref, w_src):
    """Output row i of a tile: its pixels' source rows y0, y1 (1, W) and their columns as one-hot
    matrices (w_src, W) for x0 and x1."""
    return (y0_ref[i:i + 1, :], y1_ref[i:i + 1, :], _one_hot_columns(x0_ref[i:i + 1, :], w_src),
            _one_hot_columns(x1_ref[i:i + 1, :], w_src))


def _pick_corners(src_ref, start, y0, y1, oh0, oh1, c, w, w_src, n, acc):
    """One chunk of CHUNK source rows into the four corners `acc` ((C, W) each) of an output row."""
    r0 = _chunk_rows(start, n)
    rows = src_ref[:, pl.ds(r0, CHUNK), :].reshape(c * CHUNK, w_src)
    at_x0 = jnp.dot(rows, oh0, precision=_HIGHEST, preferred_element_type=jnp.float32).reshape(c, CHUNK, w)
    at_x1 = jnp.dot(rows, oh1, precision=_HIGHEST, preferred_element_type=jnp.float32).reshape(c, CHUNK, w)
    k = jax.lax.broadcasted_iota(jnp.int32, (CHUNK, w), 0) + r0
    on0, on1 = (k == y0)[None], (k == y1)[None]
    pick = lambda vals, on: jnp.sum(jnp.where(on, vals, 0.0), axis=1)  # noqa: E731
    return (acc[0] + pick(at_x0, on0), acc[1] + pick(at_x1, on0),
            acc[2] + pick(at_x0, on1), acc[3] + pick(at_x1, on1))


def _tile_corners(span_ref, src_ref, y0_ref, y1_ref, x0_ref, x1_ref):
    """Yields (i, the four corners (C, W) of each pixel of output row i) for the rows of one tile,
    from src (C, H, W)."""
    b, t = pl.program_id(0), pl.program_id(1)
    start, count = span_ref[b, t, 0], span_ref[b, t, 1]
    c, _, w_src = src_ref.shape
    w = y0_ref.shape[-1]
    for i in range(TILE_ROWS):
        y0, y1, oh0, oh1 = _row(i, y0_ref, y1_ref, x0_ref, x1_ref, w_src)
        pick = functools.partial(_pick_corners, src_ref, start, y0, y1, oh0, oh1, c, w, w_src)
        yield i, jax.lax.fori_loop(0, count, pick, (jnp.zeros((c, w), jnp.float32),) * CORNERS)


def _corners_kernel(span_ref, src_ref, y0_ref, y1_ref, x0_ref, x1_ref, out_ref):
    """One tile: out (4, C, TILE_ROWS, W) = the four corners of each pixel, from src (C, H, W)."""
    for i, acc in _tile_corners(span_ref, src_ref, y0_ref, y1_ref, x0_ref, x1_ref):
        for q in range(CORNERS):
            out_ref[q, :, i, :] = acc[q]


def _blend_kernel(blend, span_ref, src_ref, y0_ref, y1_ref, x0_ref, x1_ref, wx_ref, wy_ref, out_ref):
    """One tile: out (C, TILE_ROWS, W) = `_corners_kernel`'s four corners blended in on-chip memory
    by `blend` with the weights wx, wy (TILE_ROWS, W): the warp's output alone goes back to HBM, not
    its four corners."""
    for i, acc in _tile_corners(span_ref, src_ref, y0_ref, y1_ref, x0_ref, x1_ref):
        out_ref[:, i, :] = blend(*acc, wx_ref[i:i + 1, :], wy_ref[i:i + 1, :])  # weights (1, W) on every channel


def _scatter_kernel(span_ref, g_ref, y0_ref, y1_ref, x0_ref, x1_ref, out_ref):
    """The transpose of `_corners_kernel`: adds one tile's corner cotangents g (4, C, TILE_ROWS, W)
    into the planes out (C, H, W), which stay in on-chip memory over the tiles of a batch element."""
    b, t = pl.program_id(0), pl.program_id(1)

    @pl.when(t == 0)
    def _():
        out_ref[...] = jnp.zeros(out_ref.shape, out_ref.dtype)

    start, count = span_ref[b, t, 0], span_ref[b, t, 1]
    c, _, w_src = out_ref.shape
    w = y0_ref.shape[-1]
    for i in range(TILE_ROWS):
        y0, y1, oh0, oh1 = _row(i, y0_ref, y1_ref, x0_ref, x1_ref, w_src)
        g = [g_ref[q, :, i:i + 1, :] for q in range(CORNERS)]  # (C, 1, W) each

        def chunk(n, carry, y0=y0, y1=y1, oh0=oh0, oh1=oh1, g=g):
            r0 = _chunk_rows(start, n)
            k = jax.lax.broadcasted_iota(jnp.int32, (CHUNK, w), 0) + r0
            on0, on1 = (k == y0)[None], (k == y1)[None]
            at_x0 = (jnp.where(on0, g[0], 0.0) + jnp.where(on1, g[2], 0.0)).reshape(c * CHUNK, w)
            at_x1 = (jnp.where(on0, g[1], 0.0) + jnp.where(on1, g[3], 0.0)).reshape(c * CHUNK, w)
            nt = (((1,), (1,)), ((), ()))
            add = (jax.lax.dot_general(at_x0, oh0, nt, precision=_HIGHEST, preferred_element_type=jnp.float32)
                   + jax.lax.dot_general(at_x1, oh1, nt, precision=_HIGHEST, preferred_element_type=jnp.float32))
            out_ref[:, pl.ds(r0, CHUNK), :] += add.reshape(c, CHUNK, w_src)
            return carry

        jax.lax.fori_loop(0, count, chunk, 0)


def _cost(b: int, c: int, h: int, w: int) -> pl.CostEstimate:
    """What the kernels declare to XLA's cost analysis: the one-hot products and the bytes moved
    for tiles whose pixels read two chunks of source rows (vertical flow varying by less than 8
    rows within 8 output rows, the usual case; a tile reads as many chunks as its rows span)."""
    flops = b * h * 2 * (2 * 2 * c * CHUNK * w * w)  # per output row: two chunks x two one-hot products
    moved = 4 * (b * c * h * w + 4 * b * h * w + CORNERS * b * c * h * w)
    return pl.CostEstimate(flops=flops, transcendentals=0, bytes_accessed=moved)


def _blend_cost(b: int, c: int, h: int, w: int) -> pl.CostEstimate:
    """`_cost` for `_blend_kernel`: the same products, the weights read and one output, not four."""
    moved = 4 * (b * c * h * w + 6 * b * h * w + b * c * h * w)
    return pl.CostEstimate(flops=_cost(b, c, h, w).flops + 7 * b * c * h * w, transcendentals=0, bytes_accessed=moved)


def _grid_spec(b, c, h, w, src_first: bool):
    plane = pl.BlockSpec((None, c, h, w), lambda b, t, s: (b, 0, 0, 0))
    corners = pl.BlockSpec((None, CORNERS, c, TILE_ROWS, w), lambda b, t, s: (b, 0, 0, t, 0))
    index = pl.BlockSpec((None, TILE_ROWS, w), lambda b, t, s: (b, t, 0))
    return pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1, grid=(b, h // TILE_ROWS),
        in_specs=[plane if src_first else corners, index, index, index, index],
        out_specs=corners if src_first else plane)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def corners(planes: jax.Array, y0: jax.Array, y1: jax.Array, x0: jax.Array, x1: jax.Array,
            interpret: bool = False) -> jax.Array:
    """(B, 4, C, H, W): `planes[b, c, y, x]` at the four corners (y0, x0), (y0, x1), (y1, x0),
    (y1, x1) of every pixel; indices (B, H, W) int32 within the image."""
    return _corners(planes, y0, y1, x0, x1, interpret)


def _corners(planes, y0, y1, x0, x1, interpret):
    b, c, h, w = planes.shape
    return pl.pallas_call(
        _corners_kernel, out_shape=jax.ShapeDtypeStruct((b, CORNERS, c, h, w), jnp.float32),
        grid_spec=_grid_spec(b, c, h, w, src_first=True), interpret=interpret, cost_estimate=_cost(b, c, h, w),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary")),
        name="warp_corners",
    )(spans(y0, y1), planes.astype(jnp.float32), y0, y1, x0, x1)


def _corners_fwd(planes, y0, y1, x0, x1, interpret):
    # the planes' dtype travels as an empty array (residuals are arrays)
    return _corners(planes, y0, y1, x0, x1, interpret), (jnp.zeros((0,), planes.dtype), y0, y1, x0, x1)


def _corners_bwd(interpret, res, g):
    like, y0, y1, x0, x1 = res
    b, _, c, h, w = g.shape
    grad = pl.pallas_call(
        _scatter_kernel, out_shape=jax.ShapeDtypeStruct((b, c, h, w), jnp.float32),
        grid_spec=_grid_spec(b, c, h, w, src_first=False), interpret=interpret, cost_estimate=_cost(b, c, h, w),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary")),
        name="warp_corners_transpose",
    )(spans(y0, y1), g.astype(jnp.float32), y0, y1, x0, x1)
    return grad.astype(like.dtype), None, None, None, None


corners.defvjp(_corners_fwd, _corners_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def blended(planes: jax.Array, y0: jax.Array, y1: jax.Array, x0: jax.Array, x1: jax.Array, wx: jax.Array,
            wy: jax.Array, blend: Callable, interpret: bool = False) -> jax.Array:
    """(B, C, H, W) float32: `blend(v00, v01, v10, v11, wx, wy)` (`ops.bilinear`) of the four
    `corners(planes, y0, y1, x0, x1)` with the weights wx, wy (B, H, W), blended in the kernel
    (`_blend_kernel`), so a warp that is not differentiated (inference) writes its output alone, not
    its four corners. Differentiated, it is the corners and the blend outside, whose residuals the
    gradient reads (the program before this kernel)."""
    b, c, h, w = planes.shape
    plane = pl.BlockSpec((None, c, h, w), lambda b, t, s: (b, 0, 0, 0))
    rows = pl.BlockSpec((None, TILE_ROWS, w), lambda b, t, s: (b, t, 0))
    out = pl.BlockSpec((None, c, TILE_ROWS, w), lambda b, t, s: (b, 0, t, 0))
    spec = pltpu.PrefetchScalarGridSpec(num_scalar_prefetch=1, grid=(b, h // TILE_ROWS),
                                        in_specs=[plane] + [rows] * 6, out_specs=out)
    return pl.pallas_call(
        functools.partial(_blend_kernel, blend), out_shape=jax.ShapeDtypeStruct((b, c, h, w), jnp.float32), grid_spec=spec,
        interpret=interpret, cost_estimate=_blend_cost(b, c, h, w),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary")),
        name="warp_blend",
    )(spans(y0, y1), planes.astype(jnp.float32), y0, y1, x0, x1, wx.astype(jnp.float32),
      wy.astype(jnp.float32))


def _blend_outside(planes, y0, y1, x0, x1, wx, wy, blend, interpret):
    v = corners(planes, y0, y1, x0, x1, interpret)
    return blend(v[:, 0], v[:, 1], v[:, 2], v[:, 3], wx[:, None], wy[:, None])


def _blended_fwd(planes, y0, y1, x0, x1, wx, wy, blend, interpret):
    out, vjp = jax.vjp(lambda p, a, c: _blend_outside(p, y0, y1, x0, x1, a, c, blend, interpret), planes, wx, wy)
    return out, vjp


def _blended_bwd(blend, interpret, vjp, g):
    d_planes, d_wx, d_wy = vjp(g)
    return d_planes, None, None, None, None, d_wx, d_wy


blended.defvjp(_blended_fwd, _blended_bwd)
