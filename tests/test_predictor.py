"""Predictor: loading, RGB/BGR handling, input types, rollout, one compilation per shape, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import to_nchw, to_nhwc
from dmvfn_jax import Predictor, channels
from dmvfn_jax.image_io import FrameError, load_image


@pytest.fixture(scope="module")
def predictor(converted_dir):
    return Predictor.from_checkpoint(converted_dir)


@pytest.fixture(scope="module")
def sample_frames(real_data):
    return [load_image(real_data / f"official_sample_img_{i}.png") for i in (0, 1)]


def test_loads_metadata(predictor):
    assert predictor.channel_order == "BGR"
    assert predictor.metadata["architecture"] == "dmvfn"


def test_channel_reorder_is_its_own_inverse():
    x = np.arange(12).reshape(2, 2, 3)
    assert channels.reorder(x, "RGB") is x
    np.testing.assert_array_equal(channels.reorder(x, "BGR")[..., 0], x[..., 2])
    np.testing.assert_array_equal(channels.reorder(channels.reorder(x, "BGR"), "BGR"), x)
    with pytest.raises(ValueError, match="channel order must be one of"):
        channels.reorder(x, "bgr")


def test_matches_torch_oracle_on_real_frames_in_bgr(predictor, torch_model, sample_frames):
    """RGB in, RGB out, but the network sees BGR, as the official scripts feed it."""
    prev, cur = sample_frames
    got = predictor.predict(prev, cur, routing="all")
    assert got.shape == (256, 448, 3) and got.dtype == np.float32
    bgr = [f[None, ..., ::-1].astype(np.float32) / 255.0 for f in (prev, cur)]
    with torch.no_grad():
        want = to_nhwc(torch_model.forward_infer(to_nchw(bgr[0]), to_nchw(bgr[1]), torch.ones(1, 9)))[0]
    np.testing.assert_allclose(got, want[..., ::-1], rtol=0, atol=1e-4)


def test_input_types_agree(predictor, sample_frames):
    prev, cur = sample_frames
    from_uint8 = predictor.predict(prev, cur)
    from_float = predictor.predict(prev / 255.0, cur.astype(np.float32) / 255.0)
    from_pil = predictor.predict(Image.fromarray(prev), Image.fromarray(cur))
    np.testing.assert_allclose(from_float, from_uint8, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(from_pil, from_uint8)


def test_batched_predict_and_rollout(predictor, sample_frames):
    prev, cur = sample_frames
    one = predictor.predict(prev, cur, routing="threshold")
    batch = predictor.predict(np.stack([prev, cur]), np.stack([cur, prev]), routing="threshold")
    assert batch.shape == (2, 256, 448, 3)
    np.testing.assert_allclose(batch[0], one, rtol=0, atol=1e-5)

    roll = predictor.rollout([prev, cur], steps=3)
    assert roll.shape == (3, 256, 448, 3)
    np.testing.assert_array_equal(roll[0], one)
    np.testing.assert_allclose(roll[1], predictor.predict(cur, roll[0]), rtol=0, atol=1e-6)
    roll_b = predictor.rollout(np.stack([np.stack([prev, cur])] * 2), steps=2)
    assert roll_b.shape == (2, 2, 256, 448, 3)
    np.testing.assert_allclose(roll_b[1], roll[:2], rtol=0, atol=1e-5)


def test_compiles_once_per_shape(converted_dir):
    """One program per input shape, whatever the routing: the choice is data, not a constant."""
    p = Predictor.from_checkpoint(converted_dir)
    a, b = np.random.default_rng(0).random((2, 40, 56, 3), dtype=np.float32)
    p.predict(a, b)
    p.predict(b, a)
    assert p.trace_count == 1
    for routing in ("all", "sample", np.ones(9)):
        p.predict(a, b, routing=routing)
    assert p.trace_count == 1
    p.rollout([a, b], steps=3)
    assert p.trace_count == 1
    p.predict(a[:32], b[:32])
    assert p.trace_count == 2


def test_sampled_routing_is_seeded_and_explicit_gates_work(predictor, sample_frames):
    prev, cur = sample_frames
    s1 = predictor.predict(prev, cur, routing="sample", seed=7)
    s2 = predictor.predict(prev, cur, routing="sample", seed=7)
    np.testing.assert_array_equal(s1, s2)
    all_blocks = predictor.predict(prev, cur, routing="all")
    np.testing.assert_allclose(predictor.predict(prev, cur, routing=np.ones(9)), all_blocks, rtol=0, atol=1e-6)
    res = predictor.predict_full(prev, cur, routing=np.array([1, 0, 0, 0, 0, 0, 0, 0, 1]))
    np.testing.assert_array_equal(np.asarray(res.gates), [[1, 0, 0, 0, 0, 0, 0, 0, 1]])


@pytest.mark.parametrize(
    "prev,cur,match",
    [
        (np.zeros((32, 32, 3), np.uint8), np.zeros((32, 48, 3), np.uint8), "differ in shape"),
        (np.zeros((32, 32, 1), np.uint8), np.zeros((32, 32, 1), np.uint8), "prev: has 1 channels"),
        (np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 4), np.uint8), "cur: has 4 channels"),
        (np.full((32, 32, 3), np.nan, np.float32), np.zeros((32, 32, 3), np.float32), "prev: contains NaN"),
        (np.zeros((32, 32, 3), np.float32), np.full((32, 32, 3), 255.0, np.float32), r"cur: float values span"),
        (np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8), "prev: expected an"),
        (np.zeros((32, 32, 3), np.int32), np.zeros((32, 32, 3), np.int32), "dtype int32"),
    ],
)
def test_bad_inputs_are_named(predictor, prev, cur, match):
    with pytest.raises(FrameError, match=match):
        predictor.predict(prev, cur)


def test_rollout_errors(predictor):
    f = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(FrameError, match="at least 2"):
        predictor.rollout([f], steps=1)
    with pytest.raises(ValueError, match="steps"):
        predictor.rollout([f, f], steps=0)
    with pytest.raises(FrameError, match="differ in shape"):
        predictor.rollout([f, np.zeros((16, 32, 3), np.uint8)], steps=1)


def test_missing_checkpoint_is_named(tmp_path):
    from dmvfn_jax.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="nowhere"):
        Predictor.from_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a dmvfn-jax checkpoint"):
        Predictor.from_checkpoint(tmp_path / "empty")


def test_the_routings_rescaling_is_recorded_and_read_back(tmp_path):
    """A model trained with the routing's options (`routing.rescale=False`, `routing.inputs=
    "difference"`) loads with them; checkpoints written before the options (converted official
    weights) load with the official ones; a bad value is named."""
    import json

    import jax
    from flax import nnx

    from conftest import SMALL_MODEL
    from dmvfn_jax import checkpoint as ckpt
    from dmvfn_jax.models.dmvfn import DMVFN
    from dmvfn_jax.checkpoint import load_dmvfn
    from dmvfn_jax.train.checkpoints import export_model

    model = DMVFN(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), routing_rescale=False, routing_inputs="difference",
                  **SMALL_MODEL)
    graphdef, params = nnx.split(model)
    path = export_model(params, graphdef, tmp_path / "free", "RGB")
    loaded, meta = load_dmvfn(path)
    assert meta["routing_rescale"] is False and meta["routing_inputs"] == "difference"
    assert loaded.routing_options == {"routing_rescale": False, "routing_inputs": "difference"}
    frames = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded.routing_probs(frames, frames[::-1])),
                                  np.asarray(model.routing_probs(frames, frames[::-1])))
    meta_file = path / ckpt.METADATA_FILE
    old = json.loads(meta_file.read_text())
    del old["routing_rescale"], old["routing_inputs"]
    meta_file.write_text(json.dumps(old))
    assert load_dmvfn(path)[0].routing_options == {"routing_rescale": True, "routing_inputs": "frames"}
    meta_file.write_text(json.dumps({**old, "routing_rescale": "no"}))
    with pytest.raises(ckpt.CheckpointError, match=r"free.*routing_rescale must be true or false"):
        load_dmvfn(path)
    meta_file.write_text(json.dumps({**old, "routing_inputs": "flow"}))
    with pytest.raises(ckpt.CheckpointError, match=r"free.*routing_inputs must be one of"):
        load_dmvfn(path)
