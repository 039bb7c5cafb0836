"""`python -m dmvfn_jax.predict` with a video in and an MP4 / GIF rollout out.

The input videos are written here with `visualize.write_mp4` from the real Vimeo clip (shrunk to
112x64 to keep the CPU time low) and decoded back with OpenCV, whose wheel bundles FFmpeg. The
checkpoint is the suite's small model (conftest.small_checkpoint): the command is the point.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from dmvfn_jax.predict import command as predict
from dmvfn_jax import visualize as viz
from dmvfn_jax.image_io import FrameError, load_video_frames
from dmvfn_jax.predict.predictor import Predictor

W, H = 112, 64


@pytest.fixture(scope="module")
def video(tmp_path_factory, real_data):
    frames = [np.asarray(Image.open(real_data / "vimeo_00001_0002" / f"im{i}.png").resize((W, H), Image.BILINEAR))
              for i in range(1, 8)]
    return viz.write_mp4(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=10)


def decode(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f[..., ::-1])
    cap.release()
    return out


def run(capsys, *argv):
    rc = predict.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_load_video_frames_picks_the_asked_frames(video):
    every = decode(video)
    assert len(every) == 7
    frames, idx = load_video_frames(video, 2, 2)
    assert idx == [2, 3]
    np.testing.assert_array_equal(frames[0], every[2])
    np.testing.assert_array_equal(frames[1], every[3])
    last, idx = load_video_frames(video)
    assert idx == [5, 6]
    np.testing.assert_array_equal(last[1], every[6])
    some, idx = load_video_frames(video, 4, count=10, min_count=2)
    assert idx == [4, 5, 6]
    with pytest.raises(FrameError, match=r"clip.mp4: has 7 frames; frames 6..7 were asked for"):
        load_video_frames(video, 6, 2)


def test_video_in_mp4_out_matches_the_predictor(tmp_path, video, small_checkpoint, capsys):
    out = tmp_path / "rollout.mp4"
    rc, stdout, err = run(capsys, "--checkpoint", small_checkpoint, "--video", video, "--start", 2, "--steps", 3,
                          "--output", out, "--fps", 5)
    assert rc == 0, err
    assert f"frames: {video} frames 2, 3 ({W}x{H})" in stdout and f"wrote {out}" in stdout
    assert "3/3" in err  # the progress bar finished
    got = decode(out)
    assert len(got) == 2 + 3 and got[0].shape == (H, W, 3)
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0, abs=0.01)
    cap.release()
    context, _ = load_video_frames(video, 2, 2)
    want = Predictor.from_checkpoint(small_checkpoint).rollout(context, 3)
    # lossy codec: close on average to the inputs and to the Predictor's predictions
    for shown, ref in zip(got, list(context) + list(want)):
        ref = ref if ref.dtype == np.uint8 else np.rint(ref * 255)
        assert np.abs(shown.astype(np.float32) - ref).mean() < 6.0


def test_video_given_to_frames_uses_its_last_two_frames(tmp_path, video, small_checkpoint, capsys):
    out = tmp_path / "next.npy"
    rc, stdout, err = run(capsys, "--checkpoint", small_checkpoint, "--frames", video, "--output", out)
    assert rc == 0, err
    assert "frames 5, 6" in stdout and "frames predicted" not in err  # no progress bar for one step
    context, _ = load_video_frames(video)
    want = Predictor.from_checkpoint(small_checkpoint).rollout(context, 1)
    np.testing.assert_allclose(np.load(out), want, atol=1e-5)


def test_gif_rollout_from_a_video(tmp_path, video, small_checkpoint, capsys):
    out = tmp_path / "rollout.gif"
    rc, _, err = run(capsys, "--checkpoint", small_checkpoint, "--video", video, "--steps", 2, "--output", out,
                     "--fps", 2)
    assert rc == 0, err
    with Image.open(out) as im:
        assert im.n_frames == 4 and im.size == (W, H) and im.info["duration"] == 500


@pytest.mark.parametrize("case", ["garbage", "one_frame", "start_too_far", "missing", "start_without_video"])
def test_bad_video_input_fails_with_one_line_naming_the_file(case, tmp_path, video, small_checkpoint, capsys):
    src = {"garbage": tmp_path / "garbage.mp4", "one_frame": tmp_path / "one.mp4", "start_too_far": video,
           "missing": tmp_path / "nope.mp4"}.get(case)
    if case == "garbage":
        src.write_bytes(b"this is not a video" * 100)
    if case == "one_frame":
        viz.write_mp4(src, [np.zeros((H, W, 3), np.uint8)])
    args = ["--checkpoint", small_checkpoint, "--output", tmp_path / "o.mp4"]
    if case == "start_without_video":
        args += ["--frames", tmp_path, "--start", 1]
        want = "--start K chooses the context frames of a video"
    else:
        args += ["--video", src] + (["--start", 6] if case == "start_too_far" else [])
        want = {"garbage": f"{src}: unreadable video", "one_frame": f"{src}: has 1 frame, need at least 2",
                "start_too_far": f"{src}: has 7 frames; frames 6..7 were asked for",
                "missing": f"{src}: no such file"}[case]
    rc, stdout, err = run(capsys, *args)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("predict: error: ") and want in lines[0], err
    assert not (tmp_path / "o.mp4").exists()


def test_frames_and_video_are_exclusive(tmp_path, video, small_checkpoint, capsys):
    with pytest.raises(SystemExit) as e:
        predict.main(["--checkpoint", str(small_checkpoint), "--frames", str(video), "--video", str(video),
                      "--output", str(tmp_path / "o.png")])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
