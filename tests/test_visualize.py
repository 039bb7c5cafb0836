"""dmvfn_jax.visualize: the flow colour wheel, error and mask maps, strips, GIF and MP4 writing,
and the pictures that training and the demo evaluation write with it."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from dmvfn_jax import visualize as viz


def one_vector(u, v, max_norm=None):
    return viz.flow_to_color(np.array([[[u, v]]], np.float32), max_norm)[0, 0].astype(int)


# -- flow colours ----------------------------------------------------------------------------
def test_wheel_has_the_55_colours_of_the_six_segments():
    wheel = viz.color_wheel()
    assert wheel.shape == (55, 3)
    # segment starts: red, yellow, green, cyan, blue, magenta at RY=15, YG=6, GC=4, CB=11, BM=13, MR=6
    starts = {0: (1, 0, 0), 15: (1, 1, 0), 21: (0, 1, 0), 25: (0, 1, 1), 36: (0, 0, 1), 49: (1, 0, 1)}
    for i, rgb in starts.items():
        np.testing.assert_allclose(wheel[i], rgb, err_msg=str(i))
    # inside a segment exactly one channel ramps, by 1 / length per colour
    np.testing.assert_allclose(wheel[1:15, 1], np.arange(1, 15) / 15)
    np.testing.assert_allclose(wheel[37:49, 0], np.arange(1, 13) / 13)
    np.testing.assert_allclose(wheel[50:, 2], 1 - np.arange(1, 6) / 6)


def test_cardinal_directions_have_the_literature_colours():
    """Image coordinates (y down): right red, down yellow, left cyan, up blue-violet."""
    assert one_vector(1, 0).tolist() == [255, 0, 0]
    assert one_vector(0, 1).tolist() == [255, 234, 0]  # 13.75 / 15 of the way from red to yellow
    assert one_vector(-1, 0).tolist() == [0, 197, 255]  # 2.5 / 11 of the way from cyan to blue
    assert one_vector(0, -1).tolist() == [103, 0, 255]  # 5.25 / 13 of the way from blue to magenta
    assert one_vector(1, -0.0).tolist() == [255, 0, 0]  # the sign of a zero does not flip the seam


def test_zero_is_white_length_desaturates_and_max_norm_saturates():
    assert one_vector(0, 0, 5.0).tolist() == [255, 255, 255]
    full = one_vector(-3, 0, 3.0)
    half = one_vector(-1.5, 0, 3.0)
    np.testing.assert_allclose(half, (255 + full) / 2, atol=1)
    # at and beyond max_norm: the pure wheel colour, never darker
    assert one_vector(-30, 0, 3.0).tolist() == full.tolist()
    assert one_vector(-3, 0, 3.0).tolist() == one_vector(-1, 0).tolist()
    # default scale: the largest length of the flow itself, so scaling the flow changes nothing
    flow = np.random.default_rng(0).normal(size=(2, 5, 7, 2))
    np.testing.assert_array_equal(viz.flow_to_color(flow), viz.flow_to_color(flow * 7.5))
    assert viz.flow_to_color(flow).shape == (2, 5, 7, 3) and viz.flow_to_color(flow).dtype == np.uint8
    np.testing.assert_array_equal(viz.flow_to_color(np.zeros((3, 4, 2))), 255)
    nan = np.array([[[np.nan, 1.0], [1.0, 0.0]]])
    assert viz.flow_to_color(nan)[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 2\)"):
        viz.flow_to_color(np.zeros((4, 4, 3)))


def test_colour_changes_smoothly_around_the_wheel():
    angles = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    flow = np.stack([np.cos(angles), np.sin(angles)], -1)[None]
    col = viz.flow_to_color(flow, 1.0)[0].astype(int)
    step = np.abs(np.diff(np.concatenate([col, col[:1]]), axis=0)).max()
    assert step <= 3  # no seam anywhere, including where the wheel wraps from magenta to red
    assert len({tuple(c) for c in col}) > 500


def test_flow_key_shows_the_wheel_around_a_white_centre():
    key = viz.flow_key(65)
    assert key.shape == (65, 65, 3)
    assert key[32, 32].tolist() == [255, 255, 255]
    assert key[32, 64].tolist() == [255, 0, 0]  # right edge: motion to the right
    assert key[64, 32].tolist() == [255, 234, 0]  # bottom edge: motion down
    assert key[0, 0].tolist() == [255, 255, 255]  # outside the disc


# -- error, mask, blocks -------------------------------------------------------------------------
def test_error_map_is_black_at_zero_and_white_at_one_over_gain():
    gt = np.full((4, 6, 3), 0.5, np.float32)
    pred = gt.copy()
    pred[0, 0] += 0.25  # mean abs error 0.25 = 1 / gain
    pred[0, 1, 0] += 0.25  # mean abs error 0.25 / 3
    m = viz.error_map(pred, gt, gain=4.0)
    assert m.shape == (4, 6, 3) and m.dtype == np.uint8
    assert m[1, 1].tolist() == [0, 0, 0] and m[0, 0].tolist() == [255, 255, 255]
    assert m[0, 1].tolist() == [255, 0, 0]  # a third of the range: full red
    # uint8 inputs mean the same as floats
    p8, g8 = np.full((2, 2, 3), 100, np.uint8), np.full((2, 2, 3), 100, np.uint8)
    p8[0, 0] = 164
    np.testing.assert_array_equal(viz.error_map(p8, g8), viz.error_map(p8 / 255.0, g8 / 255.0))
    assert viz.error_map(p8, g8)[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="differ in shape"):
        viz.error_map(pred, gt[:2])


def test_mask_map_is_grey():
    m = viz.mask_map(np.array([[0.0, 0.5, 1.0]])[..., None])
    assert m.shape == (1, 3, 3) and m[0, :, 0].tolist() == [0, 128, 255] and (m[..., 0] == m[..., 2]).all()
    with pytest.raises(ValueError):
        viz.mask_map(np.zeros((2, 2, 2)))


def test_gates_panel_fills_the_blocks_that_ran():
    green = np.array([46, 160, 67])

    def greens(g):
        p = viz.gates_panel(np.array(g), 120, 360)
        assert p.shape == (120, 360, 3) and p.dtype == np.uint8
        return int((np.abs(p.astype(int) - green).sum(-1) == 0).sum())

    none, one, five = greens([0] * 9), greens([1] + [0] * 8), greens([1, 0, 1, 0, 1, 0, 1, 0, 1])
    assert none == 0 and one > 0 and 4 * one < five < 6 * one  # the digits cover a little of each cell


# -- strips ----------------------------------------------------------------------------------
def test_image_strip_places_panels_side_by_side_and_in_rows():
    rng = np.random.default_rng(1)
    panels = [rng.integers(0, 256, (10, 20, 3), dtype=np.uint8) for _ in range(3)]
    s = viz.image_strip(panels, gap=4)
    assert s.shape == (10, 3 * 20 + 2 * 4, 3) and s.dtype == np.uint8
    for i, p in enumerate(panels):
        np.testing.assert_array_equal(s[:, i * 24:i * 24 + 20], p)
    assert (s[:, 20:24] == 255).all()
    g = viz.image_strip(panels, columns=2, gap=4)
    assert g.shape == (2 * 10 + 4, 2 * 20 + 4, 3)
    np.testing.assert_array_equal(g[14:24, 0:20], panels[2])
    # labels add a band above each row; grey and float panels are converted
    lab = viz.image_strip([panels[0], np.zeros((10, 20)), np.ones((10, 20, 1), np.float32)], ["a", "b", "c"])
    band = lab.shape[0] - 10
    assert band > 0 and lab.shape[1] == 68
    np.testing.assert_array_equal(lab[band:, :20], panels[0])
    assert (lab[band:, 24:44] == 0).all() and (lab[band:, 48:68] == 255).all()
    assert (lab[:band] < 128).any()  # the text is drawn
    # different sizes are centred in a cell of the largest size
    c = viz.image_strip([np.zeros((4, 4, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)], gap=0)
    assert c.shape == (8, 16, 3) and (c[2:6, 2:6] == 0).all() and c[0, 0].tolist() == [255, 255, 255]
    # small panels can be enlarged by a whole factor
    big = viz.image_strip([panels[0]], min_height=25)
    np.testing.assert_array_equal(big, np.repeat(np.repeat(panels[0], 3, 0), 3, 1))
    with pytest.raises(ValueError, match="3 panels but 2 labels"):
        viz.image_strip(panels, ["a", "b"])


def test_prediction_strip_has_every_panel():
    rng = np.random.default_rng(2)
    h, w = 32, 48
    prev, cur, pred, gt = (rng.random((h, w, 3), dtype=np.float32) for _ in range(4))
    flow = np.zeros((h, w, 4), np.float32)
    flow[..., 0] = 2.0  # flow to t-1 points right: red; flow to t is zero: white
    mask = np.full((h, w, 1), 0.25, np.float32)
    gates = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1])
    panels, labels = viz.prediction_panels(prev, cur, pred, flow, mask, gates, target=gt)
    assert labels == ["frame t-1", "frame t", "prediction t+1", "ground truth t+1", "|error| x4", "flow to t-1",
                      "flow to t", "mask (white: t-1)", "blocks", "flow key (2.0 px)"]
    assert all(p.shape == (h, w, 3) for p in panels)
    assert (panels[5] == [255, 0, 0]).all() and (panels[6] == 255).all() and (panels[7] == 64).all()
    np.testing.assert_array_equal(panels[2], viz.as_image(pred))
    no_gt, no_gt_labels = viz.prediction_panels(prev, cur, pred, flow, mask, gates)
    assert len(no_gt) == 8 and "ground truth t+1" not in no_gt_labels
    strip = viz.prediction_strip(prev, cur, pred, flow, mask, gates, target=gt, min_height=0)
    band = strip.shape[0] // 2 - h - 2
    assert strip.shape == (2 * (band + h) + 4, 5 * w + 4 * 4, 3)
    np.testing.assert_array_equal(strip[band:band + h, 2 * (w + 4):2 * (w + 4) + w], viz.as_image(pred))
    # frames lower than min_height are drawn enlarged (by 4 here)
    assert viz.prediction_strip(prev, cur, pred, flow, mask, gates, min_height=128).shape[1] == 5 * 4 * w + 16


def test_rollout_frames_put_predictions_beside_truth():
    ctx = [np.zeros((8, 10, 3), np.uint8)] * 2
    preds = [np.ones((8, 10, 3), np.float32)] * 3
    frames = viz.rollout_frames(ctx, preds, preds[:2], min_height=0)
    assert len(frames) == 5 and len({f.shape for f in frames}) == 1 and frames[0].shape[1] == 24
    alone = viz.rollout_frames(ctx, preds, min_height=0)
    assert len(alone) == 5 and alone[0].shape[1] == 10
    assert viz.rollout_frames(ctx, preds)[0].shape[1] == 16 * 10  # 8-pixel frames drawn 16x by default


# -- writers ---------------------------------------------------------------------------------
def moving_frames(n=7, h=48, w=64):
    """A smooth colour pattern that moves 3 px right per frame (easy on the codec)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for t in range(n):
        x = xx - 3 * t
        out.append(np.stack([0.5 + 0.4 * np.sin(x / 9), 0.5 + 0.4 * np.cos(yy / 7), 0.5 + 0.3 * np.sin((x + yy) / 13)], -1))
    return [np.clip(f, 0, 1).astype(np.float32) for f in out]


def decode(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[..., ::-1].astype(np.float32) / 255)
    cap.release()
    return frames, cap


@pytest.mark.parametrize("size", [(48, 64), (47, 63)])
def test_mp4_round_trip(tmp_path, size):
    h, w = size
    src = moving_frames(7, h, w)
    out = viz.write_mp4(tmp_path / "clip.mp4", src, fps=5)
    assert out == tmp_path / "clip.mp4" and out.stat().st_size > 0
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0, abs=0.01)
    cap.release()
    got, _ = decode(out)
    assert len(got) == 7
    assert got[0].shape == (48, 64, 3)  # odd sizes padded to even ones
    for t, frame in enumerate(got):
        errs = [np.abs(frame[:h, :w] - s).mean() for s in src]
        assert errs[t] < 0.03, (t, errs[t])
        assert int(np.argmin(errs)) == t  # the frames come back in order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temporary file left


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    good = viz.write_mp4(tmp_path / "clip.mp4", moving_frames(3), fps=4)
    before = good.read_bytes()
    with pytest.raises(ValueError, match="frames differ in size"):
        viz.write_mp4(good, moving_frames(2) + moving_frames(1, 40, 64))

    class Broken:
        def __init__(self, path, *a):
            self.path = path
            open(path, "wb").write(b"partial")

        def isOpened(self):
            return True

        def write(self, frame):
            raise OSError(28, "No space left on device")

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoWriter", Broken)
    with pytest.raises(OSError, match="No space left"):
        viz.write_mp4(good, moving_frames(3))
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    with pytest.raises(FileExistsError):
        viz.write_gif(good, moving_frames(2), overwrite=False)


def test_gif_round_trip(tmp_path):
    src = moving_frames(4)
    data = viz.encode_gif(src, fps=5)
    assert data[:6] == b"GIF89a"
    path = viz.write_video(tmp_path / "a.gif", src, fps=5)
    assert path.read_bytes() == data
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 4 and im.size == (64, 48) and im.info["duration"] == 200
        im.seek(2)
        got = np.asarray(im.convert("RGB"), np.float32) / 255
    assert np.abs(got - src[2]).mean() < 0.03
    assert viz.write_video(tmp_path / "a.mp4", src).suffix == ".mp4"
    from dmvfn_jax.errors import InputError

    with pytest.raises(InputError, match="as .mp4 or .gif"):
        viz.write_video(tmp_path / "a.avi", src)


# -- the pictures training and the demo evaluation write (of the conftest's nine with random weights:
# loaded, not initialised, which would compile an initialiser per parameter shape) ----------------
def test_training_image_summary_is_the_labelled_strip(jax_model):
    import jax
    from flax import nnx

    from dmvfn_jax.data.synthetic import synthetic_video
    from dmvfn_jax.train.loop import _image_strip

    graphdef, params = nnx.split(jax_model)
    strip_fn = jax.jit(lambda p, a, b: nnx.merge(graphdef, p).predict(a, b, "threshold"))
    clip = synthetic_video(5, 3, 64, 64)
    rgb = _image_strip(strip_fn, params, clip)
    res = strip_fn(params, clip[0:1].astype(np.float32) / 255, clip[1:2].astype(np.float32) / 255)
    f = clip.astype(np.float32) / 255
    want = viz.prediction_strip(f[0], f[1], np.asarray(res.prediction[0]), np.asarray(res.flow[0]),
                                np.asarray(res.mask[0]), np.asarray(res.gates[0]), target=f[2])
    assert rgb.shape == want.shape and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - want).max() <= 1
    # a BGR-trained run shows its frames in RGB
    bgr = _image_strip(strip_fn, params, clip[..., ::-1].copy(), "BGR")
    band = (bgr.shape[0] - 4) // 2 - 128
    np.testing.assert_array_equal(bgr[band:band + 128, :128], np.repeat(np.repeat(clip[0], 2, 0), 2, 1))


def test_demo_evaluation_writes_predictions_strips_and_rollouts(tmp_path):
    """The demo's held-out evaluation goes through eval.py's (`evaluate_clips`): the first
    `save_clips` clips get their predicted frames, a picture per step and a rollout GIF."""
    import configs.demo
    from conftest import small_dmvfn
    from dmvfn_jax.evaluation.heldout import evaluate_heldout

    c = configs.demo.get_config()
    c.eval.num_clips, c.eval.num_frames, c.eval.save_clips = 2, 4, 1
    c.data.height, c.data.width = 32, 48
    results = evaluate_heldout(small_dmvfn(), c, tmp_path)
    assert set(results["results"]) == {"dmvfn", "dmvfn_all_blocks", "copy_last"}
    assert results["clips"] == 2 and results["protocol"]["horizon"] == 2
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["clip00"]
    assert sorted(p.name for p in (tmp_path / "predictions" / "clip00").iterdir()) == ["pred_t+1.png", "pred_t+2.png"]
    pics = tmp_path / "images" / "clip00"
    assert sorted(p.name for p in pics.iterdir()) == ["rollout.gif", "t+1.png", "t+2.png"]
    with Image.open(pics / "t+1.png") as im:
        assert im.size[0] == 5 * 4 * 48 + 16  # 32-pixel frames drawn 4x
    with Image.open(pics / "rollout.gif") as im:
        assert im.n_frames == 4 and im.size[0] == 2 * 4 * 48 + 4
