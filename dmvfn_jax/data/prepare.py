"""Prepare Cityscapes and KITTI the way the official DMVFN scripts do, without touching the sources.

    python -m dmvfn_jax.data.prepare cityscapes --input leftImg8bit_sequence --output OUT
                                     [--split train|val|all] [--skip-bad] [--overwrite] [--workers N]
    python -m dmvfn_jax.data.prepare kitti --input KITTI_RAW --output OUT --drives LIST|NAME...
                                     [--skip-bad] [--overwrite] [--workers N]

Cityscapes: `--input` is `leftImg8bit_sequence` (`train/`, `val/`, each holding city folders of
`*_leftImg8bit.png` frames; `.jpg` is accepted too). For each split, each city's frames, sorted
by name, are cut into consecutive clips of 30 (a trailing remainder of fewer than 30 frames is
dropped and counted in the log), every frame resized to 1024x512 and written as
`OUT/<split>/%06d/%010d.png`; the clip number runs over the whole split in sorted city order.
The val sequences are the official *test* set (500 clips); train gives 2,975 clips.

KITTI: `--input` holds KITTI raw drives (`<date>/<drive>_sync/image_02/data/*.png`), or is one
drive folder itself. `--drives` names the drives, as names or as one text file with a name per
line (`#` comments and blank lines ignored; only the first word of a line counts, a leading
`<date>/` is allowed, `_sync` may be left out). The official train/test drive lists do not ship
here: supply your own. Every window of 9 consecutive frames (every window whose centre is at
least 4 frames from either end) is resized to 832x256 and written as `OUT/%06d/%010d.png`; the
window number runs over the drives in list order.

Resizing reproduces `cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)` in numpy
(`data/resize.py`; bit-exact against opencv-python 5.0 in tests/test_prepare.py). Frames are read
with PIL and written as RGB PNGs (the official scripts read and write BGR through OpenCV: the
same pixels for PNG sources; JPEG decoders may differ by a grey level). `--workers N` writes N
clips at a time (threads); the output does not depend on it. A clip is written to `.<clip>.tmp` and renamed when
complete, so a rerun skips complete clips, removes stale temporary folders and continues where
an interrupted run stopped; `--overwrite` redoes every clip. A rerun does not notice that the
input changed: use `--overwrite` for that. Nothing under `--input` is ever written or deleted.

Bad input (an unreadable or truncated frame, frames of different sizes inside one clip, a gap in
KITTI's frame numbers, a drive of fewer than 9 frames) stops the run with an error naming the
clip or drive and the file; with `--skip-bad` such clips (drives) are skipped and counted, and
their numbers stay unused, so a later run after fixing the input fills the gap. Cityscapes
gives no way to see a missing frame for sure, but a clip whose frame names leave one sequence
(`<city>_<seq>_<frame>`) or skip a frame number is logged as a warning (and kept, as officially).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from dmvfn_jax.data.resize import resize_linear
from dmvfn_jax.errors import BadClipError, InputError, run_command
from dmvfn_jax.image_io import FrameError, load_image
from dmvfn_jax.progress import ProgressBar, format_duration

CITYSCAPES_SIZE = (1024, 512)  # (width, height), as cv2.resize takes it
CITYSCAPES_CLIP = 30
KITTI_SIZE = (832, 256)
KITTI_WINDOW = 9
SPLITS = ("train", "val")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
PNG_COMPRESS_LEVEL = 1  # cv2.imwrite's default PNG compression, which the official scripts use

_CITY_NAME = re.compile(r"^(?P<seq>.+_\d+)_(?P<frame>\d+)_leftImg8bit$")
_CLIP_DIR = re.compile(r"^\d{6}$")
_TMP_DIR = re.compile(r"^\.\d{6}\.tmp$")

Log = Callable[[str], None]


# -- clips --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    """One output folder: `sources` resized to `size` and written as %010d.png into `out_dir`."""

    name: str
    out_dir: Path
    sources: tuple[Path, ...]
    size: tuple[int, int]
    problem: tuple[str, str] | None = None  # (file, reason) known before reading, e.g. a gap


@dataclass
class _Run:
    """What a run did; its `summary()` is what the library functions return."""

    dataset: str
    input: Path
    output: Path
    clips: int = 0
    written: int = 0
    existing: int = 0
    skipped_bad: int = 0
    stale_removed: int = 0
    bad: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _is_complete(clip: Clip) -> bool:
    if not clip.out_dir.is_dir():
        return False
    expected = {f"{i:010d}.png" for i in range(len(clip.sources))}
    return {p.name for p in clip.out_dir.iterdir()} == expected


def _remove_stale(root: Path) -> int:
    """Removes `.NNNNNN.tmp` folders that an interrupted run left in `root` (and nothing else)."""
    n = 0
    if root.is_dir():
        for p in root.iterdir():
            if _TMP_DIR.match(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
                n += 1
    return n


class _FrameCache:
    """Resized frames of one task, so KITTI's overlapping windows read each frame once."""

    def __init__(self):
        self.items: dict[Path, tuple[tuple[int, ...], np.ndarray] | FrameError] = {}

    def keep_only(self, paths: Iterable[Path]) -> None:
        keep = set(paths)
        for k in [k for k in self.items if k not in keep]:
            del self.items[k]

    def get(self, path: Path, size: tuple[int, int]) -> tuple[tuple[int, ...], np.ndarray]:
        if path not in self.items:
            try:
                img = load_image(path)
                self.items[path] = (img.shape, resize_linear(img, *size))
            except FrameError as e:
                self.items[path] = e
        item = self.items[path]
        if isinstance(item, FrameError):
            raise item
        return item


def _write_clip(clip: Clip, cache: _FrameCache) -> None:
    """Writes one clip to its temporary folder, then renames it into place."""
    from PIL import Image

    if clip.problem is not None:
        raise BadClipError(clip.name, clip.problem[0], clip.problem[1])
    tmp = clip.out_dir.with_name(f".{clip.out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        cache.keep_only(clip.sources)
        first: tuple[Path, tuple[int, ...]] | None = None
        for i, src in enumerate(clip.sources):
            try:
                shape, frame = cache.get(src, clip.size)
            except FrameError as e:
                raise BadClipError(clip.name, src, str(e)) from e
            if first is None:
                first = (src, shape)
            elif shape != first[1]:
                raise BadClipError(
                    clip.name, src,
                    f"{src} is {shape[1]}x{shape[0]} but {first[0]} is {first[1][1]}x{first[1][0]}; "
                    "the frames of a clip must have one size",
                )
            Image.fromarray(frame).save(tmp / f"{i:010d}.png", format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        if clip.out_dir.exists():  # --overwrite, or a folder that lost files
            shutil.rmtree(clip.out_dir)
        os.rename(tmp, clip.out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -- running a list of tasks --------------------------------------------------------------
def _run_tasks(tasks: Sequence[list[Clip]], run: _Run, skip_bad: bool, overwrite: bool, workers: int,
               progress: ProgressBar) -> None:
    """Each task is a list of clips written in order (one KITTI drive shares a frame cache);
    tasks run on `workers` threads. The first bad clip stops the run unless `skip_bad`."""
    todo: list[list[Clip]] = []
    for task in tasks:
        pending = [c for c in task if overwrite or not _is_complete(c)]
        run.existing += len(task) - len(pending)
        if pending:
            todo.append(pending)
    if run.existing:
        progress.log(f"{run.existing} of {run.clips} clips already complete, skipped (--overwrite redoes them)")
        progress.advance(run.existing, new=False)
    progress.start()

    stop = threading.Event()  # set on the first error (or Ctrl-C): workers finish their clip and return

    def work(task: list[Clip]) -> None:
        cache = _FrameCache()
        for clip in task:
            if stop.is_set():
                return
            try:
                _write_clip(clip, cache)
            except BadClipError as e:
                if not skip_bad:
                    raise BadClipError(e.clip, e.file, f"{e.reason}; pass --skip-bad to skip such clips") from e
                with run.lock:
                    run.skipped_bad += 1
                    run.bad.append({"clip": e.clip, "file": e.file, "error": e.reason})
                progress.log(f"skipped {e}")
            else:
                with run.lock:
                    run.written += 1
            progress.advance()

    if workers <= 1:
        for task in todo:
            work(task)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare") as pool:
        futures = {pool.submit(work, t) for t in todo}
        try:
            while futures:
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for f in finished:
                    f.result()  # re-raises a worker's error here
        except BaseException:
            stop.set()
            for f in futures:
                f.cancel()  # running clips finish (they stay consistent); queued ones never start
            raise


def _check_paths(input_dir, output_dir, clip_roots: Sequence[str]) -> tuple[Path, Path]:
    """Refuses an output inside the input, and an input where this run writes or deletes clips
    (a clip or temporary folder under one of the `clip_roots` of the output)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: no such folder")
    src, dst = input_dir.resolve(), output_dir.resolve()
    if dst == src or src in dst.parents:
        raise InputError(f"--output {output_dir} lies inside --input {input_dir}; the input is never written to")
    for root in (dst / r for r in clip_roots):
        if src == root or (root in src.parents and (_CLIP_DIR.match(part := src.relative_to(root).parts[0])
                                                    or _TMP_DIR.match(part))):
            raise InputError(f"--input {input_dir} lies where this run writes clip folders; "
                             f"choose another --output than {output_dir}")
    return input_dir, output_dir


def _note_foreign(root: Path, ours: set[str], log: Callable[[str], None]) -> None:
    if root.is_dir():
        foreign = sorted(p.name for p in root.iterdir() if _CLIP_DIR.match(p.name) and p.name not in ours)
        if foreign:
            log(f"note: {root} holds {len(foreign)} clip folder(s) that this input does not produce "
                f"({foreign[0]}...); left as they are")


# -- Cityscapes ---------------------------------------------------------------------------
def _city_frames(city: Path) -> list[Path]:
    """`*_leftImg8bit.{png,jpg}` of a city folder, sorted by name (broken links included: they fail on reading)."""
    frames = sorted(
        (p for p in city.iterdir()
         if p.suffix.lower() in FRAME_SUFFIXES and p.stem.endswith("_leftImg8bit") and not p.is_dir()),
        key=lambda p: p.name,
    )
    stems = [p.stem for p in frames]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise InputError(f"{city}: frame {dup} is there twice (as .png and .jpg?); keep one of them")
    return frames


def _sequence_break(frames: Sequence[Path]) -> str | None:
    """Where a clip leaves one Cityscapes sequence or skips a frame number (a frame may be missing)."""
    parsed = [_CITY_NAME.match(p.stem) for p in frames]
    if not all(parsed):
        return None
    for (a, pa), (b, pb) in zip(zip(frames, parsed), zip(frames[1:], parsed[1:])):
        if pa["seq"] != pb["seq"] or int(pb["frame"]) != int(pa["frame"]) + 1:
            return f"{a.name} is followed by {b.name}"
    return None


def prepare_cityscapes(input_dir, output_dir, split: str = "all", skip_bad: bool = False, overwrite: bool = False,
                       *, workers: int = 1, log: Log | None = print, progress: bool = True) -> dict:
    """Cityscapes `leftImg8bit_sequence` -> `output_dir/<split>/%06d/%010d.png` clips of 30 at 1024x512.

    Returns a summary: counts of clips (`clips`, `written`, `existing`, `skipped_bad`), `bad`
    (clip, file, error), `frames_dropped`, `sequence_warnings`, `stale_removed`, `seconds`, and
    `splits`: per split `cities`, `frames`, `clips`, `frames_dropped`.
    """
    t0 = time.monotonic()
    if split not in (*SPLITS, "all"):
        raise InputError(f"split={split!r}: expected train, val or all")
    input_dir, output_dir = _check_paths(input_dir, output_dir, SPLITS)
    found = [s for s in SPLITS if (input_dir / s).is_dir()]
    if split == "all":
        if not found:
            raise InputError(f"{input_dir} has no train/ or val/ folder; pass Cityscapes' leftImg8bit_sequence folder")
        splits = found
    elif split not in found:
        raise InputError(f"{input_dir / split}: no such folder; pass Cityscapes' leftImg8bit_sequence folder")
    else:
        splits = [split]
    say = log or (lambda msg: None)

    run = _Run("cityscapes", input_dir, output_dir)
    tasks: list[list[Clip]] = []
    per_split: dict[str, dict] = {}
    warnings = []
    for s in splits:
        cities = sorted((p for p in (input_dir / s).iterdir() if p.is_dir()), key=lambda p: p.name)
        info = {"cities": len(cities), "frames": 0, "clips": 0, "frames_dropped": 0}  # clip ids restart per split
        for city in cities:
            frames = _city_frames(city)
            n_clips, rest = divmod(len(frames), CITYSCAPES_CLIP)
            info["frames"] += len(frames)
            if not frames:
                say(f"note: {s}/{city.name} holds no *_leftImg8bit.png/.jpg frames")
            if rest:
                info["frames_dropped"] += rest
                say(f"{s}/{city.name}: {len(frames)} frames -> {n_clips} clip(s) of {CITYSCAPES_CLIP}, "
                    f"the last {rest} frame(s) dropped")
            for k in range(n_clips):
                clip_id = info["clips"]
                chunk = tuple(frames[k * CITYSCAPES_CLIP:(k + 1) * CITYSCAPES_CLIP])
                name = (f"cityscapes {s} clip {clip_id:06d} ({city.name} frames "
                        f"{k * CITYSCAPES_CLIP}..{(k + 1) * CITYSCAPES_CLIP - 1})")
                brk = _sequence_break(chunk)
                if brk:
                    warnings.append(f"warning: {name} spans a sequence break or a missing frame: {brk}")
                tasks.append([Clip(name, output_dir / s / f"{clip_id:06d}", chunk, CITYSCAPES_SIZE)])
                info["clips"] += 1
        run.clips += info["clips"]
        per_split[s] = info
    for w in warnings[:10]:
        say(w)
    if len(warnings) > 10:
        say(f"warning: {len(warnings) - 10} more clips span a sequence break")

    for s in splits:
        run.stale_removed += _remove_stale(output_dir / s)
        _note_foreign(output_dir / s, {f"{i:06d}" for i in range(per_split[s]["clips"])}, say)
    if run.stale_removed:
        say(f"removed {run.stale_removed} unfinished clip folder(s) of an interrupted run")
    for s in splits:
        info = per_split[s]
        say(f"cityscapes {s}{' (the official test set)' if s == 'val' else ''}: {info['cities']} cities, "
            f"{info['frames']} frames -> {info['clips']} clips -> {output_dir / s}")

    bar = ProgressBar(run.clips, "clips", enabled=progress, log=log)
    try:
        _run_tasks(tasks, run, skip_bad, overwrite, workers, bar)
    finally:
        bar.close()
    summary = _summary(run, time.monotonic() - t0)
    summary["splits"] = per_split
    summary["frames_dropped"] = sum(i["frames_dropped"] for i in per_split.values())
    summary["sequence_warnings"] = len(warnings)
    say(_final_line(summary, f", {summary['frames_dropped']} trailing frame(s) dropped"))
    return summary


# -- KITTI --------------------------------------------------------------------------------
def read_drive_list(items: Sequence[str]) -> list[str]:
    """Drive names from `--drives`: one text file of names, or the names themselves; duplicates dropped."""
    if len(items) == 1 and Path(items[0]).is_file():
        try:
            lines = Path(items[0]).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{items[0]}: cannot read the drive list ({e})") from e
        names = [ln.split()[0] for ln in (ln.split("#", 1)[0].strip() for ln in lines) if ln]
        if not names:
            raise InputError(f"{items[0]}: the drive list names no drive")
    else:
        names = [n.strip() for n in items if n.strip()]
    seen: dict[str, None] = {}
    for n in names:
        seen.setdefault(n.rstrip("/"), None)
    return list(seen)


def _drive_frames_dir(folder: Path) -> Path | None:
    """The frames folder of a drive folder (`image_02/data`), or the folder itself if it holds frames."""
    for cand in (folder / "image_02" / "data", folder / "data"):
        if cand.is_dir():
            return cand
    if folder.is_dir() and any(p.suffix.lower() in FRAME_SUFFIXES for p in folder.iterdir()):
        return folder
    return None


def _find_drive(input_dir: Path, name: str) -> Path | None:
    base = Path(name).name
    sync = base if base.endswith("_sync") else base + "_sync"
    cands = [input_dir / name]
    for b in dict.fromkeys((sync, base)):
        cands += [input_dir / b[:10] / b, input_dir / b]
    if input_dir.name in (sync, base):
        cands.append(input_dir)
    cands.append(Path(name))  # a path to the drive folder, absolute or from the working directory
    for c in cands:
        if c.is_dir() and (d := _drive_frames_dir(c)) is not None:
            return d
    return None


def _drive_name(frames_dir: Path) -> str:
    """`2011_09_26_drive_0023_sync` for `.../2011_09_26_drive_0023_sync/image_02/data`."""
    parts = frames_dir.parts
    if len(parts) >= 3 and parts[-2] == "image_02" and parts[-1] == "data":
        return parts[-3]
    return frames_dir.name


def prepare_kitti(input_dir, output_dir, drives: Sequence[str] | None = None, skip_bad: bool = False,
                  overwrite: bool = False, *, workers: int = 1, log: Log | None = print,
                  progress: bool = True) -> dict:
    """KITTI raw drives -> `output_dir/%06d/%010d.png` windows of 9 frames at 832x256.

    `drives`: names (or `[list_file]`); None when `input_dir` is itself one drive folder.
    Returns a summary like `prepare_cityscapes`'s, with per-drive `frames`, `windows`, `first_clip`.
    """
    t0 = time.monotonic()
    input_dir, output_dir = _check_paths(input_dir, output_dir, ("",))
    say = log or (lambda msg: None)
    if drives:
        names = read_drive_list(drives)
        resolved = [(n, _find_drive(input_dir, n)) for n in names]
        missing = [n for n, d in resolved if d is None]
        if missing:
            raise InputError(
                f"drive(s) not found under {input_dir}: {', '.join(missing)} (expected "
                f"<date>/<drive>_sync/image_02/data/*.png)"
            )
        dirs = [d for _, d in resolved]
    else:
        d = _drive_frames_dir(input_dir)
        if d is None:
            raise InputError(f"{input_dir} is not a drive folder (no image_02/data); name the drives with --drives")
        dirs = [d]
    if len(set(d.resolve() for d in dirs)) != len(dirs):
        raise InputError("--drives names one drive folder twice")

    run = _Run("kitti", input_dir, output_dir)
    tasks: list[list[Clip]] = []
    per_drive, skipped_drives = [], []
    for d in dirs:
        name = _drive_name(d)
        frames = sorted((p for p in d.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not p.is_dir()),
                        key=lambda p: p.name)
        if len(frames) < KITTI_WINDOW:
            err = BadClipError(f"kitti drive {name}", d, f"{d} holds {len(frames)} frame(s); a window needs "
                                                          f"{KITTI_WINDOW}")
            if not skip_bad:
                raise BadClipError(err.clip, err.file, err.reason + "; pass --skip-bad to skip such drives")
            skipped_drives.append({"clip": err.clip, "file": err.file, "error": err.reason})
            say(f"skipped {err}")
            continue
        gaps = {}
        if all(p.stem.isdigit() for p in frames):  # KITTI numbers its frames: a gap is a missing frame
            for i in range(1, len(frames)):
                a, b = int(frames[i - 1].stem), int(frames[i].stem)
                if b != a + 1:
                    what = f"frame {a + 1}" if b == a + 2 else f"frames {a + 1}..{b - 1}"
                    gaps[i] = (str(d / f"{a + 1:0{len(frames[i].stem)}d}{frames[i].suffix}"),
                               f"{what} missing: {frames[i - 1].name} is followed by {frames[i].name}")
        n_win = len(frames) - KITTI_WINDOW + 1
        info = {"drive": name, "path": str(d), "frames": len(frames), "windows": n_win, "first_clip": run.clips}
        task = []
        for s in range(n_win):
            clip_id = run.clips + s
            gap = next((gaps[i] for i in range(s + 1, s + KITTI_WINDOW) if i in gaps), None)
            task.append(Clip(f"kitti drive {name} window {clip_id:06d} (frames {s}..{s + KITTI_WINDOW - 1})",
                             output_dir / f"{clip_id:06d}", tuple(frames[s:s + KITTI_WINDOW]), KITTI_SIZE, gap))
        run.clips += n_win
        per_drive.append(info)
        tasks.append(task)

    run.stale_removed = _remove_stale(output_dir)
    if run.stale_removed:
        say(f"removed {run.stale_removed} unfinished clip folder(s) of an interrupted run")
    _note_foreign(output_dir, {f"{i:06d}" for i in range(run.clips)}, say)
    say(f"kitti: {len(per_drive)} drive(s), {sum(i['frames'] for i in per_drive)} frames -> {run.clips} windows "
        f"of {KITTI_WINDOW} -> {output_dir}")

    bar = ProgressBar(run.clips, "windows", enabled=progress, log=log)
    try:
        _run_tasks(tasks, run, skip_bad, overwrite, workers, bar)
    finally:
        bar.close()
    summary = _summary(run, time.monotonic() - t0)
    summary["drives"] = per_drive
    summary["drives_skipped"] = skipped_drives
    extra = f", {len(skipped_drives)} drive(s) skipped" if skipped_drives else ""
    say(_final_line(summary, extra))
    return summary


def _summary(run: _Run, seconds: float) -> dict:
    return {
        "dataset": run.dataset, "input": str(run.input), "output": str(run.output), "clips": run.clips,
        "written": run.written, "existing": run.existing, "skipped_bad": run.skipped_bad,
        "bad": sorted(run.bad, key=lambda b: b["clip"]), "stale_removed": run.stale_removed, "seconds": seconds,
    }


def _final_line(s: dict, extra: str) -> str:
    return (f"{s['dataset']}: {s['clips']} clips: {s['written']} written, {s['existing']} already complete, "
            f"{s['skipped_bad']} bad skipped{extra} ({format_duration(s['seconds'])})")


# -- command line -------------------------------------------------------------------------
def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m dmvfn_jax.data.prepare",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="dataset", required=True, metavar="{cityscapes,kitti}")

    def common(q):
        q.add_argument("--input", required=True, help="source folder (read only)")
        q.add_argument("--output", required=True, help="output folder")
        q.add_argument("--skip-bad", action="store_true", help="skip (and count) bad clips instead of stopping")
        q.add_argument("--overwrite", action="store_true", help="redo clips that are already complete")
        q.add_argument("--workers", type=int, default=1, help="threads writing clips (default 1)")
        q.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    c = sub.add_parser("cityscapes", help="leftImg8bit_sequence -> 30-frame clips at 1024x512")
    common(c)
    c.add_argument("--split", default="all", choices=("train", "val", "all"),
                   help="split to prepare (default all; val is the official test set)")
    k = sub.add_parser("kitti", help="KITTI raw drives -> 9-frame windows at 832x256")
    common(k)
    k.add_argument("--drives", nargs="+", metavar="LIST|NAME",
                   help="a text file of drive names, or the names (optional when --input is one drive folder)")
    return p


def main(argv=None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    opts = dict(skip_bad=args.skip_bad, overwrite=args.overwrite, workers=args.workers,
                progress=not args.no_progress)

    def body():
        if args.dataset == "cityscapes":
            prepare_cityscapes(args.input, args.output, split=args.split, **opts)
        else:
            prepare_kitti(args.input, args.output, drives=args.drives, **opts)

    return run_command(prog or "prepare", body)


if __name__ == "__main__":
    sys.exit(main())
