"""The routing report (`dmvfn_jax.evaluation.routing_report`): it tells gates that depend on the
input from one fixed pattern, from constructed gates and from a model's own threshold routing."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_dmvfn
from dmvfn_jax.evaluation.routing_report import (SHIFT, format_routing_report, probe_pairs, routing_report,
                                                 threshold_gates)


def test_a_fixed_pattern_is_reported_as_input_independent():
    gates = np.tile([1, 1, 0, 0, 0, 0, 1, 0, 0], (12, 1))
    motion = np.linspace(0, 1, 12)
    r = routing_report(gates, motion, ["still"] * 4 + ["moving"] * 8)
    assert r["distinct_patterns"] == 1 and r["most_common_pattern"] == "110000100" and r["most_common_share"] == 1
    assert r["blocks"] == {"mean": 3.0, "std": 0.0, "min": 3, "max": 3, "histogram": [0, 0, 0, 12, 0, 0, 0, 0, 0, 0]}
    assert r["motion_spearman"] is None and r["blocks_by_motion_third"] == [3.0, 3.0, 3.0]
    assert r["by_kind"]["still"]["mean_blocks"] == r["by_kind"]["moving"]["mean_blocks"] == 3.0
    assert not r["input_dependent"]
    assert "do NOT depend on the input" in format_routing_report(r)


def test_gates_that_grow_with_motion_are_reported_with_their_spread_and_trend():
    motion = np.array([0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    gates = np.array([[1] * k + [0] * (9 - k) for k in (2, 2, 2, 4, 5, 6, 7, 8, 9)])
    r = routing_report(gates, motion, ["still"] * 3 + ["moving"] * 6)
    assert r["input_dependent"] and r["distinct_patterns"] == 7
    assert r["blocks"]["min"] == 2 and r["blocks"]["max"] == 9 and r["blocks"]["std"] > 2
    assert r["motion_spearman"] == pytest.approx(1.0)  # ties in motion and blocks alike
    assert r["blocks_by_motion_third"] == [2.0, 5.0, 8.0]
    assert r["by_kind"]["moving"]["mean_blocks"] - r["by_kind"]["still"]["mean_blocks"] == pytest.approx(6.5 - 2)
    assert r["block_rates"][0] == 1.0 and r["block_rates"][8] == pytest.approx(1 / 9)
    text = format_routing_report(r)
    assert "Spearman +1.00" in text and "still 2.00 (3)" in text and "the gates depend on the input" in text


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"gates \(N, n\) and motion \(N,\)"):
        routing_report(np.ones((4, 9)), np.ones(3))
    with pytest.raises(ValueError, match="3 kinds for 4 pairs"):
        routing_report(np.ones((4, 9)), np.ones(4), ["still"] * 3)
    with pytest.raises(ValueError, match=r"clips \(N, T >= 2, H, W, 3\)"):
        probe_pairs(np.zeros((2, 1, 8, 8, 3)))


def test_probe_pairs_are_the_clip_still_and_shifted():
    rng = np.random.default_rng(0)
    clips = rng.random((2, 3, 8, 16, 3)).astype(np.float32)
    p = probe_pairs(clips)
    assert p.kinds == ["moving"] * 2 + ["still"] * 2 + ["shifted"] * 2
    np.testing.assert_array_equal(p.img0[:2], clips[:, 0])
    np.testing.assert_array_equal(p.img1[:2], clips[:, 1])
    np.testing.assert_array_equal(p.img0[2:4], p.img1[2:4])
    np.testing.assert_array_equal(p.img1[4:, :, SHIFT:], clips[:, 1, :, :-SHIFT])  # moved right, edge repeated
    np.testing.assert_array_equal(p.img1[4:, :, :SHIFT], np.repeat(clips[:, 1, :, :1], SHIFT, axis=2))
    assert np.all(p.motion[2:4] == 0) and np.all(p.motion[:2] > 0) and np.all(p.motion[4:] > 0)


def test_threshold_gates_are_the_models_own():
    model = small_dmvfn()
    rng = np.random.default_rng(1)
    a, b = (rng.random((5, 32, 32, 3)).astype(np.float32) for _ in range(2))
    got = threshold_gates(model, a, b, batch=2)  # across batches
    want = model.predict(jnp.asarray(a), jnp.asarray(b), "threshold").gates
    np.testing.assert_array_equal(got, np.asarray(want).astype(np.int32))


def test_the_demo_evaluation_writes_the_routing_report_and_scores_as_eval_py(tmp_path):
    import configs.demo
    from dmvfn_jax.data.sources import heldout_synthetic, synthetic_options
    from dmvfn_jax.evaluation.heldout import evaluate_heldout

    c = configs.demo.get_config()
    c.eval.num_clips, c.eval.num_frames, c.eval.save_clips = 3, 4, 0
    c.data.height, c.data.width = 32, 32
    evaluate_heldout(small_dmvfn(), c, tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    r = res["routing_report"]
    assert r["pairs"] == 9 and set(r["by_kind"]) == {"moving", "still", "shifted"}
    assert r["by_kind"]["still"]["mean_motion"] == 0
    assert "routing (threshold gates) on 9 held-out pairs" in (tmp_path / "results.md").read_text()
    # copy-last-frame's PSNR per step, from the held-out clips themselves
    clips = heldout_synthetic(c.data.seed, 3, 4, 32, 32, **synthetic_options(c.data)).astype(np.float64) / 255
    mse = np.mean((clips[:, 1:2] - clips[:, 2:]) ** 2, axis=(2, 3, 4))  # (clips, steps)
    np.testing.assert_allclose(res["results"]["copy_last"]["psnr"]["per_step"], np.mean(-10 * np.log10(mse), 0),
                               rtol=1e-5)
