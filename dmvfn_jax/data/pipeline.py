"""The training and evaluation input from TFDS builds (see `tfds_builders.py`), with no TensorFlow.

Builds are ArrayRecord files read by index (`tfds` data sources), the source of a Grain
`MapDataset` (`stream.py`): global batch step s takes the examples s*B .. s*B+B-1 of an endless
stream that visits every clip of the split once per epoch, in an order Grain shuffles per epoch
from (seed, epoch). Each process reads only its own block of every batch (per-host sharding),
and example e is a pure function of (seed, e):

1. its clip is record `order[e]` (Grain's `shuffle(seed).repeat()` over the record indices);
2. a window of `num_frames` frames at a random start and a random temporal stride in
   1..max(1, min(max_stride, n // num_frames)) (`sample_temporal_window`; `max_stride=1` for all
   datasets but UCF101, whose official recipe uses 5), drawn with the generator (seed, 1, e).
   For Cityscapes (30 of 30) or KITTI (9 of 9) the window is the whole clip; for a Vimeo
   septuplet and 3 frames it is a random triplet;
3. only the window's frames are decoded (PIL), then one draw of the official augmentations
   (crop, rotation cascade, channel reversal, flips), from the same generator, is applied to
   all of them;
4. frames leave as uint8 (normalised on the device by the train step), flipped to BGR when
   the config trains on BGR.

So a run is reproducible, does not depend on the number of input workers, and resumes exactly
at a checkpoint's step. `workers=N` loads batches in N spawned processes (Grain's
`mp_prefetch`), `prefetch` batches ahead in all; `workers=0` loads in the training process.

Evaluation reads every clip once through `ClipSet`: `EvalClips` (a build's split) or `ArrayClips`
(clips in memory, the demo's held-out synthetic clips).

TensorFlow is never imported here. If something else imported it (a notebook), the source hides
every GPU and TPU from it so that it cannot take accelerator memory.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from dmvfn_jax.channels import in_order
from dmvfn_jax.data.augment import augment_clip, sample_temporal_window
from dmvfn_jax.data.stream import StreamSource, TrainingStream
from dmvfn_jax.errors import InputError
from dmvfn_jax.image_io import FrameError, decode_image

log = logging.getLogger("dmvfn_jax.data")


def hide_accelerators_from_tensorflow() -> None:
    """If TensorFlow is loaded, make it see no GPU or TPU (so it cannot reserve their memory)."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    for kind in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], kind)
        except (RuntimeError, ValueError) as e:  # devices already initialised, or no such kind
            log.debug("tensorflow: could not hide %s devices: %s", kind, e)


def find_build(name: str, data_dir) -> Path:
    """The newest version folder of the TFDS build `name` under `data_dir`."""
    if not data_dir:
        raise InputError(
            f"the TFDS dataset {name!r} needs config.data_dir: the --data_dir the build was written to"
        )
    root = Path(data_dir).expanduser() / name
    versions = []
    if root.is_dir():
        for v in root.iterdir():
            parts = v.name.split(".")
            if len(parts) == 3 and all(p.isdigit() for p in parts) and (v / "dataset_info.json").is_file():
                versions.append((tuple(map(int, parts)), v))
    if not versions:
        short = name.removeprefix("dmvfn_")
        raise InputError(
            f"{root}: no TFDS build of {name!r} (no <version>/dataset_info.json). Build it with\n"
            f"  python -m dmvfn_jax.data.build {short} --manual_dir MANUAL_DIR --data_dir {data_dir}"
        )
    return max(versions)[1]


def open_split(name: str, data_dir, split: str):
    """A random-access view of one split of a TFDS build; frames stay encoded (bytes)."""
    import tensorflow_datasets as tfds

    hide_accelerators_from_tensorflow()
    path = find_build(name, data_dir)
    builder = tfds.builder_from_directory(str(path))
    splits = dict(builder.info.splits)
    if split not in splits:
        raise InputError(f"{path}: has no split {split!r}; it has {sorted(splits)}")
    fmt = getattr(builder.info.file_format, "value", builder.info.file_format)
    if fmt != "array_record":
        raise InputError(
            f"{path}: written as {fmt}, but the input reads by index and needs array_record: "
            "rebuild with --file_format=array_record (the default of the DMVFN builders)"
        )

    class _KeepEncoded(tfds.decode.SkipDecoding):
        def decode_batch_example_np(self, example):
            return example

    source = builder.as_data_source(split=split, decoders={"frames": _KeepEncoded()})
    if len(source) == 0:
        raise InputError(f"{path}: split {split!r} is empty")
    return source


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_frames(record, indices, where: str) -> np.ndarray:
    """Frames `indices` of a record as a (T, H, W, 3) uint8 clip."""
    clip_id = _text(record["id"])
    frames = [decode_image(bytes(record["frames"][int(i)]), f"{where}: clip {clip_id} frame {int(i)}")
              for i in indices]
    if any(f.shape != frames[0].shape for f in frames):
        sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
        raise FrameError(f"{where}: clip {clip_id}: frames of different sizes ({', '.join(sizes)})")
    return np.stack(frames)


class TfdsClipLoader:
    """A record and its generator -> the training example (module docstring, steps 2-4)."""

    def __init__(self, where: str, num_frames: int, crop: tuple[int, int], max_stride: int, channel_order: str):
        self.where, self.num_frames, self.crop, self.max_stride = where, num_frames, crop, max_stride
        self.channel_order = channel_order

    def __call__(self, record, rng: np.random.Generator) -> np.ndarray:
        n = len(record["frames"])
        if n < self.num_frames:
            raise InputError(
                f"{self.where}: clip {_text(record['id'])} has {n} frames, the config needs "
                f"data.num_frames={self.num_frames}"
            )
        indices = sample_temporal_window(rng, n, self.num_frames, self.max_stride)
        clip = decode_frames(record, indices, self.where)
        _, h, w, _ = clip.shape
        if self.crop[0] > h or self.crop[1] > w:
            raise InputError(
                f"{self.where}: clip {_text(record['id'])} is {w}x{h}, smaller than the "
                f"{self.crop[1]}x{self.crop[0]} crop (data.width x data.height)"
            )
        return in_order(augment_clip(rng, clip, *self.crop), self.channel_order)


class TfdsSource(StreamSource):
    """Training clips from a TFDS build, addressed by step (module docstring), on Grain (`stream.py`)."""

    def __init__(self, name: str, data_dir, split: str, seed: int, num_frames: int, crop_h: int, crop_w: int,
                 global_batch: int, process_index: int = 0, process_count: int = 1, channel_order: str = "RGB",
                 max_stride: int = 1, workers: int = 0, prefetch: int = 2):
        self.where = f"{name}/{split}"
        self.records = open_split(name, data_dir, split)
        self.num_frames, self.crop = num_frames, (crop_h, crop_w)
        loader = TfdsClipLoader(self.where, num_frames, (crop_h, crop_w), max_stride, channel_order)
        self.stream = TrainingStream(self.records, loader, seed, global_batch, process_index, process_count,
                                     workers, prefetch)
        self._check_clips(clip_index(name, data_dir, split, self.records, read_records=False))

    def _check_clips(self, index: list[ClipInfo] | None) -> None:
        """Clips too short for `num_frames` or smaller than the crop, all named before the first
        step (from the build's clip table; a build without one is checked clip by clip as read)."""
        if index is None:
            return
        short = [f"{c.id} ({c.num_frames} frames)" for c in index if c.num_frames < self.num_frames]
        if short:
            raise InputError(f"{self.where}: {len(short)} clip(s) have fewer than data.num_frames={self.num_frames} "
                             f"frames: {', '.join(short)}")
        small = [f"{c.id} ({c.width}x{c.height})" for c in index if c.height < self.crop[0] or c.width < self.crop[1]]
        if small:
            raise InputError(f"{self.where}: {len(small)} clip(s) are smaller than the {self.crop[1]}x{self.crop[0]} "
                             f"crop (data.width x data.height): {', '.join(small)}; rebuild with --size or crop less")

    def __len__(self) -> int:
        return len(self.records)

    def record_of(self, example: int) -> int:
        """The record index that global example `example` reads."""
        return self.stream.clip_of(example)


class ClipInfo(NamedTuple):
    """One record of a build, as its metadata describes it: no frame read."""

    id: str
    num_frames: int
    height: int
    width: int


def clip_index(name: str, data_dir, split: str, records=None, read_records: bool = True,
               limit: int | None = None) -> list[ClipInfo] | None:
    """Every record of a split, in record order, from the build's `metadata.json` (builds of
    version 1.1.0 and later: no record is read). Older builds have no such table: their records
    are read (not their frames decoded; only the first `limit` if given), with a note saying so,
    or with `read_records=False` None is returned."""
    path = find_build(name, data_dir)
    records = open_split(name, data_dir, split) if records is None else records
    meta_file = path / "metadata.json"
    table = None
    if meta_file.is_file():
        try:
            table = json.loads(meta_file.read_text()).get("clips", {}).get(split)
        except (OSError, ValueError) as e:
            raise InputError(f"{meta_file}: unreadable ({e}); rebuild with --overwrite") from None
    n = len(records)
    if table is not None:
        if len(table) != n or (n and (_text(records[0]["id"]) != table[0][0]
                                      or _text(records[n - 1]["id"]) != table[-1][0])):
            raise InputError(f"{meta_file}: its clip table does not match the records of split {split!r}; "
                             "rebuild with --overwrite")
        return [ClipInfo(str(c), int(f), int(h), int(w)) for c, f, h, w in table]
    if not read_records:
        return None
    log.info("%s: no clip table in metadata.json (built before 1.1.0): reading the %d records of %s to "
             "know their lengths and sizes; a rebuild skips this", path, n, split)
    out = []
    for i in range(n if limit is None else min(n, int(limit))):
        r = records[i]
        out.append(ClipInfo(_text(r["id"]), len(r["frames"]), int(r["height"]), int(r["width"])))
    return out


class ClipSet:
    """What the evaluation reads of a set of clips: `__len__`, `clip_id(i)`, `frame_size(i)` and
    `load(i)` (a clip (T, H, W, 3) uint8), `where` (named in errors) and `num_frames` from a subclass;
    grouping by size and padded batches here."""

    def by_size(self, indices: Sequence[int] | None = None) -> dict[tuple[int, int], list[int]]:
        """Clip indices grouped by (height, width), smallest frames first."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i in range(len(self)) if indices is None else indices:
            groups.setdefault(self.frame_size(i), []).append(i)
        return dict(sorted(groups.items(), key=lambda kv: (kv[0][0] * kv[0][1], kv[0])))

    def batches(self, global_batch: int, process_index: int = 0, process_count: int = 1,
                indices: Sequence[int] | None = None):
        """Yields (clips (B_local, T, H, W, 3) uint8, mask (B_local,) bool, indices (B_local,) int)
        over the clips `indices` (default: all), which must share one frame size."""
        if global_batch % process_count:
            raise InputError(f"eval batch {global_batch} is not divisible by the {process_count} processes")
        order = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(order) == 0:
            return
        sizes = sorted({self.frame_size(int(i)) for i in order})
        if len(sizes) > 1:
            named = ", ".join(f"{w}x{h}" for h, w in sizes)
            raise InputError(f"{self.where}: clips of different sizes in one eval batch ({named}); "
                             "evaluate them per size (by_size)")
        (h, w), total = sizes[0], len(order)
        yield from eval_batches(_EvalExample(self, order, (self.num_frames, h, w, 3)), total, global_batch,
                                process_index, process_count)


class ArrayClips(ClipSet):
    """Clips held in memory, (N, T, H, W, 3) uint8 in the order the evaluation reads (RGB), named
    `<prefix>NN`: the demo's held-out synthetic clips, scored by the same evaluation as a TFDS build."""

    def __init__(self, clips: np.ndarray, prefix: str = "clip"):
        clips = np.asarray(clips)
        if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
            raise InputError(f"ArrayClips: expected uint8 clips (N, T, H, W, 3), got {clips.dtype} {clips.shape}")
        self.clips, self.prefix = clips, prefix
        self.where, self.num_frames = f"{prefix} clips", clips.shape[1]

    def __len__(self) -> int:
        return len(self.clips)

    def clip_id(self, index: int) -> str:
        return f"{self.prefix}{index:02d}"

    def frame_size(self, index: int) -> tuple[int, int]:
        return tuple(self.clips.shape[2:4])

    def load(self, index: int) -> np.ndarray:
        return self.clips[index]


class EvalClips(ClipSet):
    """Every clip of a split once (or the first `max_clips`), in record order, unaugmented: the
    first `num_frames` frames of each, resized to `size` (width, height) when given (exactly as
    `prepare` resizes).

    `index` describes every clip (frame count, size) from the build's metadata, so the clips a
    protocol cannot use and the sizes present are known before any frame is decoded.
    `batches(global_batch, ..., indices)` reads the clips `indices` (default: all; one size per
    call), padding the last batch so that no example is dropped and every process gets the same
    number of batches; the mask says which rows are real.
    """

    def __init__(self, name: str, data_dir, split: str, num_frames: int, channel_order: str = "RGB",
                 max_clips: int | None = None, size: tuple[int, int] | None = None):
        self.records = open_split(name, data_dir, split)
        self.where, self.num_frames, self.channel_order = f"{name}/{split}", num_frames, channel_order
        if max_clips is not None and max_clips < 1:
            raise InputError(f"max_clips must be >= 1, got {max_clips}")
        self.index = clip_index(name, data_dir, split, self.records, limit=max_clips)
        if max_clips is not None:
            self.index = self.index[: int(max_clips)]
        self.resize = None if size is None else (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return len(self.index)

    def clip_id(self, index: int) -> str:
        return self.index[index].id

    def frame_size(self, index: int) -> tuple[int, int]:
        """(height, width) of clip `index` as `load` returns it."""
        if self.resize is not None:
            return self.resize[1], self.resize[0]
        info = self.index[index]
        return info.height, info.width

    def too_short(self) -> list[ClipInfo]:
        """The clips with fewer frames than `num_frames`."""
        return [c for c in self.index if c.num_frames < self.num_frames]

    def load(self, index: int) -> np.ndarray:
        record = self.records[index]
        n = len(record["frames"])
        if n < self.num_frames:
            raise InputError(
                f"{self.where}: clip {_text(record['id'])} has {n} frames, the protocol reads {self.num_frames}"
            )
        clip = decode_frames(record, range(self.num_frames), self.where)
        if self.resize is not None and clip.shape[1:3] != (self.resize[1], self.resize[0]):
            from dmvfn_jax.data.resize import resize_linear

            clip = np.stack([resize_linear(f, *self.resize) for f in clip])
        return in_order(clip, self.channel_order)


class _EvalExample:
    """Position -> (clip, real?, clip index): the clips in `order`, zeros past its end."""

    def __init__(self, clips: ClipSet, order: np.ndarray, shape: tuple[int, ...]):
        self.clips, self.order, self.shape = clips, order, shape

    def __call__(self, pos: int):
        if pos < len(self.order):
            i = int(self.order[pos])
            return self.clips.load(i), True, i
        return np.zeros(self.shape, np.uint8), False, -1


def eval_batches(example, total: int, global_batch: int, process_index: int = 0, process_count: int = 1):
    """(clips, mask, indices) batches of `example(pos)` for positions 0 .. total-1: the last global
    batch is padded (mask False) so that every process gets the same number of batches, and
    process p reads its block of every global batch (read in order, one clip at a time: the
    evaluation's time is the model's)."""
    local = global_batch // process_count
    for start in range(0, -(-total // global_batch) * global_batch, global_batch):
        first = start + process_index * local
        rows = [example(pos) for pos in range(first, first + local)]
        yield tuple(np.stack([r[k] for r in rows]) for k in range(3))
