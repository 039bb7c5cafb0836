"""The blocks over cells of 8 x 8 pixels (`dmvfn_jax.models.grid`, the TPU's layout): the same
values as on pixels, up to float reassociation, through a block, the whole model, training
outputs and gradients; the planes/cells kernels (`tpu_relayout`) in interpret mode; the choice per
platform. The tolerance, 1e-5, is the suite's float32 reassociation bound (measured: 2.5e-6 at
most, on the nine with random weights). The model here is small (widths 16: at widths 8 one PReLU
slope's gradient is a sum that moves 1.3e-5 of its largest between the pixel layout's own conv
forms, and 3.5e-5 between the layouts). What the layout saves on a TPU is `tests/test_plan.py`'s."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dmvfn_jax.models import grid, ops
from dmvfn_jax.models.dmvfn import DMVFN
from dmvfn_jax.models.mvfb import MVFB

TOL = 1e-5
# Small: the scale-4 path (convs on pixels of H/16 after conv0[0]) and the scale-1 path; scale 2's is
# the block test's
TWO_SCALES = {"widths": (16, 16), "scales": (4, 1)}


def _frames(shape, seed=0):
    k0, k1 = jax.random.split(jax.random.key(seed))
    return jax.random.uniform(k0, shape), jax.random.uniform(k1, shape)


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_a_block_over_cells_is_the_block_on_pixels(scale):
    with jax.default_matmul_precision("highest"):
        m = MVFB(16, rngs=nnx.Rngs(scale))
        k0, k1 = jax.random.split(jax.random.key(scale))
        x13, flow = jax.random.uniform(k0, (2, 32, 48, 13)), 3.0 * jax.random.normal(k1, (2, 32, 48, 4))
        flow_d, mask_d = nnx.jit(lambda m, x, f: m(x, f, scale))(m, x13, flow)
        cells_flow, cells_mask = nnx.jit(lambda m, x, f: grid.block(m, grid.to_grid(x), grid.to_grid(f), scale))(
            m, x13, flow)
    np.testing.assert_allclose(grid.from_grid(cells_flow), flow_d, atol=TOL, rtol=0)
    np.testing.assert_allclose(grid.from_grid(cells_mask), mask_d, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind, fi, fo, stride, down, shape", [
    ("conv", 8, 4, 2, 1, (3, 3, 17, 8)),  # conv1
    ("conv", 8, 2, 2, 2, (3, 3, 17, 40)),  # conv0[0] at scale 2, the downsampling folded in
    ("conv", 2, 2, 1, 1, (3, 3, 44, 11)),  # conv_sq at scale 1
    ("transpose", 4, 8, 2, 1, (4, 4, 19, 5)),  # lastconv
])
@pytest.mark.parametrize("order", ["swapped", "kernel"])
def test_lift_places_the_kernels_entries(kind, fi, fo, stride, down, shape, order):
    """`grid.lift` against the same placement in numpy (an einsum over the taps' tables, one term
    per entry), in both orders of its sum (`grid.lift_order`): the CPU's under `jit`, the TPU's op by
    op. The TPU's order under `jit` on the CPU is computed wrong by XLA's CPU compiler (max error
    4.9 on conv1's), which the first catches: the CPU keeps the swapped order."""
    if kind == "conv":
        taps = grid.conv_taps(fi, fo, stride, down=down)
    else:
        taps = grid.conv_transpose_taps(fi, fo, stride, 1, shape[0])
    kernel = jax.random.normal(jax.random.key(5), shape)
    assert (grid.lift_order("cpu"), grid.lift_order("tpu")) == ("swapped", "kernel")
    if order == "swapped":
        got, padding = jax.jit(lambda k: grid.lift(k, taps, taps, fi, fo))(kernel)
    else:
        with jax.disable_jit():
            got, padding = grid.lift(kernel, taps, taps, fi, fo, order="kernel")
    table, pad = grid._axis_table(taps, fi, fo, shape[0])
    want = np.einsum("yjak,xilm,kmco->yxcjioal", table, table, np.asarray(kernel))
    np.testing.assert_array_equal(got, want.reshape(got.shape))
    assert padding == (pad, pad)


def _pair():
    pixels = DMVFN(rngs=nnx.Rngs(0), layout="pixels", **TWO_SCALES)
    cells = DMVFN(rngs=nnx.Rngs(0), layout="cells", **TWO_SCALES)
    return pixels, cells


def test_the_model_over_cells_predicts_as_on_pixels():
    """Inference with per-sample gates (a block skipped for every sample too), batched and one
    sample at a time; the flow and mask it returns as well."""
    pixels, cells = _pair()
    a, b = _frames((2, 40, 48, 3))  # padded to 48x48 inside
    gates = jnp.array([[0, 1], [0, 1]], jnp.float32)  # block 0 skipped for every sample
    with jax.default_matmul_precision("highest"):
        for sequential in (False, True):
            infer = nnx.jit(lambda m, a, b, g, s=sequential: m.infer(a, b, g, sequential=s))
            want, got = infer(pixels, a, b, gates), infer(cells, a, b, gates)
            for name in ("prediction", "flow", "mask"):
                np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=TOL, rtol=0, err_msg=name)
    assert got.prediction.shape == (2, 40, 48, 3)


def test_training_over_cells_gives_the_outputs_and_gradients_of_pixels():
    pixels, cells = _pair()
    a, b = _frames((2, 32, 32, 3), seed=1)
    gates = jnp.array([[1, 0], [1, 1]], jnp.float32)

    def loss(m):
        outputs = m.train_outputs(a, b, gates)
        return sum(jnp.mean(o * (i + 1)) for i, o in enumerate(outputs)), outputs

    step = nnx.jit(nnx.value_and_grad(loss, has_aux=True))  # one program each, not op by op
    with jax.default_matmul_precision("highest"):
        (_, o_pixels), g_pixels = step(pixels)
        (_, o_cells), g_cells = step(cells)
    assert len(o_cells) == len(o_pixels) == 2
    for got, want in zip(o_cells, o_pixels):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    flat_p, flat_c = jax.tree.leaves(nnx.state(g_pixels)), jax.tree.leaves(nnx.state(g_cells))
    assert len(flat_p) == len(flat_c) > 0
    for gp, gc in zip(flat_p, flat_c):
        scale = max(float(jnp.max(jnp.abs(gp))), 1e-6)
        np.testing.assert_allclose(gc / scale, gp / scale, atol=TOL, rtol=0)


@pytest.mark.parametrize("form", ["einshape", "matmul"])
def test_the_tpu_relayout_kernels_are_the_transposes_and_each_others_gradient(form):
    from dmvfn_jax.models import tpu_relayout

    planes = jax.random.normal(jax.random.key(2), (2, 3, 16, 24))
    cells = tpu_relayout.to_cells(planes, True, form)
    np.testing.assert_array_equal(cells, grid.from_planes(planes))
    np.testing.assert_array_equal(tpu_relayout.to_planes(cells, True, form), planes)
    halves = planes.astype(jnp.bfloat16)
    np.testing.assert_array_equal(tpu_relayout.to_cells(halves, True, form), grid.from_planes(halves))
    g = jax.random.normal(jax.random.key(3), cells.shape)
    (back,) = jax.vjp(lambda p: tpu_relayout.to_cells(p, True, form), planes)[1](g)
    np.testing.assert_array_equal(back, grid.to_planes(g))
    (forth,) = jax.vjp(lambda c: tpu_relayout.to_planes(c, True, form), cells)[1](planes)
    np.testing.assert_array_equal(forth, grid.from_planes(planes))


@pytest.mark.slow
def test_the_relayout_kernels_compile_for_every_tpu_generation_the_plan_names():
    """Mosaic compiles each chip's form (`tpu_relayout.form_for`), forward and gradient, float32 and
    bfloat16: v4's Mosaic refuses the einshape form's lane-splitting reshape (the plan of a v4
    slice failed with it), so v4 gets the matmul form."""
    from dmvfn_jax.models import tpu_relayout
    from dmvfn_jax.planning import tpu

    forms = {}
    for topology in ("v4:2x2x1", "v5e:2x2", "v5p:2x2x1", "v6e:2x2"):
        replicated = tpu.one_chip(topology)
        with ops.compiling_for("tpu", next(iter(replicated.device_set))):
            forms[ops.device_kind()] = tpu_relayout.form_for(ops.device_kind())
            for dtype in (jnp.float32, jnp.bfloat16):
                planes = jax.ShapeDtypeStruct((2, 4, 64, 192), dtype)
                text = jax.jit(jax.grad(lambda p: jnp.sum(grid.planes_from_cells(grid.cells_from_planes(p)) ** 2)),
                               in_shardings=replicated, out_shardings=replicated).lower(planes).compile().as_text()
                assert text.count("tpu_custom_call") >= 4, topology  # both kernels, forward and back
    assert forms == {"TPU v4": "matmul", "TPU v5 lite": "einshape", "TPU v5": "einshape", "TPU v6 lite": "einshape"}


def test_the_model_over_cells_with_the_tpu_kernels_in_interpret_mode(monkeypatch):
    """The TPU's path through the model (the warp's and the relayouts' Pallas kernels), run in
    interpret mode on this CPU."""
    pixels, cells = _pair()
    a, b = _frames((1, 32, 32, 3), seed=4)
    infer = nnx.jit(lambda m, a, b: m.infer(a, b, None).prediction)
    with jax.default_matmul_precision("highest"):
        want = infer(pixels, a, b)
        monkeypatch.setattr(ops, "WARP_IMPL", "pallas_interpret")  # read while tracing
        got = infer(cells, a, b)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_the_pallas_kernels_run_compiled_on_a_tpu_and_interpreted_on_request(monkeypatch):
    """`ops.pallas_mode`, which the warp's and the relayouts' kernels follow (`grid._kernels`)."""
    monkeypatch.setattr(ops, "WARP_IMPL", None)
    assert ops.pallas_mode() is None and grid._kernels() is None  # this CPU: XLA's transposes
    with ops.compiling_for("tpu"):
        assert ops.pallas_mode() == "compiled"
    monkeypatch.setattr(ops, "WARP_IMPL", "pallas_interpret")
    assert ops.pallas_mode() == "interpret" and grid._kernels()[0] is True


def test_the_layout_is_chosen_per_platform():
    assert grid.choose_layout("tpu", 256, 256) == "cells"
    assert grid.choose_layout("cpu", 256, 256) == grid.choose_layout("gpu", 256, 256) == "pixels"
    assert grid.choose_layout("tpu", 2048, 4096) == "pixels"  # beyond the warp kernel's on-chip memory
    assert DMVFN(rngs=nnx.Rngs(0), **TWO_SCALES).layout_for(64, 64) == "pixels"  # this CPU
    with ops.compiling_for("tpu"):
        assert DMVFN(rngs=nnx.Rngs(0), **TWO_SCALES).layout_for(64, 64) == "cells"
    with pytest.raises(ValueError, match="layout must be None or one of"):
        DMVFN(rngs=nnx.Rngs(0), layout="nchw", **TWO_SCALES)
