"""Planes (B, C, H, W) to cells (`grid.to_cells`' layout) and back, as Pallas kernels for TPUs.

XLA writes this permutation as a transpose through a 6-D array whose two minor dimensions are a
cell's 8 x 8 pixels, which the TPU tiles by (8, 128): 16x padding, and the TPU compiler counts
it (BENCHMARKS.md, "Where the TPU's bytes go"). Here each step of the kernel reads one row of
cells as planes (C, 8, W) and writes it as cells (W / 8, C * 64), the shuffle done in the TPU's
on-chip memory (`pltpu.einshape`). Each kernel is the other's transpose, so each is the other's
gradient.

The kernels' cost in `compiled.cost_analysis()` is what they declare here (the bytes read and
written once), not the compiler's estimate. On a CPU they run in Pallas's interpret mode (the
tests); lowering them for a TPU asks the chip's tiling, so a program compiled for TPU devices from
a CPU host is traced inside `ops.compiling_for("tpu", device)`.
"""

from __future__ import annotations

import functools

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

CELL = 8  # pixels per cell along each axis; rows of one cell: one sublane tile


def _to_cells_kernel(src, out):
    out[...] = pltpu.einshape("cy(gq)->g(cyq)", src[...], q=CELL)  # (C, 8, W) -> (W / 8, C * 64)


def _to_planes_kernel(src, out):
    out[...] = pltpu.einshape("g(cyq)->cy(gq)", src[...], c=out.shape[0], y=CELL)


def _cost(x) -> pl.CostEstimate:
    return pl.CostEstimate(flops=0, transcendentals=0, bytes_accessed=2 * x.size * x.dtype.itemsize)


def _planes_block(c, w):
    return pl.BlockSpec((None, c, CELL, w), lambda b, g: (b, 0, g, 0))


def _cells_block(gw, k):
    return pl.BlockSpec((None, None, gw, k), lambda b, g: (b, g, 0, 0))


def _to_cells(planes, interpret):
    b, c, h, w = planes.shape
    return pl.pallas_call(
        _to_cells_kernel, out_shape=jax.ShapeDtypeStruct((b, h // CELL, w // CELL, c * CELL * CELL), planes.dtype),
        grid=(b, h // CELL), in_specs=[_planes_block(c, w)], out_specs=_cells_block(w // CELL, c * CELL * CELL),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
        interpret=interpret, cost_estimate=_cost(planes), name="planes_to_cells",
    )(planes)


def _to_planes(cells, interpret):
    b, g, gw, k = cells.shape
    c = k // (CELL * CELL)
    return pl.pallas_call(
        _to_planes_kernel, out_shape=jax.ShapeDtypeStruct((b, c, g * CELL, gw * CELL), cells.dtype),
        grid=(b, g), in_specs=[_cells_block(gw, k)], out_specs=_planes_block(c, gw * CELL),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
        interpret=interpret, cost_estimate=_cost(cells), name="cells_to_planes",
    )(cells)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def to_cells(planes: jax.Array, interpret: bool = False) -> jax.Array:
    """(B, C, H, W) -> (B, H / 8, W / 8, C * 64), H and W multiples of 8."""
    return _to_cells(planes, interpret)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def to_planes(cells: jax.Array, interpret: bool = False) -> jax.Array:
    """The inverse of `to_cells`."""
    return _to_planes(cells, interpret)


to_cells.defvjp(lambda p, interpret: (_to_cells(p, interpret), None),
                lambda interpret, _, g: (_to_planes(g, interpret),))
to_planes.defvjp(lambda c, interpret: (_to_planes(c, interpret), None),
                 lambda interpret, _, g: (_to_cells(g, interpret),))
