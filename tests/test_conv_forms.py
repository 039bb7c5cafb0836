"""The formulations of the 17-channel convs (`mvfb.FORMS`) against the plain conv: values and both
gradients at the shapes the model uses them at, and the whole model in each form.

Tolerance: the forms add the same products in another order (float32, highest precision), so
values agree to 1e-5 relative to their scale (atol 1e-5 on outputs of order 1) and gradients to
rtol 1e-5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dmvfn_jax.models import DMVFN, mvfb

FORMS = [f for f in mvfb.FORMS if f != "plain"]


def _group(b, h, w, blocks, cout, seed=0):
    """Frames (6 channels), the blocks' other 11 channels and their kernels, PyTorch-init scale."""
    rng = np.random.default_rng(seed)
    frames = jnp.asarray(rng.random((b, h, w, 6), dtype=np.float32))
    rests = [jnp.asarray(rng.standard_normal((b, h, w, 11), dtype=np.float32)) for _ in range(blocks)]
    bound = 1 / (17 * 9) ** 0.5
    kernels = [jnp.asarray(rng.uniform(-bound, bound, (3, 3, 17, cout)).astype(np.float32)) for _ in range(blocks)]
    return frames, rests, kernels


# (B, H, W, out channels, blocks): conv1 (out 8) and conv0[0] at scales 1, 2 (22, 40 channels)
# at 256x448 batch 1, the inference size the CPU choice is made at
INFERENCE_SHAPES = [(1, 256, 448, 8, 9), (1, 256, 448, 22, 3), (1, 128, 224, 40, 3), (1, 64, 112, 80, 3)]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("b,h,w,cout,blocks", INFERENCE_SHAPES)
def test_form_values(form, b, h, w, cout, blocks):
    frames, rests, kernels = _group(b, h, w, blocks, cout)
    with jax.default_matmul_precision("highest"):
        want = jax.jit(lambda f, r, k: mvfb.convs_over_frames("plain", f, r, k))(frames, rests, kernels)
        got = jax.jit(lambda f, r, k: mvfb.convs_over_frames(form, f, r, k))(frames, rests, kernels)
    assert [g.shape for g in got] == [(b, h // 2, w // 2, cout)] * blocks
    for i, (g, x) in enumerate(zip(got, want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(x), rtol=0, atol=1e-5, err_msg=f"{form}, conv {i}")


_PLAIN_GRADS = {}


def _group_grads(form, cout):
    """Kernel and input gradients of two convs' outputs against random cotangents, at the
    training size (8x256x256; the frames get none in the model, so the input gradient is the
    11 channels')."""
    frames, rests, kernels = _group(8, 256, 256, 2, cout)
    gs = [jnp.asarray(np.random.default_rng(i).standard_normal((8, 128, 128, cout), dtype=np.float32))
          for i in range(2)]
    loss = lambda k, r: sum(jnp.vdot(y, g) for y, g in zip(mvfb.convs_over_frames(form, frames, r, k), gs))  # noqa: E731
    with jax.default_matmul_precision("highest"):
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(kernels, rests)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cout", [8, 22])
def test_form_gradients(form, cout):
    if cout not in _PLAIN_GRADS:
        _PLAIN_GRADS[cout] = _group_grads("plain", cout)
    want, got = _PLAIN_GRADS[cout], _group_grads(form, cout)
    for name, g, x in zip(("kernel", "input"), got, want):
        for i, (a, c) in enumerate(zip(g, x)):
            scale = float(jnp.abs(c).max())
            np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=0, atol=1e-5 * scale,
                                       err_msg=f"{form}: {name} gradient of conv {i}")


def test_frames_convs_takes_the_frame_channels():
    """The stacked conv uses channels 0-5 of each kernel: a kernel that is zero there gives zero."""
    frames, _, kernels = _group(1, 32, 32, 2, 8)
    kernels[1] = kernels[1].at[:, :, :6].set(0.0)
    parts = mvfb.frames_convs(frames, kernels)
    assert float(jnp.abs(parts[0]).max()) > 0.1 and float(jnp.abs(parts[1]).max()) == 0.0


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return [jnp.asarray(rng.random((1, 64, 96, 3), dtype=np.float32)) for _ in range(2)]


def _model_outputs(form, a, b):
    # three narrow blocks, one per scale, so that every group of frame parts is there and the
    # compile is short; the full network in the CPU form is what tests/test_model_parity.py checks.
    # An rbg key: its initialisers compile in a third of the default key's time.
    model = DMVFN(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), widths=(16, 12, 8), scales=(4, 2, 1), conv_form=form)
    gates = jnp.asarray([[1, 0, 1]], jnp.float32)
    graphdef, params = nnx.split(model, nnx.Param)
    infer = jax.jit(lambda p: nnx.merge(graphdef, p).infer(a, b, gates).prediction)
    loss = lambda p: sum(jnp.mean(o) for o in nnx.merge(graphdef, p).train_outputs(a, b, gates))  # noqa: E731
    return infer(params), jax.jit(jax.grad(loss))(params)


@pytest.mark.slow
def test_model_forms_agree(frames):
    """The model in the CPU form against the plain model: predictions and the gradients of every
    parameter. (The other forms differ from it only in `mvfb.frame_parts`, tested above conv by
    conv; the full network in the form it chooses is what tests/test_model_parity.py checks.)"""
    with jax.default_matmul_precision("highest"):
        want_pred, want_grad = _model_outputs("plain", *frames)
        for form in (mvfb.CPU_FORM,):
            pred, grad = _model_outputs(form, *frames)
            np.testing.assert_allclose(np.asarray(pred), np.asarray(want_pred), rtol=0, atol=1e-5, err_msg=str(form))
            for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(grad), jax.tree.leaves(want_grad)):
                scale = float(jnp.abs(w).max())
                np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=1e-5 * scale + 1e-12,
                                           err_msg=f"{form}: {jax.tree_util.keystr(path)}")


def test_choice_per_backend_and_size():
    assert mvfb.choose_form("gpu", 8, 256, 256) == mvfb.choose_form("tpu", 1, 512, 1024) == "plain"
    assert mvfb.choose_form("cpu", 1, 512, 1024) == mvfb.choose_form("cpu", 8, 256, 256) == mvfb.CPU_FORM
    assert mvfb.choose_form("cpu", 1, 256, 448) == "plain"
    assert mvfb.choose_form("cpu", 1, 256, 832) == mvfb.CPU_FORM
    assert mvfb.CPU_FORM in mvfb.FORMS


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="conv_form must be None or one of"):
        DMVFN(rngs=nnx.Rngs(0), conv_form="fast")
    with pytest.raises(ValueError, match="form must be one of"):
        mvfb.convs_over_frames("fast", *_group(1, 8, 8, 1, 8))


def test_a_call_fixes_the_form_without_changing_the_model():
    """`infer(..., conv_form=...)` (and `predict`'s) traces that form whatever the model's, as the
    exports and the FLOP counts need; the model keeps its own."""
    make = lambda form: DMVFN(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), widths=(16, 12, 8), scales=(4, 2, 1),  # noqa: E731
                              conv_form=form)
    model, plain = make(mvfb.CPU_FORM), make("plain")
    a = jnp.zeros((1, 64, 96, 3), jnp.float32)
    traced = lambda m, **kw: str(jax.make_jaxpr(lambda x, y: m.predict(x, y, "all", **kw).prediction)(a, a))  # noqa: E731
    assert traced(model, conv_form="plain") == traced(plain) != traced(model)
    assert model.conv_form == mvfb.CPU_FORM
    with pytest.raises(ValueError, match="conv_form must be None or one of"):
        model.infer(a, a, None, conv_form="fast")
