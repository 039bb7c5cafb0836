"""TFDS builders for the datasets DMVFN trains and tests on (manual download; see each class).

Importing this module registers the builders with TFDS:

| builder | manual directory holds | splits |
| --- | --- | --- |
| `dmvfn_cityscapes` | `prepare cityscapes` output: `train/`, `val/` of 30-frame clip folders | train, test (= val) |
| `dmvfn_kitti` | `prepare kitti` output, run once per drive list: `train/`, `test/` of 9-frame windows | train, test |
| `dmvfn_vimeo` | `vimeo_interp_test/target/<a>/<b>/im1..3.png` and/or `vimeo_septuplet/` | test (triplets), train (septuplets) |
| `dmvfn_davis` | DAVIS 2017: `JPEGImages/480p/<seq>/`, `ImageSets/2017/{train,val}.txt` | train, test (= val), 9-frame clips |
| `dmvfn_ucf101` | `ucfTrainTestlist/` and `UCF-101/<class>/<video>.avi` (or `frames/<video>/`) | train, test (split 1) |
| `dmvfn_clip_folder` | `<split>/<clip>/<frames>`, or `<clip>/<frames>` (all train) | as found |
| `dmvfn_video_files` | `<split>/<video files>`, or video files (all train) | as found |

Build with `tfds build` (the manual directory is `--manual_dir`):

    tfds build --imports dmvfn_jax.data.tfds_builders dmvfn_cityscapes --manual_dir DIR --data_dir OUT

or with `python -m dmvfn_jax.data.build cityscapes --manual_dir DIR --data_dir OUT [--skip-bad]`,
which adds a summary and `--skip-bad`. Builds are written as ArrayRecord (random access: the
training input addresses examples by index, which makes it exactly resumable).

Every example is one clip: `id` (its path under the manual directory, e.g. `train/000012`),
`frames` (a sequence of encoded images, PNG or JPEG exactly as the source files hold them; video
frames are stored as PNG), `num_frames`, `height`, `width`. Frames are decoded once at build time
to check them: a frame that does not decode, frames of different sizes inside a clip or a clip
shorter than its dataset's protocol needs, or numbered frames (`0007.png`) whose numbers skip
one (a missing frame) stop the build with an error naming the clip and the
file (`BadClipError`), or with `skip_bad=True` skip the clip; skipped clips are counted in the log
and listed in `builder.skipped`.

Version 1.1.0 stores the records of a split in clip-id order and writes `metadata.json` beside
the build: `clips` (per split, record i's `[id, num_frames, height, width]`) and `size` (the
build's resize target `[width, height]`, or null when the clips keep their own sizes). So a
reader knows every clip's length and size without reading a record (`pipeline.clip_index`).
The generic builders (`clip_folder`, `video_files`) take `size=(width, height)`: every frame is
resized on build exactly as `prepare` resizes (`resize_linear`, OpenCV's INTER_LINEAR) and
stored as PNG, so a folder of mixed videos becomes one uniform dataset.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from dmvfn_jax.data.resize import resize_linear
from dmvfn_jax.errors import BadClipError, InputError
from dmvfn_jax.image_io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, FrameError, decode_image, read_video

log = logging.getLogger("dmvfn_jax.data")

_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ClipSpec:
    """One clip to store: frame files, or a function that decodes the frames (videos)."""

    id: str
    files: tuple[Path, ...] = ()
    read: Callable[[], list[np.ndarray]] | None = None
    source: Path | None = None  # the clip folder or video file
    problem: str | None = None  # known before reading (e.g. a missing frame of a triplet)


def image_files(folder: Path) -> list[Path]:
    """Image files of a folder sorted by name ([] if there are none)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_clips(root: Path, prefix: str) -> list[ClipSpec]:
    """One clip per sub-folder of `root` (its image files, sorted by name)."""
    return [ClipSpec(f"{prefix}/{c.name}", tuple(image_files(c)), source=c) for c in subfolders(root)]


def encode_png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


class ClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the DMVFN builders: clips of frames, checked, stored as encoded images.

    Subclasses define `_find_clips(manual_dir) -> {split: [ClipSpec]}` and `MIN_FRAMES`.
    Keyword arguments: `skip_bad` (skip and count bad clips instead of stopping), `min_frames`
    (override the protocol's minimum clip length) and the usual TFDS ones (`data_dir`, ...).
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "Records in clip-id order; metadata.json lists every clip's frame count and size; "
                 "optional resize on build (generic builders).",
    }
    MIN_FRAMES = 3
    PROTOCOL = "a triplet"
    RESIZABLE = False  # whether `size=` is accepted (the generic builders)

    def __init__(self, *, skip_bad: bool = False, min_frames: int | None = None,
                 size: tuple[int, int] | None = None, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        if kwargs["file_format"] is None:  # `tfds build` passes None when --file_format is not given
            kwargs["file_format"] = "array_record"
        if size is not None:
            if not self.RESIZABLE:
                raise InputError(
                    f"{type(self).__name__}: resizing on build is for clip_folder and video_files; "
                    "the official datasets are resized by `python -m dmvfn_jax.data.prepare`"
                )
            size = (int(size[0]), int(size[1]))
            if min(size) < 1:
                raise InputError(f"size must be positive (width, height), got {size}")
        self.size = size
        self.skip_bad = bool(skip_bad)
        self.min_frames = int(min_frames) if min_frames is not None else self.MIN_FRAMES
        self.protocol = self.PROTOCOL if min_frames is None else "min_frames"
        self.current_split: str | None = None
        self.skipped: dict[str, list[tuple[str, str]]] = {}
        self.clip_table: dict[str, list[list]] = {}  # split -> [id, num_frames, height, width] per clip
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(),
                "frames": tfds.features.Sequence(tfds.features.Image(shape=(None, None, 3))),
                "num_frames": np.int32,
                "height": np.int32,
                "width": np.int32,
            }),
            description=(self.__doc__ or "").strip().split("\n\n")[0],
            disable_shuffling=True,  # records in key (clip id) order, so metadata.json can index them
            metadata=tfds.core.MetadataDict(),
        )

    def _find_clips(self, manual_dir: Path) -> dict[str, list[ClipSpec]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        manual_dir = Path(dl_manager.manual_dir)
        splits = self._find_clips(manual_dir)
        splits = {name: clips for name, clips in splits.items() if clips}
        if not splits:
            raise InputError(
                f"{manual_dir}: no clips found for {self.name}. Expected:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        for name, clips in splits.items():
            log.info("%s: split %s has %d clips", self.name, name, len(clips))
        return {name: self._generate_examples(name, clips) for name, clips in splits.items()}

    def _load(self, clip: ClipSpec) -> dict:
        if clip.problem is not None:
            raise BadClipError(clip.id, None, clip.problem)
        if clip.read is not None:
            try:
                frames = clip.read()
            except FrameError as e:
                raise BadClipError(clip.id, clip.source, str(e)) from e
            encoded = [encode_png(f) for f in frames]
            names = [f"{clip.source} frame {i}" for i in range(len(frames))]
        else:
            gap = _numbering_gap(clip.files)
            if gap is not None:
                raise BadClipError(clip.id, gap[0], gap[1])
            encoded, frames, names = [], [], []
            for f in clip.files:
                try:
                    data = f.read_bytes()
                    frames.append(decode_image(data, f))
                except FrameError as e:
                    raise BadClipError(clip.id, f, str(e)) from e
                except OSError as e:
                    raise BadClipError(clip.id, f, f"{f}: unreadable ({e.strerror or e})") from e
                encoded.append(data)
                names.append(str(f))
        if len(frames) < self.min_frames:
            raise BadClipError(
                clip.id, clip.source,
                f"{clip.source or clip.id}: {len(frames)} frames, but {self.name} needs at least {self.min_frames} ({self.protocol})",
            )
        h, w = frames[0].shape[:2]
        for name, frame in zip(names, frames):
            if frame.shape[:2] != (h, w):
                raise BadClipError(
                    clip.id, name,
                    f"{name} is {frame.shape[1]}x{frame.shape[0]} but {names[0]} is {w}x{h}: "
                    "frames of different sizes in one clip",
                )
        if self.size is not None and (w, h) != self.size:
            w, h = self.size
            encoded = [encode_png(resize_linear(f, w, h)) for f in frames]
        return {"id": clip.id, "frames": encoded, "num_frames": len(frames), "height": h, "width": w}

    def _generate_examples(self, split: str, clips: Sequence[ClipSpec]) -> Iterator[tuple[str, dict]]:
        skipped = self.skipped.setdefault(split, [])
        table = self.clip_table.setdefault(split, [])
        self.current_split = split
        clips = sorted(clips, key=lambda c: c.id)
        # With shuffling disabled TFDS stores records in key order; integer keys (it wants ints),
        # spread evenly over its 128-bit key range so that a split too big for memory is sorted in
        # its 1000 buckets rather than one.
        spacing = 2**128 // max(len(clips), 1)
        for k, clip in enumerate(clips):
            try:
                example = self._load(clip)
            except BadClipError as e:
                if not self.skip_bad:
                    raise
                skipped.append((clip.id, str(e)))
                log.warning("%s %s: skipped bad clip: %s", self.name, split, e)
                continue
            table.append([clip.id, example["num_frames"], example["height"], example["width"]])
            yield k * spacing, example
        if skipped:
            log.warning("%s %s: skipped %d bad clip(s) (skip_bad=True)", self.name, split, len(skipped))
        # the records are stored in key order, i.e. in the table's order
        self.info.metadata["clips"] = {**self.info.metadata.get("clips", {}), split: table}
        self.info.metadata["size"] = None if self.size is None else list(self.size)


def _numbering_gap(files: Sequence[Path]) -> tuple[Path, str] | None:
    """Frames named by number (0000.png, 0001.png, ...) whose numbers skip one: (file, reason)."""
    if len(files) < 2 or not all(f.stem.isdigit() for f in files):
        return None
    numbers = [int(f.stem) for f in files]
    for prev, (num, f) in zip(numbers, zip(numbers[1:], files[1:])):
        if num != prev + 1:
            return f, f"missing frame(s): frame numbers jump from {prev} to {num} at {f}"
    return None


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{path}: missing; expected {what}")
    return path


class DmvfnCityscapes(ClipBuilder):
    """Cityscapes sequences as DMVFN uses them: 30-frame clips at 1024x512 (train 2,975, test 500)."""

    MIN_FRAMES = 30
    PROTOCOL = "30-frame training clips"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download leftImg8bit_sequence_trainvaltest.zip from https://www.cityscapes-dataset.com (login
needed), unzip it, and prepare it the official way (30-frame clips, 1024x512 PNG):
    python -m dmvfn_jax.data.prepare cityscapes --input leftImg8bit_sequence --output MANUAL_DIR
MANUAL_DIR then holds train/<clip>/ and val/<clip>/ folders of 30 frames each; val is the
official test set (split `test`)."""

    def _find_clips(self, manual_dir):
        out = {}
        for folder, split in (("train", "train"), ("val", "test")):
            if (manual_dir / folder).is_dir():
                out[split] = folder_clips(manual_dir / folder, folder)
        return out


class DmvfnKitti(ClipBuilder):
    """KITTI raw as DMVFN uses it: centred 9-frame windows at 832x256 (official test: 1,337)."""

    MIN_FRAMES = 9
    PROTOCOL = "9-frame windows"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the KITTI raw drives (http://www.cvlibs.net/datasets/kitti/raw_data.php) of the train
and test lists of the official DMVFN README and prepare each list the official way:
    python -m dmvfn_jax.data.prepare kitti --input KITTI_RAW --output MANUAL_DIR/train --drives train_drives.txt
    python -m dmvfn_jax.data.prepare kitti --input KITTI_RAW --output MANUAL_DIR/test --drives test_drives.txt
MANUAL_DIR then holds train/<window>/ and test/<window>/ folders of 9 frames each."""

    def _find_clips(self, manual_dir):
        return {s: folder_clips(manual_dir / s, s) for s in ("train", "test") if (manual_dir / s).is_dir()}


def _read_list(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


class DmvfnVimeo(ClipBuilder):
    """Vimeo-90K: the triplet test set DMVFN evaluates on (448x256), and septuplets for training."""

    MIN_FRAMES = 3
    PROTOCOL = "a triplet"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
From http://toflow.csail.mit.edu download vimeo_interp_test.zip (and, to train, vimeo_septuplet.zip)
and unzip them into MANUAL_DIR:
    MANUAL_DIR/vimeo_interp_test/target/<a>/<b>/im1.png im2.png im3.png   -> split `test`
    MANUAL_DIR/vimeo_septuplet/sequences/<a>/<b>/im1.png .. im7.png       -> split `train`
    MANUAL_DIR/vimeo_septuplet/sep_trainlist.txt                          (lists <a>/<b>)
Either part may be absent; the triplet test needs all three frames of every folder."""

    def _find_clips(self, manual_dir):
        out = {}
        target = manual_dir / "vimeo_interp_test" / "target"
        if target.is_dir():
            clips = []
            for a in subfolders(target):
                for b in subfolders(a):
                    files = [b / f"im{i}.png" for i in (1, 2, 3)]
                    missing = [f for f in files if not f.is_file()]
                    problem = f"missing frame {missing[0]}" if missing else None
                    clips.append(ClipSpec(f"test/{a.name}/{b.name}", tuple(files), source=b, problem=problem))
            out["test"] = clips
        sept = manual_dir / "vimeo_septuplet"
        if sept.is_dir():
            listing = _require(sept / "sep_trainlist.txt", "the Vimeo septuplet train list")
            clips = []
            for name in _read_list(listing):
                folder = sept / "sequences" / name
                files = [folder / f"im{i}.png" for i in range(1, 8)]
                missing = [f for f in files if not f.is_file()]
                problem = f"missing frame {missing[0]}" if missing else None
                clips.append(ClipSpec(f"train/{name}", tuple(files), source=folder, problem=problem))
            out["train"] = clips
        return out


def _cut(files: Sequence[Path], length: int) -> list[tuple[Path, ...]]:
    return [tuple(files[i : i + length]) for i in range(0, len(files) - length + 1, length)]


class DmvfnDavis(ClipBuilder):
    """DAVIS 2017 cut into consecutive 9-frame clips (a remainder of fewer than 9 frames is dropped)."""

    MIN_FRAMES = 9
    PROTOCOL = "9-frame clips"
    CLIP = 9
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download DAVIS-2017-trainval-480p.zip from https://davischallenge.org and unzip it so that
MANUAL_DIR holds JPEGImages/480p/<sequence>/00000.jpg .. and ImageSets/2017/train.txt, val.txt.
Each listed sequence is cut into consecutive 9-frame clips; val is the test split."""

    def _find_clips(self, manual_dir):
        frames_root = _require(manual_dir / "JPEGImages" / "480p", "DAVIS JPEGImages/480p/<sequence>/ folders")
        sets = manual_dir / "ImageSets" / "2017"
        out = {}
        for listing, split in (("train.txt", "train"), ("val.txt", "test")):
            if not (sets / listing).is_file():
                continue
            clips = []
            for seq in _read_list(sets / listing):
                folder = frames_root / seq
                files = image_files(folder) if folder.is_dir() else []
                pieces = _cut(files, self.CLIP)
                if not pieces:
                    clips.append(ClipSpec(f"{split}/{seq}/000", tuple(files), source=folder,
                                          problem=None if files else f"{folder}: no frames"))
                    continue
                if len(files) % self.CLIP:
                    log.info("%s: %s: dropping the last %d frame(s) (fewer than %d)", self.name, seq,
                             len(files) % self.CLIP, self.CLIP)
                clips += [ClipSpec(f"{split}/{seq}/{k:03d}", p, source=folder) for k, p in enumerate(pieces)]
            out[split] = clips
        if not out:
            raise InputError(f"{sets}: neither train.txt nor val.txt found (the DAVIS 2017 ImageSets)")
        return out


class DmvfnUcf101(ClipBuilder):
    """UCF101 frames of train/test split 1 (DMVFN's Vimeo/DAVIS model trains on UCF101)."""

    MIN_FRAMES = 10
    PROTOCOL = "10-frame training windows"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from
https://www.crcv.ucf.edu/data/UCF101.php and extract them so that MANUAL_DIR holds
    ucfTrainTestlist/trainlist01.txt, testlist01.txt
    UCF-101/<class>/<video>.avi           (decoded with OpenCV, frames stored as PNG)
or, with frames already extracted, frames/<video name without .avi>/<frame>.jpg|png."""

    def _find_clips(self, manual_dir):
        lists = _require(manual_dir / "ucfTrainTestlist", "the UCF101 train/test lists (ucfTrainTestlist/)")
        out = {}
        for listing, split in (("trainlist01.txt", "train"), ("testlist01.txt", "test")):
            path = _require(lists / listing, "a UCF101 split list")
            clips = []
            for entry in _read_list(path):
                stem = Path(entry).stem
                frames_dir = manual_dir / "frames" / stem
                video = manual_dir / "UCF-101" / entry
                if frames_dir.is_dir():
                    clips.append(ClipSpec(f"{split}/{stem}", tuple(image_files(frames_dir)), source=frames_dir))
                elif video.is_file():
                    clips.append(ClipSpec(f"{split}/{stem}", read=lambda v=video: read_video(v), source=video))
                else:
                    clips.append(ClipSpec(f"{split}/{stem}", problem=f"neither {video} nor {frames_dir} exists"))
            out[split] = clips
        return out


def _split_folders(manual_dir: Path) -> list[Path] | None:
    """The split sub-folders of a generic manual dir, or None when it holds clips directly."""
    subs = subfolders(manual_dir)
    names = {p.name for p in subs}
    if names & {"train", "test", "val", "validation"}:
        bad = [p.name for p in subs if not _SPLIT_NAME.match(p.name)]
        if bad:
            raise InputError(
                f"{manual_dir}: split folder names must be lower-case words (a-z, 0-9, _), got {bad}"
            )
        return subs
    return None


class DmvfnClipFolder(ClipBuilder):
    """Any clips stored as folders of frames (one sub-folder per clip, frames sorted by name)."""

    MIN_FRAMES = 3
    RESIZABLE = True
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
MANUAL_DIR holds either split folders (train/, test/, val/, ...) of clip folders, or clip folders
directly (then all go to split `train`); each clip folder holds its frames as image files, in
name order. Pass min_frames=N to require longer clips (default 3) and size=(W, H) to resize
every frame on build."""

    def _find_clips(self, manual_dir):
        splits = _split_folders(manual_dir)
        if splits is None:
            return {"train": folder_clips(manual_dir, "train")}
        return {p.name: folder_clips(p, p.name) for p in splits}


def _video_clips(folder: Path, prefix: str) -> list[ClipSpec]:
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    return [ClipSpec(f"{prefix}/{v.stem}", read=lambda v=v: read_video(v), source=v) for v in videos]


class DmvfnVideoFiles(ClipBuilder):
    """Any video files, one clip per video (decoded with OpenCV, frames stored as PNG)."""

    MIN_FRAMES = 3
    RESIZABLE = True
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MANUAL_DIR holds either split folders (train/, test/, ...) of video files, or video files
directly (then all go to split `train`). Suffixes: {', '.join(VIDEO_SUFFIXES)}. Every frame of a
video is stored; pass min_frames=N to require longer videos (default 3) and size=(W, H) to
resize every frame on build."""

    def _find_clips(self, manual_dir):
        splits = _split_folders(manual_dir)
        if splits is None:
            return {"train": _video_clips(manual_dir, "train")}
        return {p.name: _video_clips(p, p.name) for p in splits}


BUILDERS = {
    "cityscapes": DmvfnCityscapes,
    "kitti": DmvfnKitti,
    "vimeo": DmvfnVimeo,
    "davis": DmvfnDavis,
    "ucf101": DmvfnUcf101,
    "clip_folder": DmvfnClipFolder,
    "video_files": DmvfnVideoFiles,
}
