"""Training from prepared clip folders: the real Cityscapes clip through the preparation tool."""

import subprocess

import numpy as np
import pytest

from conftest import cityscapes_train_cmd
from dmvfn_jax.data.sources import ClipFolderSource
from dmvfn_jax.errors import InputError


def test_clip_folder_source_is_deterministic_and_augmented(cityscapes_prepared):
    src = ClipFolderSource(cityscapes_prepared, seed=3, num_frames=30, crop_h=256, crop_w=256, global_batch=2)
    assert len(src) == 1
    a, b = src.batch(0), src.batch(0)
    assert a.shape == (2, 30, 256, 256, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])  # two draws of augmentation for the same clip
    # two processes each read half of the same global batch
    halves = [ClipFolderSource(cityscapes_prepared, 3, 30, 256, 256, 2, i, 2).batch(0) for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), a)
    bgr = ClipFolderSource(cityscapes_prepared, 3, 30, 256, 256, 2, channel_order="BGR").batch(0)
    np.testing.assert_array_equal(bgr, a[..., ::-1])
    # the same stream from 2 input worker processes (Grain's mp_prefetch)
    got = list(ClipFolderSource(cityscapes_prepared, 3, 30, 256, 256, 2, workers=2).batches(0, 2))
    np.testing.assert_array_equal(got[0], a)
    np.testing.assert_array_equal(got[1], src.batch(1))


def test_clip_folder_errors(tmp_path, cityscapes_prepared):
    with pytest.raises(InputError, match="no such folder"):
        ClipFolderSource(tmp_path / "none", 0, 3, 64, 64, 1)
    with pytest.raises(InputError, match="no clip folders"):
        ClipFolderSource(tmp_path, 0, 3, 64, 64, 1)
    with pytest.raises(InputError, match="30 frames, the config needs 31"):
        ClipFolderSource(cityscapes_prepared, 0, 31, 64, 64, 1)


@pytest.mark.slow
def test_train_cityscapes_config_on_prepared_clip_folders(tmp_path, cityscapes_prepared):
    cmd = cityscapes_train_cmd(tmp_path / "run", cityscapes_prepared, "--config.data.source=clips",
                               "--config.num_train_steps=2")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "step 2/2 (100%)" in r.stdout
    assert (tmp_path / "run" / "model" / "dmvfn.json").is_file()
    import json

    assert json.loads((tmp_path / "run" / "model" / "dmvfn.json").read_text())["channel_order"] == "BGR"
