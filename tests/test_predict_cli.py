"""`python -m dmvfn_jax.predict`: outputs in every format, routing choices, and bad inputs.

Runs `main([...])` in-process (each call loads the checkpoint and compiles once per frame
shape and routing), and once as `python -m` to prove the module runs as a program. The real
frames are read from ../shared/data/real in place; bad inputs are small images made here.
The checkpoint is the suite's small model (conftest.small_checkpoint): the command is the point;
the converted nine are the Predictor's and the converter's tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmvfn_jax.predict import command as predict

REPO = Path(__file__).resolve().parents[1]
W, H = 448, 256  # the official sample pair and the Vimeo clip
SMALL = (40, 24)  # not a multiple of 16


@pytest.fixture(scope="module")
def pair(real_data) -> list[Path]:
    files = [real_data / "official_sample_img_0.png", real_data / "official_sample_img_1.png"]
    for f in files:
        with Image.open(f) as im:
            assert im.size == (W, H) and im.mode == "RGB"
    return files


def run(capsys, checkpoint, frames, output, *extra) -> tuple[int, str, str]:
    argv = ["--checkpoint", str(checkpoint), "--frames", *map(str, frames), "--output", str(output), *map(str, extra)]
    rc = predict.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB", path
        return np.asarray(im).copy()


def make_image(path: Path, size=SMALL, mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    w, h = size
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(path)
    return path


# -- outputs ------------------------------------------------------------------------------
def test_two_files_to_png(tmp_path, small_checkpoint, pair, capsys):
    out = tmp_path / "next.png"
    rc, stdout, err = run(capsys, small_checkpoint, pair, out)
    assert rc == 0, err
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (W, H)
    assert f"wrote {out}" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["next.png"]  # no temporary files left


def test_rollout_png_gif_and_npy_agree(tmp_path, small_checkpoint, pair, capsys):
    out = tmp_path / "roll.png"
    rc, _, err = run(capsys, small_checkpoint, pair, out, "--steps", 3)
    assert rc == 0, err
    assert "] 3/3 frames predicted, done in " in err  # the progress bar of a rollout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roll.gif", "roll_01.png", "roll_02.png", "roll_03.png"]
    pngs = [png(tmp_path / f"roll_{k:02d}.png") for k in (1, 2, 3)]
    assert all(p.shape == (H, W, 3) for p in pngs)
    with Image.open(tmp_path / "roll.gif") as gif:
        assert gif.format == "GIF" and gif.size == (W, H)
        assert gif.n_frames == 5  # 2 inputs + 3 predictions

    npy = tmp_path / "roll.npy"
    rc, _, err = run(capsys, small_checkpoint, pair, npy, "--steps", 3)
    assert rc == 0, err
    preds = np.load(npy)
    assert preds.dtype == np.float32 and preds.shape == (3, H, W, 3)
    assert np.isfinite(preds).all() and preds.min() >= 0.0 and preds.max() <= 1.0
    for k in range(3):  # the PNGs are the same predictions, rounded to uint8
        np.testing.assert_array_equal(np.clip(np.rint(preds[k] * 255), 0, 255).astype(np.uint8), pngs[k])


def test_folder_output(tmp_path, small_checkpoint, pair, capsys):
    out = tmp_path / "preds"
    rc, _, err = run(capsys, small_checkpoint, pair, out)
    assert rc == 0, err
    assert out.is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["pred_01.png"]  # one step: no rollout.gif
    assert png(out / "pred_01.png").shape == (H, W, 3)


def test_frames_folder_uses_last_two_frames_by_name(tmp_path, small_checkpoint, real_data, capsys):
    folder = real_data / "vimeo_00001_0002"
    names = sorted(p.name for p in folder.iterdir())
    assert names[-2:] == ["im6.png", "im7.png"]
    rc, stdout, err = run(capsys, small_checkpoint, [folder], tmp_path / "from_folder.npy")
    assert rc == 0, err
    assert "im6.png" in stdout and "im7.png" in stdout
    rc, _, err = run(capsys, small_checkpoint, [folder / "im6.png", folder / "im7.png"], tmp_path / "explicit.npy")
    assert rc == 0, err
    a, b = np.load(tmp_path / "from_folder.npy"), np.load(tmp_path / "explicit.npy")
    assert a.shape == (1, H, W, 3)
    np.testing.assert_array_equal(a, b)


# -- routing ------------------------------------------------------------------------------
@pytest.mark.parametrize("routing", ["all", "threshold"])
def test_routing_choices_run(routing, tmp_path, small_checkpoint, pair, capsys):
    out = tmp_path / "pred.npy"
    rc, stdout, err = run(capsys, small_checkpoint, pair, out, "--routing", routing)
    assert rc == 0, err
    assert f"routing={routing}" in stdout
    preds = np.load(out)
    assert preds.shape == (1, H, W, 3) and preds.min() >= 0.0 and preds.max() <= 1.0


def test_sample_routing_is_reproducible_with_a_seed(tmp_path, small_checkpoint, pair, capsys):
    outs = []
    for k in range(2):
        out = tmp_path / f"sample_{k}.npy"
        rc, stdout, err = run(capsys, small_checkpoint, pair, out, "--routing", "sample", "--seed", 5, "--steps", 2)
        assert rc == 0, err
        assert "routing=sample" in stdout
        outs.append(np.load(out))
    assert outs[0].shape == (2, H, W, 3)
    np.testing.assert_array_equal(outs[0], outs[1])


# -- odd sizes ----------------------------------------------------------------------------
def test_odd_frame_size_keeps_its_size(tmp_path, small_checkpoint, capsys):
    a = make_image(tmp_path / "a.png", seed=1)
    b = make_image(tmp_path / "b.png", seed=2)
    out = tmp_path / "odd.png"
    rc, _, err = run(capsys, small_checkpoint, [a, b], out)
    assert rc == 0, err
    with Image.open(out) as im:
        assert im.size == SMALL and im.mode == "RGB"


def test_module_runs_as_a_program(tmp_path, small_checkpoint, capsys):
    a = make_image(tmp_path / "a.png", seed=1)
    b = make_image(tmp_path / "b.png", seed=2)
    out = tmp_path / "sub.npy"
    proc = subprocess.run(
        [sys.executable, "-m", "dmvfn_jax.predict", "--checkpoint", str(small_checkpoint),
         "--frames", str(a), str(b), "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    sub = np.load(out)
    assert sub.shape == (1, SMALL[1], SMALL[0], 3) and sub.dtype == np.float32
    # the same frames in-process give the same numbers
    rc, _, err = run(capsys, small_checkpoint, [a, b], tmp_path / "inproc.npy")
    assert rc == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "inproc.npy"), sub, rtol=0, atol=1e-6)


# -- bad inputs ---------------------------------------------------------------------------
def _sizes_differ(d: Path, ckpt: Path):
    a = make_image(d / "small.png", size=SMALL)
    b = make_image(d / "bigger.png", size=(48, 32))
    return [a, b], ckpt, "bigger.png"


def _grey(d, ckpt):
    a = make_image(d / "a.png")
    b = make_image(d / "grey.png", mode="L")
    return [a, b], ckpt, "grey.png"


def _rgba(d, ckpt):
    a = make_image(d / "alpha.png", mode="RGBA")
    b = make_image(d / "b.png")
    return [a, b], ckpt, "alpha.png"


def _empty_folder(d, ckpt):
    f = d / "empty_frames"
    f.mkdir()
    return [f], ckpt, "empty_frames"


def _one_frame_folder(d, ckpt):
    f = d / "lonely_frames"
    f.mkdir()
    make_image(f / "0001.png")
    return [f], ckpt, "lonely_frames"


def _random_bytes(d, ckpt):
    a = make_image(d / "a.png")
    x = d / "x.png"
    x.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    return [a, x], ckpt, "x.png"


def _missing_frame(d, ckpt):
    a = make_image(d / "a.png")
    return [a, d / "ghost.png"], ckpt, "ghost.png"


def _missing_checkpoint(d, ckpt):
    return [make_image(d / "a.png"), make_image(d / "b.png")], d / "no_such_ckpt", "no_such_ckpt"


def _not_a_checkpoint(d, ckpt):
    c = d / "just_a_folder"
    c.mkdir()
    (c / "readme.txt").write_text("not a checkpoint")
    return [make_image(d / "a.png"), make_image(d / "b.png")], c, "just_a_folder"


BAD = {
    "sizes_differ": _sizes_differ,
    "grey_L": _grey,
    "rgba": _rgba,
    "empty_folder": _empty_folder,
    "one_frame_folder": _one_frame_folder,
    "random_bytes": _random_bytes,
    "missing_frame": _missing_frame,
    "missing_checkpoint": _missing_checkpoint,
    "not_a_checkpoint": _not_a_checkpoint,
}


@pytest.mark.parametrize("output", ["pred.png", "pred.npy", "pred_folder"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_cleanly(case, output, tmp_path, small_checkpoint, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    frames, checkpoint, culprit = BAD[case](inputs, small_checkpoint)
    outdir = tmp_path / "out"
    outdir.mkdir()
    rc, _, err = run(capsys, checkpoint, frames, outdir / output, "--steps", 2)
    assert rc != 0
    assert err.startswith("predict: error:"), err
    assert culprit in err
    assert err.strip().count("\n") == 0, err  # one line, no traceback
    assert list(outdir.iterdir()) == []  # nothing written


def test_steps_must_be_positive(tmp_path, small_checkpoint, pair, capsys):
    rc, _, err = run(capsys, small_checkpoint, pair, tmp_path / "x.png", "--steps", 0)
    assert rc != 0 and "--steps" in err
    assert list(tmp_path.iterdir()) == []
