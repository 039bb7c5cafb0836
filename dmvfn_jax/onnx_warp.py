"""The backward warp as ONNX `GridSample`, for `dmvfn_jax.export --format onnx` (needs jax2onnx).

Traced as it is, `ops.warp` becomes generic gathers in ONNX. Within `warp_as_grid_sample()`,
`ops.warp` binds a primitive of its own instead, `dmvfn_grid_sample`, that a jax2onnx plugin
lowers to one `GridSample` (opset >= 16; `mode="linear"`, `padding_mode="border"`,
`align_corners=1`: PyTorch's `grid_sample` as the official code calls it, which `ops.warp`
equals). The flow is turned into the normalised grid in JAX, before the primitive:
`x' = (x + flow_x) * 2 / (W - 1) - 1`, which GridSample maps back to `x + flow_x` up to float
rounding (the parity tests bound the difference). Importing this module registers the plugin.
"""

from __future__ import annotations

import contextlib

import jax.numpy as jnp
import onnx_ir as ir
from jax import core
from jax.extend.core import Primitive
from jax2onnx.plugins._ir_shapes import _ensure_value_metadata, _stamp_type_and_shape
from jax2onnx.plugins.plugin_system import PrimitiveLeafPlugin, register_primitive

from dmvfn_jax import ops

GRID_SAMPLE_P = Primitive("dmvfn_grid_sample")


def _grid_sample_impl(img, grid):
    """What the primitive computes, in JAX: `ops.warp_map_coordinates` at the grid's pixels."""
    _, h, w, _ = img.shape
    flow = jnp.stack([(grid[..., 0] + 1) / 2 * (w - 1) - jnp.arange(w, dtype=grid.dtype)[None, None, :],
                      (grid[..., 1] + 1) / 2 * (h - 1) - jnp.arange(h, dtype=grid.dtype)[None, :, None]], -1)
    return ops.warp_map_coordinates(img, flow)


GRID_SAMPLE_P.def_impl(_grid_sample_impl)
GRID_SAMPLE_P.def_abstract_eval(lambda img, grid: core.ShapedArray(img.shape, img.dtype))


@register_primitive(jaxpr_primitive=GRID_SAMPLE_P.name, since="dmvfn-jax", context="primitives.dmvfn_jax",
                    component="grid_sample", testcases=[],
                    onnx=[{"component": "GridSample", "doc": "https://onnx.ai/onnx/operators/onnx__GridSample.html"}])
class GridSamplePlugin(PrimitiveLeafPlugin):
    """img (B, H, W, C) NHWC and grid (B, H, W, 2) -> Transpose, GridSample, Transpose."""

    _PRIM = GRID_SAMPLE_P

    def lower(self, ctx, eqn) -> None:
        img_var, grid_var = eqn.invars
        (out_var,) = eqn.outvars
        b, h, w, c = img_var.aval.shape
        img = ctx.get_value_for_var(img_var, name_hint=ctx.fresh_name("warp_img"))
        grid = ctx.get_value_for_var(grid_var, name_hint=ctx.fresh_name("warp_grid"))
        out_spec = ctx.get_value_for_var(out_var, name_hint=ctx.fresh_name("warp_out"))
        dtype = img.type.dtype if img.type is not None else ir.DataType.FLOAT

        def stamp(value, shape):
            value.type = ir.TensorType(dtype)
            _stamp_type_and_shape(value, shape)
            _ensure_value_metadata(ctx, value)
            return value

        nchw = stamp(ctx.builder.Transpose(img, perm=[0, 3, 1, 2], _outputs=[ctx.fresh_name("warp_nchw")]),
                     (b, c, h, w))
        sampled = stamp(ctx.builder.GridSample(nchw, grid, align_corners=1, mode="linear", padding_mode="border",
                                               _outputs=[ctx.fresh_name("warp_sampled")]), (b, c, h, w))
        out = stamp(ctx.builder.Transpose(sampled, perm=[0, 2, 3, 1], _outputs=[out_spec.name]), (b, h, w, c))
        ctx.bind_value_for_var(out_var, out)


def grid_sample_warp(img, flow):
    """`ops.warp` through `GRID_SAMPLE_P`: the flow made a grid normalised for align_corners=True."""
    ops._check_warp_args(img, flow)
    _, h, w, _ = img.shape
    xs = jnp.arange(w, dtype=flow.dtype)[None, None, :]
    ys = jnp.arange(h, dtype=flow.dtype)[None, :, None]
    grid = jnp.stack([(xs + flow[..., 0]) * (2.0 / (w - 1)) - 1.0,
                      (ys + flow[..., 1]) * (2.0 / (h - 1)) - 1.0], axis=-1)
    return GRID_SAMPLE_P.bind(img, grid)


@contextlib.contextmanager
def warp_as_grid_sample():
    """`ops.warp` is `grid_sample_warp` inside (the model looks it up at each call)."""
    warp = ops.warp
    ops.warp = grid_sample_warp
    try:
        yield
    finally:
        ops.warp = warp
