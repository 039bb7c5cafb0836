"""eval.py end to end: the Vimeo and Cityscapes protocols on TFDS builds of the real frames, both
modes, the baseline rows against direct computations, sharding with a padded last batch, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_msssim import ms_ssim as torch_ms_ssim
from pytorch_msssim import ssim as torch_ssim

from conftest import REPO, cityscapes_train_cmd, finish, random_alexnet_state, random_linear_state, start
from dmvfn_jax import visualize
from fast_xla import xla_flags  # tests/scripts, on the path through conftest
from dmvfn_jax.data.build import build
from dmvfn_jax.data.synthetic import synthetic_video
from dmvfn_jax.errors import InputError
from dmvfn_jax.evaluation.lpips import load_lpips
from dmvfn_jax.evaluation.run import evaluate
from dmvfn_jax.image_io import load_image, save_png
from dmvfn_jax.predict.predictor import Predictor


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def vimeo_tfds(tmp_path_factory, real_data):
    """The real septuplet's first three frames as a Vimeo test triplet."""
    root = tmp_path_factory.mktemp("vimeo")
    target = root / "manual" / "vimeo_interp_test" / "target" / "00001" / "0002"
    target.mkdir(parents=True)
    for i in (1, 2, 3):
        (target / f"im{i}.png").symlink_to(real_data / "vimeo_00001_0002" / f"im{i}.png")
    build("vimeo", root / "manual", root / "tfds")
    return root / "tfds"


@pytest.mark.slow
def test_vimeo_protocol_with_a_converted_checkpoint(tmp_path, vimeo_tfds, converted_dir, real_data):
    res = evaluate(converted_dir, "vimeo", vimeo_tfds, output=tmp_path / "out", save_predictions=1, save_images=1,
                   progress=False)
    assert res["clips"] == 1 and res["protocol"]["horizon"] == 1 and res["mode"]["name"] == "clean"
    frames = [load_image(real_data / "vimeo_00001_0002" / f"im{i}.png").astype(np.float32) / 255 for i in (1, 2, 3)]
    prev, cur, gt = (f[None] for f in frames)
    # copy-last row against NumPy (PSNR) and the reference package (SSIM, MS-SSIM)
    copy = res["results"]["copy_last"]
    np.testing.assert_allclose(copy["psnr"]["per_step"][0], -10 * np.log10(np.mean((cur.astype(np.float64) - gt) ** 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(copy["ssim"]["per_step"][0],
                               torch_ssim(nchw(cur), nchw(gt), data_range=1.0).item(), atol=1e-5)
    np.testing.assert_allclose(copy["ms_ssim"]["per_step"][0],
                               torch_ms_ssim(nchw(cur), nchw(gt), data_range=1.0).item(), atol=1e-5)
    # the model rows against the Predictor (which handles the checkpoint's BGR order itself)
    pred = Predictor.from_checkpoint(converted_dir)
    for variant, routing in (("dmvfn", "threshold"), ("dmvfn_all_blocks", "all")):
        p = pred.predict(prev, cur, routing=routing)
        want = -10 * np.log10(np.mean((p.astype(np.float64) - gt) ** 2))
        np.testing.assert_allclose(res["results"][variant]["psnr"]["per_step"][0], want, rtol=1e-4)
    saved = load_image(tmp_path / "out" / "predictions" / "test_00001_0002" / "pred_t+1.png")
    np.testing.assert_allclose(saved / 255.0, pred.predict(prev, cur)[0], atol=1 / 255 + 1e-6)
    # --save-images: the picture of the prediction, its flows, mask and blocks, as the Predictor gives them
    full = pred.predict_full(prev, cur)
    pic = load_image(tmp_path / "out" / "images" / "test_00001_0002" / "t+1.png")
    want = visualize.prediction_strip(prev[0], cur[0], np.asarray(full.prediction[0]), np.asarray(full.flow[0]),
                                      np.asarray(full.mask[0]), np.asarray(full.gates[0]), target=gt[0])
    assert pic.shape == want.shape == (2 * (24 + 256) + 4, 5 * 448 + 4 * 4, 3)
    close = np.abs(pic.astype(int) - want.astype(int)).max(-1) <= 2
    assert close.mean() > 0.999, close.mean()
    np.testing.assert_array_equal(pic[24:280, 904:1352], saved)  # the prediction panel
    # how the routing depends on the input: the clip's pair (the Predictor's own gates), still, shifted
    r = res["routing_report"]
    assert r["pairs"] == 3 and [k["pairs"] for k in r["by_kind"].values()] == [1, 1, 1]
    assert r["by_kind"]["moving"]["mean_blocks"] == float(np.asarray(full.gates[0]).sum())
    assert r["by_kind"]["still"]["mean_motion"] == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["routing_report"] == r
    with Image.open(tmp_path / "out" / "images" / "test_00001_0002" / "rollout.gif") as im:
        assert im.n_frames == 3 and im.size[0] == 2 * 448 + 4
    # report and files
    assert "DMVFN (routed)" in res["table"] and "copy last frame" in res["table"] and "GFLOPs" in res["table"]
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["results"]["copy_last"]["psnr"] == copy["psnr"]
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert rows[0] == "variant,metric,step,value,running_mean" and len(rows) == 1 + 3 * 3
    r = res["routing"]
    assert 0 <= r["blocks_per_prediction"] <= 9 and len(r["block_rate"]) == 9
    f = res["gflops_per_frame"]
    assert 0 < f["routed_spent"] and f["all_blocks"] > sum(f["blocks"]) > 0


@pytest.mark.slow
def test_official_mode_feeds_bgr_to_the_metrics(vimeo_tfds, small_checkpoint, tmp_path):
    """Copy-last-frame's metrics in both modes (the model evaluated beside it is the suite's small one)."""
    from dmvfn_jax.convert import conversions

    torch.save({k: torch.from_numpy(v) for k, v in random_alexnet_state(5).items()}, tmp_path / "a.pth")
    torch.save({k: torch.from_numpy(v) for k, v in random_linear_state(6).items()}, tmp_path / "l.pth")
    lp = conversions.convert_lpips(tmp_path / "a.pth", tmp_path / "lpips", tmp_path / "l.pth")
    clean = evaluate(small_checkpoint, "vimeo", vimeo_tfds, lpips=lp, progress=False)
    official = evaluate(small_checkpoint, "vimeo", vimeo_tfds, mode="official", lpips=lp, progress=False)
    assert "BGR" in official["mode"]["description"] and "1234" in official["mode"]["description"]
    c, o = clean["results"]["copy_last"], official["results"]["copy_last"]
    # PSNR / SSIM / MS-SSIM do not depend on the channel order, LPIPS does
    for m in ("psnr", "ssim", "ms_ssim"):
        np.testing.assert_allclose(o[m]["per_step"], c[m]["per_step"], rtol=1e-6)
    assert abs(o["lpips"]["per_step"][0] - c["lpips"]["per_step"][0]) > 1e-4
    ours = load_lpips(lp)
    v = [load_image(vimeo_tfds.parent / "manual/vimeo_interp_test/target/00001/0002" / f"im{i}.png") for i in (2, 3)]
    x, y = (a[None].astype(np.float32) / 255 for a in v)
    np.testing.assert_allclose(o["lpips"]["per_step"][0], float(ours(x[..., ::-1] * 2 - 1, y[..., ::-1] * 2 - 1)[0]),
                               atol=1e-5)


@pytest.mark.slow
def test_cityscapes_protocol_with_a_model_trained_on_the_real_clip(tmp_path, cityscapes_prepared):
    manual = tmp_path / "manual"
    (manual / "train").mkdir(parents=True)
    (manual / "val").mkdir()
    (manual / "train" / "000000").symlink_to(cityscapes_prepared / "000000")
    (manual / "val" / "000000").symlink_to(cityscapes_prepared / "000000")
    build("cityscapes", manual, tmp_path / "tfds")
    # as a command with the shared Cityscapes shapes: a training step compiled once for three tests
    train = cityscapes_train_cmd(tmp_path / "run", tmp_path / "tfds", "--config.num_train_steps=3")
    r = subprocess.run(train, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    cmd = [sys.executable, str(REPO / "eval.py"), "--checkpoint", str(tmp_path / "run" / "model"),
           "--dataset", "cityscapes", "--data_dir", str(tmp_path / "tfds"), "--output", str(tmp_path / "eval")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "PSNR t+1/t+3/t+5" in r.stdout and "copy last frame" in r.stdout and "mode clean" in r.stdout
    assert "] 1/1 clips, done in " in r.stderr  # the progress bar
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert res["frame_size"] == [1024, 512] and res["clips"] == 1
    frames = [load_image(p).astype(np.float64) / 255 for p in sorted((cityscapes_prepared / "000000").iterdir())]
    want = [-10 * np.log10(np.mean((frames[3] - frames[4 + k]) ** 2)) for k in range(5)]
    np.testing.assert_allclose(res["results"]["copy_last"]["psnr"]["per_step"], want, rtol=1e-5)
    np.testing.assert_allclose(res["results"]["copy_last"]["psnr"]["running_mean"][2], np.mean(want[:3]), rtol=1e-5)


@pytest.fixture(scope="module")
def generic_tfds(tmp_path_factory):
    root = tmp_path_factory.mktemp("generic")
    for i in range(3):
        for t, f in enumerate(synthetic_video(40 + i, 5, 48, 64)):
            save_png(root / "manual" / "test" / f"c{i}" / f"{t:03d}.png", f)
    build("clip_folder", root / "manual", root / "tfds")
    return root / "tfds"


@pytest.mark.slow
def test_sharded_evaluation_counts_every_clip_once(tmp_path, generic_tfds, small_checkpoint):
    """3 clips on 2 (fake) devices with a global batch of 2: the last batch is padded and masked;
    the results equal the 1-device run's (of the suite's small model: the sharding is the point)."""
    def run(devices, batch, out, *extra):
        flags = xla_flags(f"--xla_force_host_platform_device_count={devices}", level="inherit")
        env = {**os.environ, "XLA_FLAGS": flags}
        cmd = [sys.executable, str(REPO / "eval.py"), "--checkpoint", str(small_checkpoint), "--dataset", "clip_folder",
               "--data_dir", str(generic_tfds), "--context", "1,2", "--horizon", "2", "--metrics", "psnr,ssim",
               "--batch-size", str(batch), "--output", str(out)] + list(extra)
        return start(cmd, env=env), out

    def results(started):
        proc, out = started
        r = finish(proc, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        return json.loads((out / "results.json").read_text())

    # both runs side by side (one per core)
    runs = run(1, 1, tmp_path / "one"), run(2, 2, tmp_path / "two", "--save_images", "2")
    one, two = map(results, runs)
    assert one["clips"] == two["clips"] == 3
    for variant in ("dmvfn", "dmvfn_all_blocks", "copy_last"):
        for m in ("psnr", "ssim"):
            np.testing.assert_allclose(two["results"][variant][m]["per_step"], one["results"][variant][m]["per_step"],
                                       rtol=1e-5)
    # --save_images 2 on 2 devices: pictures of the first two clips (in the build's order) only, one per
    # step and a rollout, each picture of its own clip (frame t-1 = frame 1, drawn 3x: 48 < 128 pixels)
    saved = sorted(p.name for p in (tmp_path / "two" / "images").iterdir())
    assert len(saved) == 2 and set(saved) <= {"test_c0", "test_c1", "test_c2"}
    for clip in saved:
        assert sorted(p.name for p in (tmp_path / "two" / "images" / clip).iterdir()) == ["rollout.gif", "t+1.png",
                                                                                          "t+2.png"]
        pic = load_image(tmp_path / "two" / "images" / clip / "t+1.png")
        band = (pic.shape[0] - 4) // 2 - 144
        frame = synthetic_video(40 + int(clip[-1]), 5, 48, 64)[1]
        np.testing.assert_array_equal(pic[band:band + 144, :192], np.repeat(np.repeat(frame, 3, 0), 3, 1))
    assert not (tmp_path / "one" / "images").exists()
    clips = [synthetic_video(40 + i, 5, 48, 64).astype(np.float64) / 255 for i in range(3)]
    want = np.mean([[-10 * np.log10(np.mean((c[2] - c[3 + k]) ** 2)) for k in range(2)] for c in clips], axis=0)
    np.testing.assert_allclose(two["results"]["copy_last"]["psnr"]["per_step"], want, rtol=1e-5)


def test_bad_input_fails_before_any_compute(tmp_path, vimeo_tfds, generic_tfds, converted_dir, monkeypatch):
    from dmvfn_jax.checkpoint import CheckpointError
    from dmvfn_jax.convert import conversions
    from dmvfn_jax.evaluation import run

    def no_compute(*args, **kwargs):
        raise AssertionError("an evaluation step or FLOP count was built before the input was checked")

    monkeypatch.setattr(run, "sharded_eval_step", no_compute)  # the compute: refused if reached
    monkeypatch.setattr(run, "flop_costs", no_compute)

    with pytest.raises(InputError, match=r"3 clip\(s\) have fewer than the 8 frames the protocol reads \(.*\): "
                                         r"test/c0 \(5 frames\), test/c1 \(5 frames\), test/c2 \(5 frames\); pass --skip-bad"):
        evaluate(converted_dir, "clip_folder", generic_tfds, context=(2, 3), horizon=4, metrics=["psnr"],
                 progress=False)
    with pytest.raises(InputError, match="LPIPS needs its weights.*convert_weights.py lpips"):
        evaluate(converted_dir, "vimeo", vimeo_tfds, metrics=["psnr", "lpips"], progress=False)
    with pytest.raises(InputError, match=r"MS-SSIM needs both sides > 160 pixels; 3 clip\(s\) are smaller: "
                                         r"test/c0 \(64x48\), .*leave ms_ssim out"):
        evaluate(converted_dir, "clip_folder", generic_tfds, progress=False)
    with pytest.raises(InputError, match="--context/--horizon are for generic clip datasets"):
        evaluate(converted_dir, "vimeo", vimeo_tfds, horizon=3, progress=False)
    torch.save({k: torch.from_numpy(v) for k, v in random_alexnet_state(0).items()}, tmp_path / "a.pth")
    torch.save({k: torch.from_numpy(v) for k, v in random_linear_state(0).items()}, tmp_path / "l.pth")
    lp = conversions.convert_lpips(tmp_path / "a.pth", tmp_path / "lpips", tmp_path / "l.pth")
    with pytest.raises(CheckpointError, match="architecture 'lpips-alex-v0.1' is not 'dmvfn'"):
        evaluate(lp, "vimeo", vimeo_tfds, progress=False)


def test_official_mode_refuses_an_rgb_checkpoint(tmp_path, vimeo_tfds, converted_dir):
    from dmvfn_jax import checkpoint as ckpt

    params, meta = ckpt.load_checkpoint(converted_dir)
    ckpt.save_checkpoint(tmp_path / "rgb", params, {**meta, "channel_order": "RGB"})
    with pytest.raises(InputError, match="trained on RGB frames, but --mode official feeds the network BGR"):
        evaluate(tmp_path / "rgb", "vimeo", vimeo_tfds, mode="official", progress=False)
    r = subprocess.run([sys.executable, str(REPO / "eval.py"), "--checkpoint", str(tmp_path / "rgb"), "--dataset",
                        "vimeo", "--data_dir", str(vimeo_tfds), "--mode", "official"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("eval.py: error: ")


@pytest.fixture(scope="module")
def mixed_tfds(tmp_path_factory):
    """Clips of two sizes and one clip too short for a 5-frame protocol, kept at their own sizes."""
    root = tmp_path_factory.mktemp("mixed")
    clips = {"a": synthetic_video(50, 5, 48, 64), "b": synthetic_video(51, 5, 48, 64),
             "c": synthetic_video(52, 5, 64, 80), "short": synthetic_video(53, 4, 48, 64)}
    for name, frames in clips.items():
        for t, f in enumerate(frames):
            save_png(root / "manual" / "test" / name / f"{t:03d}.png", f)
    build("clip_folder", root / "manual", root / "tfds")
    return root / "tfds", clips


def copy_last_psnr(frames, c1: int, horizon: int) -> np.ndarray:
    f = frames.astype(np.float64) / 255
    return np.array([-10 * np.log10(np.mean((f[c1] - f[c1 + 1 + k]) ** 2)) for k in range(horizon)])


def test_unusable_clips_stop_the_run_before_any_frame_is_decoded(mixed_tfds, converted_dir, monkeypatch):
    """Lengths and sizes come from the build's metadata: the short clip and the clips too small
    for MS-SSIM are all named before a frame is decoded or a program compiled."""
    from dmvfn_jax.data.pipeline import EvalClips
    from dmvfn_jax.evaluation import run

    data_dir, _ = mixed_tfds

    def no_compute(*args, **kwargs):
        raise AssertionError("compute started")

    monkeypatch.setattr(EvalClips, "load", no_compute)
    monkeypatch.setattr(run, "sharded_eval_step", no_compute)
    monkeypatch.setattr(run, "flop_costs", no_compute)
    with pytest.raises(InputError, match=r"^dmvfn_clip_folder/test: 1 clip\(s\) have fewer than the 5 frames the "
                                         r"protocol reads \(context frames 1, 2; .*\): test/short \(4 frames\); "
                                         r"pass --skip-bad to skip them$"):
        evaluate(converted_dir, "clip_folder", data_dir, context=(1, 2), horizon=2, metrics=["psnr"], progress=False)
    with pytest.raises(InputError, match=r"MS-SSIM needs both sides > 160 pixels; 4 clip\(s\) are smaller: "
                                         r"test/a \(64x48\), test/b \(64x48\), test/c \(80x64\), test/short \(64x48\); "
                                         r"pass --skip-bad to skip them, --size to resize"):
        evaluate(converted_dir, "clip_folder", data_dir, context=(0, 1), horizon=1, progress=False)
    with pytest.raises(InputError, match=r"no clip left to evaluate \(4 skipped\)"):
        evaluate(converted_dir, "clip_folder", data_dir, context=(0, 1), horizon=1, skip_bad=True, progress=False)


@pytest.mark.slow
def test_mixed_sizes_are_evaluated_and_reported_per_size(tmp_path, mixed_tfds, small_checkpoint):
    """Of the suite's small model: the sizes and their report are the point."""
    data_dir, clips = mixed_tfds
    res = evaluate(small_checkpoint, "clip_folder", data_dir, context=(1, 2), horizon=2, metrics=["psnr"],
                   skip_bad=True, output=tmp_path / "out", progress=False)
    assert res["clips"] == 3 and res["frame_size"] is None and res["gflops_per_frame"] is None
    assert res["skipped"] == {"too_short": [{"id": "test/short", "frames": 4}], "too_small_for_ms_ssim": []}
    assert [(e["size"], e["clips"]) for e in res["sizes"]] == [([64, 48], 2), ([80, 64], 1)]
    small, large = res["sizes"]
    assert 0 < small["gflops_per_frame"]["all_blocks"] < large["gflops_per_frame"]["all_blocks"]
    want_small = np.mean([copy_last_psnr(clips[k], 2, 2) for k in "ab"], axis=0)
    want_large = copy_last_psnr(clips["c"], 2, 2)
    np.testing.assert_allclose(small["results"]["copy_last"]["psnr"]["per_step"], want_small, rtol=1e-5)
    np.testing.assert_allclose(large["results"]["copy_last"]["psnr"]["per_step"], want_large, rtol=1e-5)
    np.testing.assert_allclose(res["results"]["copy_last"]["psnr"]["per_step"], (2 * want_small + want_large) / 3,
                               rtol=1e-5)
    for variant in ("dmvfn", "dmvfn_all_blocks"):  # the overall row is the clip-weighted mean of the sizes'
        np.testing.assert_allclose(res["results"][variant]["psnr"]["per_step"],
                                   (2 * np.array(small["results"][variant]["psnr"]["per_step"])
                                    + large["results"][variant]["psnr"]["per_step"]) / 3, rtol=1e-5)
    assert "compute at 64x48 (2 clips)" in res["table"] and "compute at 80x64 (1 clip)" in res["table"]
    assert "skipped: 1 clip(s) too short" in res["table"]
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["sizes"][1]["size"] == [80, 64] and on_disk["frame_size"] is None

    # resized on the fly: one size, the frames resized as `prepare` resizes them
    from dmvfn_jax.data.resize import resize_linear

    one = evaluate(small_checkpoint, "clip_folder", data_dir, context=(1, 2), horizon=2, metrics=["psnr"],
                   skip_bad=True, size=(64, 48), progress=False)
    assert one["frame_size"] == [64, 48] == one["resized_to"] and [e["clips"] for e in one["sizes"]] == [3]
    assert one["gflops_per_frame"] == one["sizes"][0]["gflops_per_frame"]
    resized = np.stack([resize_linear(f, 64, 48) for f in clips["c"]])
    want = np.mean([copy_last_psnr(clips["a"], 2, 2), copy_last_psnr(clips["b"], 2, 2),
                    copy_last_psnr(resized, 2, 2)], axis=0)
    np.testing.assert_allclose(one["results"]["copy_last"]["psnr"]["per_step"], want, rtol=1e-5)


def test_a_padded_row_adds_nothing_to_the_sums():
    """The last batch is padded with zero clips (mask 0): their scores (PSNR inf for a zero frame
    against itself) are left out, not multiplied by 0 (inf * 0 is nan); the sums are the real
    clip's alone. The rollout runs in the evaluation step's scan (one traced step per variant)."""
    import jax
    from flax import nnx

    from conftest import small_dmvfn
    from dmvfn_jax.evaluation.protocols import MODES, Protocol
    from dmvfn_jax.evaluation.step import make_eval_fn

    graphdef, params = nnx.split(small_dmvfn())
    clips = np.zeros((2, 4, 32, 32, 3), np.uint8)
    clips[0] = synthetic_video(3, 4, 32, 32)
    fn = jax.jit(make_eval_fn(graphdef, None, Protocol("t", "", "test", (0, 1), 2), MODES["clean"], ["psnr"], "RGB",
                              False))
    padded, _ = fn(params, None, clips, np.array([1, 0], np.float32), jax.random.key(0))
    alone, _ = fn(params, None, clips[[0, 0]], np.array([1, 0], np.float32), jax.random.key(0))
    for variant in ("dmvfn", "dmvfn_all_blocks", "copy_last"):
        got = np.asarray(padded[variant]["psnr"])
        assert np.all(np.isfinite(got)), (variant, got)
        np.testing.assert_allclose(got, np.asarray(alone[variant]["psnr"]), rtol=1e-6)
    truth = clips[0].astype(np.float64) / 255
    want = [-10 * np.log10(np.mean((truth[1] - truth[2 + k]) ** 2)) for k in range(2)]
    np.testing.assert_allclose(np.asarray(padded["copy_last"]["psnr"]), want, rtol=1e-5)
    assert float(padded["count"]) == 1
