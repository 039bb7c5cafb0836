"""Planes (B, C, H, W) to cells (`grid.to_cells`' layout) and back, as Pallas kernels for TPUs.

XLA writes this permutation as a transpose through a 6-D array whose two minor dimensions are a
cell's 8 x 8 pixels, which the TPU tiles by (8, 128): 16x padding, and the TPU compiler counts
it (BENCHMARKS.md, "Where the TPU's bytes go"). Here each step of the kernel reads one row of
cells as planes (C, 8, W) and writes it as cells (W / 8, C * 64), the shuffle done in the TPU's
on-chip memory. Each kernel is the other's transpose, so each is the other's gradient.

Two forms of the shuffle (`FORMS`), chosen per chip by `form_for`: "einshape" (`pltpu.einshape`,
a reshape that splits the lane dimension; compiled for v5e, v5p and v6e) and "matmul" (products
with 0/1 matrices built in the kernel, at `Precision.HIGHEST`: every output is one input times 1,
exact for finite values, while an inf or NaN spreads NaN over its row of cells through the zero
products; for v4, whose Mosaic refuses that reshape: "infer-vector-layout: unsupported shape cast").

The kernels' cost in `compiled.cost_analysis()` is what they declare here (the bytes read and
written once), not the compiler's estimate. On a CPU they run in Pallas's interpret mode (the
tests); lowering them for a TPU asks the chip's tiling, so a program compiled for TPU devices from
a CPU host is traced inside `ops.compiling_for("tpu", device)`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

CELL = 8  # pixels per cell along each axis; rows of one cell: one sublane tile
FORMS = ("einshape", "matmul")
_HIGHEST = jax.lax.Precision.HIGHEST


def form_for(device_kind: str) -> str:
    """The kernels' form for a chip (`jax.Device.device_kind`): "matmul" on TPU v2 to v4, else "einshape"."""
    return "matmul" if device_kind in ("TPU v2", "TPU v3", "TPU v4") else "einshape"


def _iota(shape, axis):
    return jax.lax.broadcasted_iota(jnp.int32, shape, axis)


def _dot(a, b, contract_b: int):
    """a @ b (contract_b 0) or a @ b.T (1), in float32 at HIGHEST."""
    return jax.lax.dot_general(a, b, (((1,), (contract_b,)), ((), ())), precision=_HIGHEST,
                               preferred_element_type=jnp.float32)


def _to_cells_kernel(src, out, *, form):
    """(C, 8, W) planes -> (W / 8, C * 64) cells."""
    if form == "einshape":
        out[...] = pltpu.einshape("cy(gq)->g(cyq)", src[...], q=CELL)
        return
    c, _, w = src.shape
    k = c * CELL * CELL  # (c, y, q)
    rows = src[...].reshape(c * CELL, w).astype(jnp.float32)  # (c, y)
    spread = (_iota((k, c * CELL), 0) // CELL == _iota((k, c * CELL), 1)).astype(jnp.float32)
    x = jnp.where(_iota((k, w), 0) % CELL == _iota((k, w), 1) % CELL, _dot(spread, rows, 0), 0.0)  # [(c,y,q), w]
    pick = (_iota((w // CELL, w), 1) // CELL == _iota((w // CELL, w), 0)).astype(jnp.float32)  # [g, w]
    out[...] = _dot(pick, x, 1).astype(out.dtype)


def _to_planes_kernel(src, out, *, form):
    """(W / 8, C * 64) cells -> (C, 8, W) planes."""
    c, _, w = out.shape
    if form == "einshape":
        out[...] = pltpu.einshape("g(cyq)->cy(gq)", src[...], c=c, y=CELL)
        return
    k = c * CELL * CELL
    spread = (_iota((w, w // CELL), 0) // CELL == _iota((w, w // CELL), 1)).astype(jnp.float32)  # [w, g]
    x = jnp.where(_iota((w, k), 0) % CELL == _iota((w, k), 1) % CELL,
                  _dot(spread, src[...].astype(jnp.float32), 0), 0.0)  # [w, (c,y,q)]
    gather = (_iota((c * CELL, k), 1) // CELL == _iota((c * CELL, k), 0)).astype(jnp.float32)  # [(c,y), (c,y,q)]
    out[...] = _dot(gather, x, 1).reshape(c, CELL, w).astype(out.dtype)


def _cost(planes_shape, dtype, form) -> pl.CostEstimate:
    """Bytes read and written once; the matmul form's products (per row of cells: C*64 x C*8 x W
    and W/8 x W x C*64 multiply-adds, either way round)."""
    b, c, h, w = planes_shape
    size = b * c * h * w
    macs = b * (h // CELL) * (c * CELL * CELL) * (c * CELL * w + (w // CELL) * w) if form == "matmul" else 0
    return pl.CostEstimate(flops=2 * macs, transcendentals=0, bytes_accessed=2 * size * jnp.dtype(dtype).itemsize)


def _planes_block(c, w):
    return pl.BlockSpec((None, c, CELL, w), lambda b, g: (b, 0, g, 0))


def _cells_block(gw, k):
    return pl.BlockSpec((None, None, gw, k), lambda b, g: (b, g, 0, 0))


def _check_form(form):
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")


def _to_cells(planes, interpret, form):
    _check_form(form)
    b, c, h, w = planes.shape
    out = jax.ShapeDtypeStruct((b, h // CELL, w // CELL, c * CELL * CELL), planes.dtype)
    return pl.pallas_call(
        functools.partial(_to_cells_kernel, form=form), out_shape=out,
        grid=(b, h // CELL), in_specs=[_planes_block(c, w)], out_specs=_cells_block(w // CELL, c * CELL * CELL),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
        interpret=interpret, cost_estimate=_cost(planes.shape, planes.dtype, form), name="planes_to_cells",
    )(planes)


def _to_planes(cells, interpret, form):
    _check_form(form)
    b, g, gw, k = cells.shape
    c = k // (CELL * CELL)
    out = jax.ShapeDtypeStruct((b, c, g * CELL, gw * CELL), cells.dtype)
    return pl.pallas_call(
        functools.partial(_to_planes_kernel, form=form), out_shape=out,
        grid=(b, g), in_specs=[_cells_block(gw, k)], out_specs=_planes_block(c, gw * CELL),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
        interpret=interpret, cost_estimate=_cost(out.shape, cells.dtype, form), name="cells_to_planes",
    )(cells)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def to_cells(planes: jax.Array, interpret: bool = False, form: str = "einshape") -> jax.Array:
    """(B, C, H, W) -> (B, H / 8, W / 8, C * 64), H and W multiples of 8; `form`: one of `FORMS`."""
    return _to_cells(planes, interpret, form)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def to_planes(cells: jax.Array, interpret: bool = False, form: str = "einshape") -> jax.Array:
    """The inverse of `to_cells`."""
    return _to_planes(cells, interpret, form)


to_cells.defvjp(lambda p, interpret, form: (_to_cells(p, interpret, form), None),
                lambda interpret, form, _, g: (_to_planes(g, interpret, form),))
to_planes.defvjp(lambda c, interpret, form: (_to_planes(c, interpret, form), None),
                 lambda interpret, form, _, g: (_to_cells(g, interpret, form),))
