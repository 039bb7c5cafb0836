"""The TFDS input on Grain: reproducible, sharded per host, resumable (by step and from the iterator
state), worker-count independent, no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

from dmvfn_jax.data import pipeline
from dmvfn_jax.data.augment import augment_clip, sample_temporal_window
from dmvfn_jax.data.build import build
from dmvfn_jax.data.pipeline import EvalClips, TfdsSource
from dmvfn_jax.data.synthetic import synthetic_video
from dmvfn_jax.errors import InputError
from dmvfn_jax.image_io import FrameError, save_png

NUM_CLIPS, T, H, W = 5, 8, 40, 56


def clip_frames(i: int) -> np.ndarray:
    return synthetic_video(100 + i, T, H, W)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    manual = tmp_path_factory.mktemp("manual")
    for i in range(NUM_CLIPS):
        for t, f in enumerate(clip_frames(i)):
            save_png(manual / "train" / f"c{i}" / f"{t:04d}.png", f)
    for t, f in enumerate(clip_frames(9)[:5]):
        save_png(manual / "test" / "short" / f"{t:04d}.png", f)
    out = tmp_path_factory.mktemp("tfds")
    build("clip_folder", manual, out)
    return out


def source(data_dir, **kw):
    args = dict(name="dmvfn_clip_folder", data_dir=data_dir, split="train", seed=7, num_frames=4, crop_h=32,
                crop_w=32, global_batch=4)
    args.update(kw)
    return TfdsSource(**args)


def test_batches_are_reproducible_uint8_and_follow_the_recipe(data_dir):
    a, b = source(data_dir), source(data_dir)
    x = a.batch(3)
    assert x.shape == (4, 4, 32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, b.batch(3))
    assert not np.array_equal(x, source(data_dir, seed=8).batch(3))
    # example e: clip order_epoch[e mod N], a window, then one augmentation draw for all frames
    example = 3 * 4 + 2
    record = a.records[a.record_of(example)]
    clip = clip_frames(int(record["id"].decode()[len("train/c"):]))
    rng = np.random.default_rng([7, 1, example])
    idx = sample_temporal_window(rng, T, 4, 1)
    np.testing.assert_array_equal(x[2], augment_clip(rng, clip[idx], 32, 32))


def test_every_clip_once_per_epoch_and_a_new_order_each_epoch(data_dir):
    s = source(data_dir)
    epochs = [[s.record_of(e) for e in range(k * NUM_CLIPS, (k + 1) * NUM_CLIPS)] for k in range(3)]
    assert all(sorted(ep) == list(range(NUM_CLIPS)) for ep in epochs)
    assert len({tuple(ep) for ep in epochs}) > 1


def test_hosts_read_disjoint_slices_of_the_global_batch(data_dir):
    whole = source(data_dir).batch(2)
    parts = [source(data_dir, process_index=p, process_count=2).batch(2) for p in range(2)]
    assert parts[0].shape[0] == 2
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    with pytest.raises(InputError, match="batch_size 4 is not divisible by the 3 processes"):
        source(data_dir, process_count=3)


def test_resume_and_worker_processes_give_the_same_stream(data_dir):
    ref = source(data_dir)
    want = [ref.batch(s) for s in range(5, 8)]
    got = list(source(data_dir, workers=2, prefetch=2).batches(5, 8))  # spawned processes
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g, w)
    # resuming at step 6 in a fresh source continues the same stream
    np.testing.assert_array_equal(next(source(data_dir).batches(6, 8)), want[1])


@pytest.mark.parametrize("workers", [0, 2])
def test_the_grain_iterator_state_resumes_the_stream(data_dir, workers):
    """What a training checkpoint saves: a fresh iterator given the state continues the stream."""
    s = source(data_dir, workers=workers)
    it = s.iterator(3)
    for step in (3, 4):
        np.testing.assert_array_equal(next(it), s.batch(step))
    state = it.get_state()
    it.close()
    fresh = source(data_dir, workers=workers).iterator(3)
    fresh.set_state(state)
    for step in (5, 6, 7):
        np.testing.assert_array_equal(next(fresh), s.batch(step))
    fresh.close()


def test_temporal_stride_and_channel_order(data_dir):
    s = source(data_dir, num_frames=3, max_stride=2)  # 8 // 3 = 2: strides 1 and 2
    strides = set()
    for e in range(12):
        rng = np.random.default_rng([7, 1, e])
        idx = sample_temporal_window(rng, T, 3, 2)
        strides.add(int(np.diff(idx)[0]))
        clip = clip_frames(int(s.records[s.record_of(e)]["id"].decode()[len("train/c"):]))
        np.testing.assert_array_equal(s.load(e), augment_clip(rng, clip[idx], 32, 32))
    assert strides == {1, 2}
    rgb, bgr = source(data_dir).batch(0), source(data_dir, channel_order="BGR").batch(0)
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])


def test_clear_errors(tmp_path, data_dir):
    with pytest.raises(InputError, match=r"(?s)no TFDS build of 'dmvfn_kitti'.*python -m dmvfn_jax.data.build kitti"):
        TfdsSource("dmvfn_kitti", tmp_path, "train", 0, 3, 32, 32, 1)
    with pytest.raises(InputError, match="needs config.data_dir"):
        TfdsSource("dmvfn_kitti", "", "train", 0, 3, 32, 32, 1)
    with pytest.raises(InputError, match=r"has no split 'val'; it has \['test', 'train'\]"):
        source(data_dir, split="val")
    # from the build's clip table, every such clip named before the first batch
    with pytest.raises(InputError, match=r"dmvfn_clip_folder/train: 5 clip\(s\) have fewer than data.num_frames=9 "
                                         r"frames: train/c0 \(8 frames\), train/c1 \(8 frames\), .*train/c4"):
        source(data_dir, num_frames=9)
    with pytest.raises(InputError, match=r"5 clip\(s\) are smaller than the 64x64 crop \(data.width x data.height\): "
                                         r"train/c0 \(56x40\), .*; rebuild with --size or crop less"):
        source(data_dir, crop_h=64, crop_w=64)
    # a build without the table (before 1.1.0): each clip is checked as it is read
    import shutil

    old = tmp_path / "old"
    shutil.copytree(data_dir, old)
    for meta in old.glob("dmvfn_clip_folder/*/metadata.json"):
        meta.unlink()
    with pytest.raises(InputError, match="clip train/c.* has 8 frames, the config needs data.num_frames=9"):
        source(old, num_frames=9).batch(0)
    with pytest.raises(InputError, match=r"clip train/c.* is 56x40, smaller than the 64x64 crop"):
        source(old, crop_h=64, crop_w=64).batch(0)


def test_a_tfrecord_build_is_refused_with_advice(tmp_path, data_dir):
    import tensorflow_datasets as tfds

    from dmvfn_jax.data.tfds_builders import DmvfnClipFolder

    manual = tmp_path / "manual"
    for t, f in enumerate(clip_frames(0)[:3]):
        save_png(manual / "c0" / f"{t}.png", f)
    DmvfnClipFolder(data_dir=str(tmp_path / "tfds"), file_format="tfrecord").download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    with pytest.raises(InputError, match="written as tfrecord.*needs array_record"):
        TfdsSource("dmvfn_clip_folder", tmp_path / "tfds", "train", 0, 3, 32, 32, 1)


def test_a_corrupt_stored_frame_names_the_clip(data_dir, monkeypatch):
    """What every example goes through (`TfdsSource.load`, Grain's map) on a record whose frames
    do not decode."""
    s = source(data_dir)
    record = dict(s.records[s.record_of(0)])
    record["frames"] = np.array([b"garbage"] * T, dtype=object)
    monkeypatch.setattr(s.stream._load, "clips", {s.record_of(0): record})  # example 0 reads it
    with pytest.raises(FrameError, match=r"dmvfn_clip_folder/train: clip train/c\d frame \d+: unreadable image"):
        s.load(0)


def test_eval_keeps_every_example_with_a_masked_padded_last_batch(data_dir):
    ev = EvalClips("dmvfn_clip_folder", data_dir, "train", num_frames=6)
    seen = []
    batches = list(ev.batches(2))
    assert len(batches) == 3
    for clips, mask, idx in batches:
        assert clips.shape == (2, 6, H, W, 3) and clips.dtype == np.uint8
        seen += idx[mask].tolist()
        assert (clips[~mask] == 0).all()
    assert sorted(seen) == list(range(NUM_CLIPS))
    np.testing.assert_array_equal(batches[0][0][1], clip_frames(int(ev.clip_id(1)[len("train/c"):]))[:6])
    # two processes: the same number of batches each, together every example once
    per_host = [list(ev.batches(4, p, 2)) for p in range(2)]
    assert len(per_host[0]) == len(per_host[1]) == 2
    seen = sorted(i for host in per_host for _, m, idx in host for i in idx[m].tolist())
    assert seen == list(range(NUM_CLIPS))
    with pytest.raises(InputError, match="clip test/short has 5 frames, the protocol reads 6"):
        list(EvalClips("dmvfn_clip_folder", data_dir, "test", num_frames=6).batches(1))


def test_training_input_never_imports_tensorflow(data_dir):
    code = (
        "import sys\n"
        "from dmvfn_jax.data.pipeline import TfdsSource\n"
        f"s = TfdsSource('dmvfn_clip_folder', {str(data_dir)!r}, 'train', 0, 3, 32, 32, 2)\n"
        "s.batch(0)\n"
        "it = s.iterator(0)\n"
        "next(it)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"


def test_a_loaded_tensorflow_is_kept_off_the_accelerators(data_dir, monkeypatch):
    calls = []
    fake = types.SimpleNamespace(config=types.SimpleNamespace(set_visible_devices=lambda d, k: calls.append((d, k))))
    monkeypatch.setitem(sys.modules, "tensorflow", fake)
    source(data_dir)
    assert ([], "GPU") in calls and ([], "TPU") in calls
    monkeypatch.delitem(sys.modules, "tensorflow")
    pipeline.hide_accelerators_from_tensorflow()  # TensorFlow not loaded: nothing to hide, nothing imported
    assert "tensorflow" not in sys.modules
