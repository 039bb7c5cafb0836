"""The TFDS builders on small real and generated inputs, `tfds build`, and their bad-input handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dmvfn_jax.data.build import build
from dmvfn_jax.data.pipeline import open_split
from dmvfn_jax.data.resize import resize_linear
from dmvfn_jax.errors import BadClipError
from dmvfn_jax.data.synthetic import synthetic_video
from dmvfn_jax.errors import InputError
from dmvfn_jax.image_io import decode_image, load_image, save_png

cv2 = pytest.importorskip("cv2")  # in the test extra; here for writing and decoding test videos


def records(data_dir, name, split):
    src = open_split(name, data_dir, split)
    return {r["id"].decode(): r for r in (src[i] for i in range(len(src)))}


def link_frames(dst: Path, files) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        (dst / f.name).symlink_to(f)
    return dst


def write_clip(folder: Path, frames) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        save_png(folder / f"{i:010d}.png", f)
    return folder


def write_video(path: Path, frames, fps: float = 10.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert out.isOpened()
    for f in frames:
        out.write(np.ascontiguousarray(f[..., ::-1]))
    out.release()
    return path


def psnr(a, b) -> float:
    return float(-10 * np.log10(np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)))


# -- Cityscapes: the real 30-frame clip through the preparation tool, then the builder ----------
def test_cityscapes_from_the_real_clip(tmp_path, cityscapes_prepared):
    manual = cityscapes_prepared.parent
    (manual / "val").mkdir(exist_ok=True)
    if not (manual / "val" / "000000").exists():
        (manual / "val" / "000000").symlink_to(cityscapes_prepared / "000000")
    out = build("cityscapes", manual, tmp_path / "tfds")
    assert out["splits"] == {"train": 1, "test": 1} and out["skipped"] == {}
    rec = records(tmp_path / "tfds", "dmvfn_cityscapes", "train")["train/000000"]
    assert (int(rec["num_frames"]), int(rec["height"]), int(rec["width"])) == (30, 512, 1024)
    files = sorted((cityscapes_prepared / "000000").iterdir())
    assert len(rec["frames"]) == 30
    for i in (0, 17, 29):  # the prepared PNGs are stored byte for byte
        assert bytes(rec["frames"][i]) == files[i].read_bytes()
        np.testing.assert_array_equal(decode_image(bytes(rec["frames"][i])), load_image(files[i]))
    assert list(records(tmp_path / "tfds", "dmvfn_cityscapes", "test")) == ["val/000000"]  # ids keep the path


# -- KITTI: 9-frame windows of the real drive's frames -----------------------------------------
@pytest.fixture(scope="module")
def kitti_manual(tmp_path_factory, real_data):
    """test/000000: a 9-frame window at 832x256 made of the 7 real frames played forwards then
    back (0..6, 5, 4): the drive excerpt here is shorter than one official window."""
    files = sorted((real_data / "kitti_0023").glob("*.png"))
    frames = [resize_linear(load_image(f), 832, 256) for f in files]
    manual = tmp_path_factory.mktemp("kitti_manual")
    write_clip(manual / "test" / "000000", frames + frames[-2:-4:-1])
    write_clip(manual / "train" / "000000", frames[:7])  # too short for the protocol
    write_clip(manual / "train" / "000001", frames + frames[-2:-4:-1])
    return manual, frames


def test_kitti_window_and_a_short_one(tmp_path, kitti_manual):
    manual, frames = kitti_manual
    with pytest.raises(BadClipError, match=r"train/000000: .*7 frames, but dmvfn_kitti needs at least 9"):
        build("kitti", manual, tmp_path / "strict")
    assert not list((tmp_path / "strict" / "dmvfn_kitti").glob("1.*")), "no half-written build"
    out = build("kitti", manual, tmp_path / "tfds", skip_bad=True)
    assert out["splits"] == {"test": 1, "train": 1} and out["skipped"] == {"train": ["train/000000"]}
    rec = records(tmp_path / "tfds", "dmvfn_kitti", "test")["test/000000"]
    assert (int(rec["num_frames"]), int(rec["height"]), int(rec["width"])) == (9, 256, 832)
    np.testing.assert_array_equal(decode_image(bytes(rec["frames"][8])), frames[4])


def test_tfds_build_command(tmp_path, kitti_manual):
    """`tfds build` itself (needs tensorflow and apache-beam: the tfds-cli extra) builds from the
    manual directory, with array_record as the builders' default format."""
    manual, _ = kitti_manual
    only_test = tmp_path / "manual"
    (only_test / "test").mkdir(parents=True)
    (only_test / "test" / "000000").symlink_to(manual / "test" / "000000")
    tfds_cli = Path(sys.executable).with_name("tfds")
    cmd = [str(tfds_cli), "build", "--imports", "dmvfn_jax.data.tfds_builders", "dmvfn_kitti",
           "--manual_dir", str(only_test), "--data_dir", str(tmp_path / "tfds")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    info = json.loads((tmp_path / "tfds" / "dmvfn_kitti" / "1.1.0" / "dataset_info.json").read_text())
    assert info["fileFormat"] == "array_record"
    assert list(records(tmp_path / "tfds", "dmvfn_kitti", "test")) == ["test/000000"]


# -- Vimeo-90K: the real septuplet as a training clip, its first three frames as a test triplet --
def test_vimeo_septuplet_and_triplet(tmp_path, real_data):
    sept = sorted((real_data / "vimeo_00001_0002").glob("im*.png"))
    manual = tmp_path / "manual"
    link_frames(manual / "vimeo_interp_test" / "target" / "00001" / "0002", sept[:3])
    link_frames(manual / "vimeo_septuplet" / "sequences" / "00001" / "0002", sept)
    (manual / "vimeo_septuplet" / "sep_trainlist.txt").write_text("00001/0002\n")
    out = build("vimeo", manual, tmp_path / "tfds")
    assert out["splits"] == {"test": 1, "train": 1}
    tri = records(tmp_path / "tfds", "dmvfn_vimeo", "test")["test/00001/0002"]
    sep = records(tmp_path / "tfds", "dmvfn_vimeo", "train")["train/00001/0002"]
    assert (int(tri["num_frames"]), int(tri["height"]), int(tri["width"])) == (3, 256, 448)
    assert int(sep["num_frames"]) == 7
    assert [bytes(b) for b in sep["frames"]] == [f.read_bytes() for f in sept]

    # a triplet folder that lacks im3.png
    link_frames(manual / "vimeo_interp_test" / "target" / "00001" / "0003", sept[:2])
    with pytest.raises(BadClipError, match=r"test/00001/0003: missing frame .*0003/im3\.png"):
        build("vimeo", manual, tmp_path / "tfds2")


# -- DAVIS: the home video laid out as a DAVIS 2017 sequence ------------------------------------
def test_davis_cuts_nine_frame_clips(tmp_path, real_data):
    frames = sorted((real_data / "sam2_bedroom").glob("*.jpg"))
    assert len(frames) == 20
    manual = tmp_path / "manual"
    link_frames(manual / "JPEGImages" / "480p" / "bedroom", frames)
    (manual / "ImageSets" / "2017").mkdir(parents=True)
    (manual / "ImageSets" / "2017" / "val.txt").write_text("bedroom\n")
    out = build("davis", manual, tmp_path / "tfds")
    assert out["splits"] == {"test": 2}  # 20 frames: clips 0..8 and 9..17, two dropped
    recs = records(tmp_path / "tfds", "dmvfn_davis", "test")
    assert sorted(recs) == ["test/bedroom/000", "test/bedroom/001"]
    second = recs["test/bedroom/001"]
    assert (int(second["num_frames"]), int(second["height"]), int(second["width"])) == (9, 540, 960)
    assert bytes(second["frames"][0]) == frames[9].read_bytes()  # JPEGs stored unchanged


# -- UCF101: videos (written from the real home-video frames) and the split lists -----------------
def test_ucf101_from_videos(tmp_path, real_data):
    src = [resize_linear(load_image(f), 320, 240) for f in sorted((real_data / "sam2_bedroom").glob("*.jpg"))]
    manual = tmp_path / "manual"
    write_video(manual / "UCF-101" / "Bedroom" / "v_Bedroom_g08_c01.avi", src[:12])
    write_video(manual / "UCF-101" / "Bedroom" / "v_Bedroom_g01_c01.avi", src[:10])
    write_video(manual / "UCF-101" / "Bedroom" / "v_Bedroom_g09_c01.avi", src[:5])
    lists = manual / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("Bedroom/v_Bedroom_g08_c01.avi 1\nBedroom/v_Bedroom_g09_c01.avi 1\n")
    (lists / "testlist01.txt").write_text("Bedroom/v_Bedroom_g01_c01.avi\n")
    with pytest.raises(BadClipError, match=r"train/v_Bedroom_g09_c01: .*v_Bedroom_g09_c01\.avi: 5 frames, but "
                                           r"dmvfn_ucf101 needs at least 10"):
        build("ucf101", manual, tmp_path / "strict")
    out = build("ucf101", manual, tmp_path / "tfds", skip_bad=True)
    assert out["splits"] == {"train": 1, "test": 1}
    rec = records(tmp_path / "tfds", "dmvfn_ucf101", "train")["train/v_Bedroom_g08_c01"]
    assert (int(rec["num_frames"]), int(rec["height"]), int(rec["width"])) == (12, 240, 320)
    decoded = [decode_image(bytes(b)) for b in rec["frames"]]
    assert min(psnr(d, s) for d, s in zip(decoded, src[:12])) > 28  # MJPG is lossy; frames stay in order
    assert psnr(decoded[5], src[5]) > psnr(decoded[5], src[9]) + 3


# -- generic builders and bad input --------------------------------------------------------------
@pytest.fixture()
def clip_manual(tmp_path):
    manual = tmp_path / "manual"
    for i in range(3):
        write_clip(manual / "train" / f"clip{i}", synthetic_video(i, 4, 32, 48))
    write_clip(manual / "test" / "clip9", synthetic_video(9, 3, 32, 48))
    return manual


def test_clip_folder_builder(tmp_path, clip_manual):
    out = build("clip_folder", clip_manual, tmp_path / "tfds")
    assert out["splits"] == {"train": 3, "test": 1}
    rec = records(tmp_path / "tfds", "dmvfn_clip_folder", "train")["train/clip1"]
    np.testing.assert_array_equal(np.stack([decode_image(bytes(b)) for b in rec["frames"]]),
                                  synthetic_video(1, 4, 32, 48))
    # clip folders directly under the manual directory all go to `train`
    flat = build("clip_folder", clip_manual / "train", tmp_path / "flat")
    assert flat["splits"] == {"train": 3}


def test_bad_clips_are_named_or_skipped_and_counted(tmp_path, clip_manual):
    bad = clip_manual / "train"
    (bad / "clip1" / "0000000002.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    save_png(bad / "clip2" / "0000000001.png", np.zeros((16, 48, 3), np.uint8))
    with pytest.raises(BadClipError, match=r"train/clip1: .*clip1/0000000002\.png: unreadable image \(not a recognised"):
        build("clip_folder", clip_manual, tmp_path / "a")
    (bad / "clip1" / "0000000002.png").write_bytes((bad / "clip1" / "0000000001.png").read_bytes())
    with pytest.raises(BadClipError, match=r"train/clip2: .*clip2/0000000001\.png is 48x16 but .*is 48x32"):
        build("clip_folder", clip_manual, tmp_path / "b")
    (bad / "clip0" / "0000000001.png").unlink()  # a missing frame in the middle of a clip
    with pytest.raises(BadClipError, match=r"train/clip0: missing frame\(s\): frame numbers jump from 0 to 2 at "
                                           r".*clip0/0000000002\.png"):
        build("clip_folder", clip_manual, tmp_path / "b2")
    (bad / "clip0" / "0000000001.png").write_bytes((bad / "clip0" / "0000000000.png").read_bytes())
    with pytest.raises(BadClipError, match=r"test/clip9: .*3 frames, but dmvfn_clip_folder needs at least 4"):
        build("clip_folder", clip_manual, tmp_path / "c", skip_bad=False, min_frames=4, overwrite=True)

    # the command: a clear one-line error, then --skip-bad builds the rest and counts what it skipped
    cmd = [sys.executable, "-m", "dmvfn_jax.data.build", "clip_folder", "--manual_dir", str(clip_manual),
           "--data_dir", str(tmp_path / "cli")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "error: train/clip2" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "cli" / "dmvfn_clip_folder" / "1.1.0").exists()
    r = subprocess.run(cmd + ["--skip-bad"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "test 1, train 2 clips at the clips' own sizes; skipped 1 bad clip(s)" in r.stdout
    assert sorted(records(tmp_path / "cli", "dmvfn_clip_folder", "train")) == ["train/clip0", "train/clip1"]
    # a split whose clips are all bad: a clear error, not TFDS's "no examples were yielded"
    with pytest.raises(InputError, match=r"every clip of split 'test' was bad and skipped \(1\); first: test/clip9: .*3 frames, "
                                              r"but dmvfn_clip_folder needs at least 5 \(min_frames\)"):
        build("clip_folder", clip_manual, tmp_path / "d", skip_bad=True, min_frames=5)


def test_video_files_builder(tmp_path, real_data):
    src = [resize_linear(load_image(f), 96, 64) for f in sorted((real_data / "sam2_bedroom").glob("*.jpg"))[:6]]
    manual = tmp_path / "manual"
    write_video(manual / "bedroom.avi", src)
    out = build("video_files", manual, tmp_path / "tfds")
    assert out["splits"] == {"train": 1}
    rec = records(tmp_path / "tfds", "dmvfn_video_files", "train")["train/bedroom"]
    assert (int(rec["num_frames"]), int(rec["height"]), int(rec["width"])) == (6, 64, 96)
    (manual / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(BadClipError, match=r"train/broken: .*broken\.mp4: unreadable video"):
        build("video_files", manual, tmp_path / "tfds2")


def test_clip_table_in_metadata_lists_every_record_in_order(tmp_path):
    """metadata.json's table says each record's id, length and size without reading it; a build
    without the table (before 1.1.0) is read record by record instead, with a note."""
    import logging

    from dmvfn_jax.data.pipeline import clip_index

    manual = tmp_path / "manual"
    for name, (n, h, w) in {"b": (5, 32, 48), "A": (4, 48, 64), "c2": (3, 32, 48), "c10": (6, 40, 40)}.items():
        write_clip(manual / "test" / name, synthetic_video(len(name) + n, n, h, w))
    build("clip_folder", manual, tmp_path / "tfds")
    meta = json.loads((tmp_path / "tfds" / "dmvfn_clip_folder" / "1.1.0" / "metadata.json").read_text())
    assert meta["size"] is None
    src = open_split("dmvfn_clip_folder", tmp_path / "tfds", "test")
    stored = [[src[i]["id"].decode(), len(src[i]["frames"]), int(src[i]["height"]), int(src[i]["width"])]
              for i in range(len(src))]
    assert meta["clips"]["test"] == stored == [["test/A", 4, 48, 64], ["test/b", 5, 32, 48], ["test/c10", 6, 40, 40],
                                               ["test/c2", 3, 32, 48]]
    assert [list(c) for c in clip_index("dmvfn_clip_folder", tmp_path / "tfds", "test")] == stored
    (tmp_path / "tfds" / "dmvfn_clip_folder" / "1.1.0" / "metadata.json").unlink()
    records_log, logger = [], logging.getLogger("dmvfn_jax.data")  # its own handler: caplog misses it
    handler = logging.Handler(logging.INFO)  # once training has configured the dmvfn_jax logger
    handler.emit = lambda record: records_log.append(record.getMessage())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert [list(c) for c in clip_index("dmvfn_clip_folder", tmp_path / "tfds", "test")] == stored
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert any("no clip table in metadata.json (built before 1.1.0)" in m for m in records_log)
    assert clip_index("dmvfn_clip_folder", tmp_path / "tfds", "test", read_records=False) is None


def test_resize_on_build_makes_mixed_videos_one_size(tmp_path, real_data):
    """--size: videos and frame folders of mixed sizes become one size, each frame resized as
    `prepare` resizes it; a finished build at another size is refused, not reused."""
    frames = {"bedroom": [load_image(f) for f in sorted((real_data / "sam2_bedroom").glob("*.jpg"))[:4]],
              "kitti": [load_image(f) for f in sorted((real_data / "kitti_0023").glob("*.png"))[:3]]}
    videos, folders = tmp_path / "videos", tmp_path / "folders"
    for name, fs in frames.items():
        write_clip(folders / name, fs)
    small = {k: [resize_linear(f, 160, 96) for f in v] for k, v in frames.items()}  # videos of two sizes
    small["kitti"] = [resize_linear(f, 192, 64) for f in frames["kitti"]]
    for name, fs in small.items():
        write_video(videos / f"{name}.avi", fs)
    out = build("clip_folder", folders, tmp_path / "tfds", size=(64, 40))
    assert out["size"] == [64, 40]
    recs = records(tmp_path / "tfds", "dmvfn_clip_folder", "train")
    for name, fs in frames.items():
        got = np.stack([decode_image(bytes(b)) for b in recs[f"train/{name}"]["frames"]])
        np.testing.assert_array_equal(got, np.stack([resize_linear(f, 64, 40) for f in fs]))
    meta = json.loads((tmp_path / "tfds" / "dmvfn_clip_folder" / "1.1.0" / "metadata.json").read_text())
    assert meta["size"] == [64, 40] and meta["clips"]["train"] == [["train/bedroom", 4, 40, 64], ["train/kitti", 3, 40, 64]]
    build("clip_folder", folders, tmp_path / "tfds", size=(64, 40))  # the same size: reused
    with pytest.raises(InputError, match=r"holds a build at 64x40, not the clips' own sizes: pass --overwrite"):
        build("clip_folder", folders, tmp_path / "tfds")
    assert build("clip_folder", folders, tmp_path / "tfds", overwrite=True)["size"] is None
    with pytest.raises(InputError, match="resizing on build is for clip_folder and video_files"):
        build("kitti", folders, tmp_path / "k", size=(64, 40))
    # the command, on videos
    cmd = [sys.executable, "-m", "dmvfn_jax.data.build", "video_files", "--manual_dir", str(videos),
           "--data_dir", str(tmp_path / "v"), "--size", "96x64"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "train 2 clips at 96x64" in r.stdout
    recs = records(tmp_path / "v", "dmvfn_video_files", "train")
    assert {(int(x["height"]), int(x["width"])) for x in recs.values()} == {(64, 96)}
    r = subprocess.run(cmd[:-1] + ["96by64"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "--size must be WIDTHxHEIGHT in pixels" in r.stderr.strip().splitlines()[-1]


def test_missing_manual_dir_and_empty_dataset(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        build("kitti", tmp_path / "nothing", tmp_path / "tfds")
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(InputError, match=r"no clips found for dmvfn_kitti"):
        build("kitti", tmp_path / "empty", tmp_path / "tfds")
