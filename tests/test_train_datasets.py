"""Training a few steps from TFDS builds of real frames: Cityscapes (train.py), KITTI and Vimeo, on
the suite's small model (tests/scripts/small_model.py)."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

from conftest import cityscapes_train_cmd, kill_at_checkpoint, model_params
from small_model import SMALL_MODEL  # tests/scripts
from dmvfn_jax.data.build import build
from dmvfn_jax.data.resize import resize_linear
from dmvfn_jax.image_io import load_image, save_png

pytestmark = pytest.mark.slow  # every test here takes minutes on a 2-core CPU


@pytest.fixture(scope="module")
def cityscapes_tfds(tmp_path_factory, cityscapes_prepared):
    out = tmp_path_factory.mktemp("cs_tfds")
    build("cityscapes", cityscapes_prepared.parent, out)
    return out


def test_train_py_cityscapes_config_from_a_tfds_build_resumes_exactly_after_kill_9(tmp_path, cityscapes_tfds):
    """The issue's command, shrunk for a CPU: `train.py --config configs/cityscapes.py
    --config.data_dir=<TFDS build of the real clip>`. A run with 2 input worker processes, killed
    with SIGKILL after its step-2 checkpoint, resumes from the Grain iterator state saved in that
    checkpoint and ends with the parameters of an uninterrupted run without workers, bit for bit."""
    def cmd(workdir, *extra):
        return cityscapes_train_cmd(workdir, cityscapes_tfds, "--config.num_train_steps=4",
                                    "--config.checkpoint_every=2", *extra)

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # the uninterrupted run first, then the run to kill, which reads the step it compiled from the
    # compilation cache (side by side, both compiled it: the suite's other worker has the other core)
    r = subprocess.run(cmd(straight, "--config.data.workers=0"), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    kill_at_checkpoint(cmd(killed, "--config.data.workers=2", "--config.async_checkpoints=False"),
                       killed / "checkpoints" / "2")
    assert "step 4/4 (100%)" in r.stdout
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["status"] == "completed" and np.isfinite(summary["last_metrics"]["total"])
    meta = json.loads((straight / "model" / "dmvfn.json").read_text())
    assert meta["channel_order"] == "BGR"
    assert not (killed / "model").exists()  # really killed before the end
    assert (killed / "checkpoints" / "2" / "input" / "process_0-of-1.json").is_file()
    r = subprocess.run(cmd(killed, "--config.data.workers=2"), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert re.search(r"resumed from .* at step 2", r.stdout), r.stdout
    assert "the input continues from the Grain iterator state saved at step 2" in r.stdout, r.stdout
    for a, b in zip(model_params(straight / "model"), model_params(killed / "model"), strict=True):
        np.testing.assert_array_equal(a, b)


def _train(config, workdir):
    from dmvfn_jax.train.loop import train_and_evaluate

    config.batch_size, config.num_train_steps, config.warmup_steps = 2, 2, 1
    config.log_every, config.image_every = 1, 0
    config.model.widths, config.model.scales = SMALL_MODEL["widths"], SMALL_MODEL["scales"]  # the data is the point
    return train_and_evaluate(config, workdir)


@pytest.mark.command_precision  # at the shapes of conftest.SMALL_RECIPE_STEP, train.py's step: compiled once
def test_train_kitti_and_vimeo_configs_from_tfds_builds(tmp_path, real_data):
    import configs.kitti
    import configs.vimeo

    # KITTI: a 9-frame 832x256 window of the real drive (its 7 frames forwards, then back)
    frames = [resize_linear(load_image(f), 832, 256) for f in sorted((real_data / "kitti_0023").glob("*.png"))]
    for t, f in enumerate(frames + frames[-2:-4:-1]):
        save_png(tmp_path / "kitti" / "train" / "000000" / f"{t:010d}.png", f)
    build("kitti", tmp_path / "kitti", tmp_path / "tfds")
    c = configs.kitti.get_config()
    c.data_dir = str(tmp_path / "tfds")
    c.data.height = c.data.width = 64
    c.data.num_frames = 4  # windows of 4 of the 9 frames: the Cityscapes tests' program (SMALL_RECIPE_STEP)
    s = _train(c, tmp_path / "run_kitti")
    assert s["status"] == "completed" and s["step"] == 2 and np.isfinite(s["last_metrics"]["total"])

    # Vimeo: the real septuplet, a random triplet of it per example, 224x224 crops (official)
    sept = tmp_path / "vimeo" / "vimeo_septuplet"
    (sept / "sequences" / "00001").mkdir(parents=True)
    (sept / "sequences" / "00001" / "0002").symlink_to(real_data / "vimeo_00001_0002")
    (sept / "sep_trainlist.txt").write_text("00001/0002\n")
    build("vimeo", tmp_path / "vimeo", tmp_path / "tfds")
    c = configs.vimeo.get_config()
    c.data_dir = str(tmp_path / "tfds")
    s = _train(c, tmp_path / "run_vimeo")
    assert s["status"] == "completed" and s["step"] == 2 and np.isfinite(s["last_metrics"]["total"])
