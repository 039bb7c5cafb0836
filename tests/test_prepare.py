"""Data preparation (`dmvfn_jax.data.prepare`): OpenCV-exact resize, layouts, resume, bad input.

Fake datasets are built in tmp_path from symlinks to the shared real frames (never copies) and
small generated frames.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmvfn_jax.data import prepare
from dmvfn_jax.data.prepare import main, prepare_cityscapes, prepare_kitti
from dmvfn_jax.data.resize import resize_linear
from dmvfn_jax.progress import ProgressBar
from dmvfn_jax.errors import InputError
from dmvfn_jax.image_io import load_image


# -- helpers ------------------------------------------------------------------------------
def resize_float_reference(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear with half-pixel centres and border clamping in float64, rounded half up."""
    h_in, w_in = img.shape[:2]

    def taps(src, dst):
        f = np.clip((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0, src - 1)
        s = np.floor(f).astype(int)
        return s, np.minimum(s + 1, src - 1), f - s

    x0, x1, fx = taps(w_in, width)
    y0, y1, fy = taps(h_in, height)
    x = img.astype(np.float64)
    t = x[:, x0] * (1 - fx)[None, :, None] + x[:, x1] * fx[None, :, None]
    out = t[y0] * (1 - fy)[:, None, None] + t[y1] * fy[:, None, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """mtime and sha256 of every file under root, following links to the real frames."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            for q in {p, p.resolve()}:
                out[str(q)] = (q.stat().st_mtime_ns, hashlib.sha256(q.read_bytes()).hexdigest())
    return out


def clip_mtimes(clip: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in clip.iterdir()}


def png_sizes(clip: Path) -> set[tuple[int, int]]:
    sizes = set()
    for p in clip.iterdir():
        with Image.open(p) as im:
            sizes.add(im.size)
    return sizes


def frame_names(n: int) -> list[str]:
    return [f"{i:010d}.png" for i in range(n)]


def solid(value: int, w: int, h: int) -> Image.Image:
    return Image.fromarray(np.full((h, w, 3), value, np.uint8))


def make_city(folder: Path, city: str, n: int, w: int = 96, h: int = 48, seq: int = 0) -> list[Path]:
    """n PIL-made frames named like Cityscapes', frame i a solid grey of value (3 * i + 1) % 256."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{city}_{seq + i // 30:06d}_{i % 30:06d}_leftImg8bit.png"
        solid((3 * i + 1) % 256, w, h).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def city_tree(tmp_path_factory, real_data) -> Path:
    """train/aachen: links to the 30 real frames; train/bochum: 31 made ones; val/frankfurt: 30 made."""
    root = tmp_path_factory.mktemp("cityscapes") / "leftImg8bit_sequence"
    aachen = root / "train" / "aachen"
    aachen.mkdir(parents=True)
    real = sorted((real_data / "cityscapes_aachen00").glob("*_leftImg8bit.jpg"))
    assert len(real) == 30
    for p in real:
        (aachen / p.name).symlink_to(p)
    make_city(root / "train" / "bochum", "bochum", 31)
    make_city(root / "val" / "frankfurt", "frankfurt", 30, w=64, h=32)
    return root


@pytest.fixture(scope="module")
def kitti_tree(tmp_path_factory, real_data) -> Path:
    """2011_09_26/2011_09_26_drive_0023_sync/image_02/data: 7 linked real frames + 5 made (1242x375)."""
    root = tmp_path_factory.mktemp("kitti") / "raw"
    data = root / "2011_09_26" / "2011_09_26_drive_0023_sync" / "image_02" / "data"
    data.mkdir(parents=True)
    real = sorted((real_data / "kitti_0023").glob("*.png"))
    assert len(real) == 7
    for p in real:
        (data / p.name).symlink_to(p)
    rng = np.random.default_rng(0)
    for i in range(7, 12):
        Image.fromarray(rng.integers(0, 256, (375, 1242, 3), dtype=np.uint8)).save(data / f"{i:010d}.png")
    return root


# -- resize -------------------------------------------------------------------------------
def test_resize_matches_cv2_on_real_frames(real_data):
    cv2 = pytest.importorskip("cv2")
    cases = [
        (load_image(real_data / "cityscapes_aachen00" / "aachen_000000_000007_leftImg8bit.jpg"), 1024, 512),
        (load_image(real_data / "kitti_0023" / "0000000003.png"), 832, 256),
        (load_image(real_data / "vimeo_00001_0002" / "im1.png"), 300, 171),  # odd sizes, upscaling rows
        (load_image(real_data / "sam2_bedroom" / "00000.jpg"), 1000, 77),
    ]
    for img, w, h in cases:
        want = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        got = resize_linear(img, w, h)
        diff = np.abs(got.astype(int) - want.astype(int))
        print(f"cv2 {cv2.__version__} {img.shape[1]}x{img.shape[0]} -> {w}x{h}: max |diff| {diff.max()}, "
              f"{np.count_nonzero(diff)} values differ")
        assert got.shape == want.shape and got.dtype == np.uint8
        assert diff.max() <= 1
        if (w, h) in (prepare.CITYSCAPES_SIZE, prepare.KITTI_SIZE):  # the official sizes: bit-exact
            np.testing.assert_array_equal(got, want)


def test_resize_matches_float_reference():
    rng = np.random.default_rng(1)
    for (h_in, w_in, h, w) in [(375, 1242, 256, 832), (64, 128, 32, 64), (37, 53, 90, 19), (20, 30, 20, 30)]:
        img = rng.integers(0, 256, (h_in, w_in, 3), dtype=np.uint8)
        got = resize_linear(img, w, h)
        want = resize_float_reference(img, w, h)
        assert got.shape == (h, w, 3)
        assert np.abs(got.astype(int) - want).max() <= 1
        if (w_in, h_in) in ((2 * w, 2 * h), (w, h)):  # exact halving (the 2x2 mean) and identity
            np.testing.assert_array_equal(got, want)
    assert resize_linear(img[..., 0], 7, 5).shape == (5, 7)


# -- Cityscapes ---------------------------------------------------------------------------
def test_cityscapes_layout_sizes_and_sources_untouched(city_tree, tmp_path, capsys):
    before = snapshot(city_tree)
    out = tmp_path / "out"
    assert main(["cityscapes", "--input", str(city_tree), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "train/bochum: 31 frames -> 1 clip(s) of 30, the last 1 frame(s) dropped" in captured.out
    assert "official test set" in captured.out
    assert "3/3 clips" in captured.err  # the progress bar's last line

    assert sorted(p.name for p in (out / "train").iterdir()) == ["000000", "000001"]  # aachen, then bochum
    assert sorted(p.name for p in (out / "val").iterdir()) == ["000000"]  # the counter restarts per split
    for clip in (out / "train" / "000000", out / "train" / "000001", out / "val" / "000000"):
        assert sorted(p.name for p in clip.iterdir()) == frame_names(30)
        assert png_sizes(clip) == {(1024, 512)}
    # content and order: the resized source frame k is frame k of its clip
    src = sorted(city_tree.glob("train/aachen/*"))[12]
    np.testing.assert_array_equal(load_image(out / "train" / "000000" / "0000000012.png"),
                                  resize_linear(load_image(src), 1024, 512))
    for k in (0, 17, 29):
        assert np.unique(load_image(out / "train" / "000001" / f"{k:010d}.png")).tolist() == [3 * k + 1]
    assert snapshot(city_tree) == before  # nothing under --input was written, touched or removed


def test_cityscapes_resume_rewrites_only_missing_clips(city_tree, tmp_path):
    out = tmp_path / "out"
    first = prepare_cityscapes(city_tree, out, log=None, progress=False)
    assert (first["clips"], first["written"], first["frames_dropped"]) == (3, 3, 1)
    assert first["splits"]["train"]["clips"] == 2 and first["splits"]["val"]["clips"] == 1
    kept = {c: clip_mtimes(out / c) for c in ("train/000000", "val/000000")}

    # an interrupted run: clip train/000001 is gone and its half-written temporary folder remains
    for p in (out / "train" / "000001").iterdir():
        p.unlink()
    (out / "train" / "000001").rmdir()
    stale = out / "train" / ".000001.tmp"
    stale.mkdir()
    (stale / "0000000000.png").write_bytes(b"half")

    second = prepare_cityscapes(city_tree, out, workers=2, log=None, progress=False)
    assert (second["written"], second["existing"], second["stale_removed"]) == (1, 2, 1)
    assert not stale.exists()
    assert sorted(p.name for p in (out / "train" / "000001").iterdir()) == frame_names(30)
    assert {c: clip_mtimes(out / c) for c in kept} == kept  # the complete clips were not rewritten

    third = prepare_cityscapes(city_tree, out, split="val", overwrite=True, log=None, progress=False)
    assert (third["clips"], third["written"], third["existing"]) == (1, 1, 0)
    assert clip_mtimes(out / "val" / "000000") != kept["val/000000"]
    assert clip_mtimes(out / "train" / "000000") == kept["train/000000"]


@pytest.fixture()
def bad_city_tree(tmp_path) -> tuple[Path, Path, Path]:
    """train/bad: 90 small frames; frame 37 is random bytes named .png; frame 70 has another size."""
    root = tmp_path / "bad_seq"
    frames = make_city(root / "train" / "bad", "bad", 90, w=32, h=16)
    frames[37].write_bytes(np.random.default_rng(2).bytes(500))
    solid(5, 40, 16).save(frames[70])
    return root, frames[37], frames[70]


def test_cityscapes_corrupt_frame_error_names_clip_and_file(bad_city_tree, tmp_path, capsys):
    root, corrupt, _ = bad_city_tree
    before = snapshot(root)
    out = tmp_path / "out"
    assert main(["cityscapes", "--input", str(root), "--output", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prepare: error: cityscapes train clip 000001 (bad frames 30..59): ")
    assert str(corrupt) in err and "unreadable image" in err and "--skip-bad" in err
    assert sorted(p.name for p in (out / "train").iterdir()) == ["000000"]  # no half-written clip left
    assert snapshot(root) == before


def test_cityscapes_skip_bad_counts_bad_clips(bad_city_tree, tmp_path):
    root, corrupt, other_size = bad_city_tree
    with pytest.raises(InputError, match=r"clip 000002 .*40x16 but .*32x16"):
        _strict_from_clip_2(root, tmp_path / "strict")
    lines = []
    s = prepare_cityscapes(root, tmp_path / "out", skip_bad=True, log=lines.append, progress=False)
    assert (s["clips"], s["written"], s["skipped_bad"]) == (3, 1, 2)
    assert [b["file"] for b in s["bad"]] == [str(corrupt), str(other_size)]
    assert sorted(p.name for p in (tmp_path / "out" / "train").iterdir()) == ["000000"]  # ids 1, 2 stay free
    assert sum(line.startswith("skipped cityscapes train clip") for line in lines) == 2
    assert "2 bad skipped" in lines[-1]


def _strict_from_clip_2(root: Path, out: Path):
    """Runs without --skip-bad with clips 0 and 1 already complete, so clip 2 (a frame of another size) fails."""
    for c in ("000000", "000001"):
        (out / "train" / c).mkdir(parents=True)
        for name in frame_names(30):
            (out / "train" / c / name).write_bytes(b"")
    return prepare_cityscapes(root, out, log=None, progress=False)


def test_cityscapes_warns_about_a_clip_that_leaves_its_sequence(tmp_path):
    root = tmp_path / "seq"
    make_city(root / "val" / "munster", "munster", 31, w=8, h=4)[5].unlink()  # 30 frames left, one missing
    lines = []
    s = prepare_cityscapes(root, tmp_path / "out", log=lines.append, progress=False)
    assert (s["written"], s["sequence_warnings"]) == (1, 1)
    assert any("warning: cityscapes val clip 000000 (munster frames 0..29) spans a sequence break or a missing "
               "frame: munster_000000_000004_leftImg8bit.png is followed by munster_000000_000006" in x for x in lines)


def test_cityscapes_bad_arguments(city_tree, tmp_path):
    with pytest.raises(InputError, match="no train/ or val/ folder"):
        prepare_cityscapes(city_tree / "train", tmp_path / "o", log=None)
    with pytest.raises(InputError, match="lies inside --input"):
        prepare_cityscapes(city_tree, city_tree / "prepared", log=None)
    with pytest.raises(InputError, match="no such folder"):
        prepare_cityscapes(tmp_path / "missing", tmp_path / "o", log=None)
    assert not (city_tree / "prepared").exists()
    # an output folder that holds the input is fine as long as no clip folder would land on it
    seq = tmp_path / "cityscapes" / "leftImg8bit_sequence"
    make_city(seq / "val" / "lindau", "lindau", 30, w=8, h=4)
    s = prepare_cityscapes(seq, seq.parent, log=None, progress=False)
    assert s["written"] == 1 and (seq.parent / "val" / "000000").is_dir()
    (tmp_path / "k" / "000003").mkdir(parents=True)
    with pytest.raises(InputError, match="lies where this run writes clip folders"):
        prepare_kitti(tmp_path / "k" / "000003", tmp_path / "k", log=None)


# -- KITTI --------------------------------------------------------------------------------
def test_kitti_windows_sizes_and_sources_untouched(kitti_tree, tmp_path, capsys):
    before = snapshot(kitti_tree)
    drives = tmp_path / "test_drives.txt"
    drives.write_text("# KITTI test drives\n2011_09_26/2011_09_26_drive_0023_sync\n\n")
    out = tmp_path / "out"
    assert main(["kitti", "--input", str(kitti_tree), "--output", str(out), "--drives", str(drives)]) == 0
    assert "4/4 windows" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}" for i in range(4)]  # 12 frames -> 4 windows
    for i in range(4):
        assert sorted(p.name for p in (out / f"{i:06d}").iterdir()) == frame_names(9)
    assert png_sizes(out / "000000") == png_sizes(out / "000003") == {(832, 256)}
    data = kitti_tree / "2011_09_26" / "2011_09_26_drive_0023_sync" / "image_02" / "data"
    want = resize_linear(load_image(data / "0000000005.png"), 832, 256)
    for window, k in ((0, 5), (1, 4), (3, 2)):  # source frame 5 sits at 5 - window in each window
        np.testing.assert_array_equal(load_image(out / f"{window:06d}" / f"{k:010d}.png"), want)
    assert snapshot(kitti_tree) == before

    # a drive folder given directly, the name without _sync: the same windows, all complete already
    s = prepare_kitti(data.parent.parent, out, log=None, progress=False)
    assert (s["clips"], s["existing"], s["written"]) == (4, 4, 0)
    s = prepare_kitti(kitti_tree, out, ["2011_09_26_drive_0023"], log=None, progress=False)
    assert s["drives"][0]["drive"] == "2011_09_26_drive_0023_sync" and s["existing"] == 4


def make_drive(root: Path, name: str, n: int, odd: dict[int, tuple[int, int]] | None = None, skip=()) -> Path:
    """n small frames (62x19; `odd` gives other sizes), leaving out the numbers in `skip`."""
    odd = odd or {}
    data = root / name[:10] / name / "image_02" / "data"
    data.mkdir(parents=True)
    for i in range(n):
        if i not in skip:
            solid(i, *odd.get(i, (62, 19))).save(data / f"{i:010d}.png")
    return data


def test_kitti_bad_drives(tmp_path):
    raw = tmp_path / "raw"
    short = make_drive(raw, "2011_09_28_drive_0001_sync", 8)
    make_drive(raw, "2011_09_28_drive_0002_sync", 10, odd={9: (60, 19)})
    gap = make_drive(raw, "2011_09_28_drive_0003_sync", 11, skip=(4,))  # 10 frames, 0000000004 missing
    make_drive(raw, "2011_09_28_drive_0004_sync", 9)
    truncated = make_drive(raw, "2011_09_28_drive_0005_sync", 9) / "0000000003.png"
    truncated.write_bytes(truncated.read_bytes()[:-40])  # cut inside the pixel data

    with pytest.raises(InputError, match=r"window 000000 .*0000000003.png: unreadable image .*truncated"):
        prepare_kitti(raw, tmp_path / "o0", ["2011_09_28_drive_0005"], log=None, progress=False)

    with pytest.raises(InputError, match=r"drive 2011_09_28_drive_0001_sync.*holds 8 frame\(s\); a window needs 9"):
        prepare_kitti(raw, tmp_path / "o1", ["2011_09_28_drive_0001_sync"], log=None, progress=False)
    with pytest.raises(InputError, match=r"window 000001 \(frames 1..9\): .*0000000009.png is 60x19 but "
                                         r".*0000000001.png is 62x19"):
        prepare_kitti(raw, tmp_path / "o2", ["2011_09_28_drive_0002_sync"], log=None, progress=False)
    with pytest.raises(InputError, match=r"window 000000 \(frames 0..8\): frame 4 missing"):
        prepare_kitti(raw, tmp_path / "o3", ["2011_09_28_drive_0003_sync"], log=None, progress=False)
    with pytest.raises(InputError, match="not found under .*: nope_sync"):
        prepare_kitti(raw, tmp_path / "o4", ["2011_09_28_drive_0004_sync", "nope_sync"], log=None)

    names = [f"2011_09_28_drive_000{i}_sync" for i in (1, 2, 3, 4, 5)]
    s = prepare_kitti(raw, tmp_path / "out", names, skip_bad=True, log=None, progress=False)
    # drive 1 skipped; drive 2: windows 0, 1 (1 bad); drive 3: windows 2, 3 (both span the gap);
    # drive 4: window 4; drive 5: window 5 (truncated frame)
    assert [d["error"] for d in s["drives_skipped"]] == [f"{short} holds 8 frame(s); a window needs 9"]
    assert (s["clips"], s["written"], s["skipped_bad"]) == (6, 2, 4)
    assert [b["clip"].split(" (")[0] for b in s["bad"]] == [
        "kitti drive 2011_09_28_drive_0002_sync window 000001",
        "kitti drive 2011_09_28_drive_0003_sync window 000002",
        "kitti drive 2011_09_28_drive_0003_sync window 000003",
        "kitti drive 2011_09_28_drive_0005_sync window 000005",
    ]
    assert s["bad"][3]["file"] == str(truncated)
    assert s["bad"][1]["file"] == str(gap / "0000000004.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000", "000004"]
    assert png_sizes(tmp_path / "out" / "000004") == {(832, 256)}


def test_progress_line_format():
    bar = ProgressBar(30, "clips", log=None, stream=open(os.devnull, "w"))
    bar.done, bar.new = 12, 12
    bar.t0 -= 41.4  # 12 clips in 41.4 s -> 18 left in 62 s
    assert bar.line() == "[############..................] 12/30 clips, ETA 1m02s"
