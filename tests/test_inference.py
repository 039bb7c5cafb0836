"""Inference semantics: real block skipping under jit, per-sample gates, any frame size."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import random_frames, small_dmvfn
from dmvfn_jax.models import mvfb, ops


@functools.partial(nnx.jit, static_argnames=("sequential", "first_decides"))
def infer(model, a, b, gates=None, sequential=None, first_decides=False):
    """`model.infer` as one compiled program: op by op, the nine blocks cost hundreds of small
    compiles (the semantics are the same; the block skipping under jit is tested below)."""
    return model.infer(a, b, gates, sequential=sequential, first_decides=first_decides)


@nnx.jit
def train_outputs(model, a, b, gates):
    return model.train_outputs(a, b, gates)


@pytest.fixture
def block_calls(monkeypatch):
    """Counts MVFB executions at run time (a debug callback inside the block)."""
    calls = []
    original = mvfb.MVFB.__call__

    def counted(self, *args, **kwargs):
        jax.debug.callback(lambda: calls.append(1))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mvfb.MVFB, "__call__", counted)
    return calls


@pytest.mark.parametrize("sequential", [False, True])
def test_skipped_blocks_spend_no_compute_under_jit(jax_model, block_calls, sequential):
    """Batched: a block runs once for the batch when any sample needs it. Sequential (the CPU
    default for batches > 1): each sample runs only its own blocks."""
    graphdef, state = nnx.split(jax_model)
    infer = jax.jit(lambda s, a, b, g: nnx.merge(graphdef, s).infer(a, b, g, sequential=sequential).prediction)
    a, b = random_frames(0, 2, 32, 32)
    g = np.zeros((2, 9), np.float32)
    g[0, [0, 4]] = 1  # blocks 0 and 4 for sample 0
    g[1, [4, 8]] = 1  # blocks 4 and 8 for sample 1
    jax.block_until_ready(infer(state, a, b, g))
    # batched: blocks 0, 4, 8 ran once each; sequential: 0 and 4 for sample 0, 4 and 8 for sample 1
    assert len(block_calls) == (4 if sequential else 3)
    block_calls.clear()
    jax.block_until_ready(infer(state, a, b, np.zeros((2, 9), np.float32)))  # same compiled function
    assert len(block_calls) == 0
    block_calls.clear()
    jax.block_until_ready(infer(state, a, b, np.ones((2, 9), np.float32)))
    assert len(block_calls) == (18 if sequential else 9)


@pytest.mark.parametrize("routing", ["all", "gates"])
def test_sequential_and_batched_inference_agree(jax_model, routing):
    a, b = random_frames(4, 3, 32, 48)
    g = None if routing == "all" else np.array([[1, 0, 1, 0, 1, 0, 1, 0, 1], [0] * 9, [1] * 9], np.float32)
    seq = infer(jax_model, a, b, g, sequential=True)
    bat = infer(jax_model, a, b, g, sequential=False)
    for x, y in zip(seq, bat):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-5)


def test_gates_apply_per_sample(jax_model):
    graphdef, state = nnx.split(jax_model)
    infer = jax.jit(lambda s, a, b, g: nnx.merge(graphdef, s).infer(a, b, g).prediction)
    a, b = random_frames(1, 2, 32, 48)
    g = np.array([[1, 1, 0, 0, 1, 0, 0, 1, 1], [0, 0, 1, 1, 0, 1, 1, 0, 0]], np.float32)
    both = np.asarray(infer(state, a, b, g))
    for i in range(2):
        alone = np.asarray(infer(state, a[i : i + 1], b[i : i + 1], g[i : i + 1]))
        np.testing.assert_allclose(both[i : i + 1], alone, rtol=0, atol=1e-5)
    assert np.abs(both[0] - both[1]).max() > 1e-3  # the two samples really took different paths


def test_first_decides_is_the_official_quirk(jax_model):
    a, b = random_frames(2, 2, 32, 32)
    g = np.array([[1, 0, 0, 0, 0, 0, 1, 0, 0], [0, 1, 1, 1, 1, 1, 0, 1, 1]], np.float32)
    quirk = np.asarray(infer(jax_model, a, b, g, first_decides=True).prediction)
    sample1_with_g0 = np.asarray(infer(jax_model, a[1:], b[1:], g[:1]).prediction)
    np.testing.assert_allclose(quirk[1:], sample1_with_g0, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def small_model():
    return small_dmvfn()


@pytest.mark.parametrize("h,w", [(50, 70), (17, 33)])
def test_any_frame_size_pads_and_crops(small_model, h, w):
    """Of the suite's small model: the padding to multiples of 16 and the crop are the model's
    whatever its blocks (six compiles of the nine took about 24 s of the suite)."""
    a, b = random_frames(3, 1, h, w)
    res = infer(small_model, jnp.asarray(a), jnp.asarray(b))
    assert res.prediction.shape == (1, h, w, 3) and res.flow.shape == (1, h, w, 4)
    pa, pb = ops.pad_to_multiple(jnp.asarray(a), 16), ops.pad_to_multiple(jnp.asarray(b), 16)
    padded = infer(small_model, pa, pb).prediction
    np.testing.assert_allclose(np.asarray(res.prediction), np.asarray(padded)[:, :h, :w], rtol=0, atol=1e-6)
    outs = train_outputs(small_model, a, b, np.ones((1, small_model.num_blocks), np.float32))
    assert len(outs) == small_model.num_blocks and all(o.shape == (1, h, w, 3) for o in outs)


def test_davis_frame_size_runs(jax_model):
    a, b = random_frames(4, 1, 480, 854)
    pred = jax.jit(lambda a, b: jax_model.predict(a, b, "threshold").prediction)(a, b)
    pred = np.asarray(pred)
    assert pred.shape == (1, 480, 854, 3)
    assert np.isfinite(pred).all() and pred.min() >= 0 and pred.max() <= 1


def test_inference_result_carries_flow_mask_and_gates(jax_model):
    a, b = random_frames(5, 2, 32, 32)
    res = jax_model.predict(a, b, "threshold")
    v = np.asarray(jax_model.routing_probs(a, b))
    np.testing.assert_array_equal(np.asarray(res.gates), (v >= 0.5).astype(np.float32))
    m = np.asarray(res.mask)
    assert m.shape == (2, 32, 32, 1) and m.min() >= 0 and m.max() <= 1


def test_bad_frames_are_named(jax_model):
    with pytest.raises(ValueError, match=r"\(1, 32, 32, 3\) and \(1, 32, 48, 3\)"):
        jax_model.infer(jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 48, 3)))
    with pytest.raises(ValueError, match="empty"):
        jax_model.infer(jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 32, 3)), empty="last")
