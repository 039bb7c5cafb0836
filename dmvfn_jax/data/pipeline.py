"""The training and evaluation input from TFDS builds (see `tfds_builders.py`), with no TensorFlow.

Builds are ArrayRecord files read by index (`tfds` data sources), so the input is addressed the
way the other sources are (`sources.py`): global batch step s takes the examples
s*B .. s*B+B-1 of an endless stream that visits every clip of the split once per epoch, in an
order shuffled per epoch with (seed, epoch). Each process reads only its own slice of every
batch (per-host sharding), and example e is a pure function of (seed, e):

1. its clip is record `order_epoch[e mod N]`;
2. a window of `num_frames` frames at a random start and a random temporal stride in
   1..max(1, min(max_stride, n // num_frames)) (`sample_temporal_window`; `max_stride=1` for all
   datasets but UCF101, whose official recipe uses 5). For Cityscapes (30 of 30) or KITTI (9 of 9)
   the window is the whole clip; for a Vimeo septuplet and 3 frames it is a random triplet;
3. only the window's frames are decoded (PIL), then one draw of the official augmentations
   (crop, rotation cascade, channel reversal, flips) is applied to all of them;
4. frames leave as uint8 (normalised on the device by the train step), flipped to BGR when
   the config trains on BGR.

So a run is reproducible, does not depend on the number of input workers, and resumes exactly
at a checkpoint's step. `workers=N` loads examples in N spawned processes, `prefetch` batches
ahead of the training step; `workers=0` loads in the training process.

TensorFlow is never imported here. If something else imported it (a notebook), the source hides
every GPU and TPU from it so that it cannot take accelerator memory.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from dmvfn_jax.data.augment import augment_clip, sample_temporal_window
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


class TfdsSource:
    """Training clips from a TFDS build, addressed by step (module docstring)."""

    def __init__(self, name: str, data_dir, split: str, seed: int, num_frames: int, crop_h: int, crop_w: int,
                 global_batch: int, process_index: int = 0, process_count: int = 1, channel_order: str = "RGB",
                 max_stride: int = 1, workers: int = 0, prefetch: int = 2):
        if global_batch % process_count:
            raise InputError(f"batch_size {global_batch} is not divisible by the {process_count} processes")
        if workers < 0 or prefetch < 1:
            raise InputError(f"data.workers must be >= 0 and data.prefetch >= 1, got {workers} and {prefetch}")
        self.kwargs = dict(name=name, data_dir=str(data_dir), split=split, seed=seed, num_frames=num_frames,
                           crop_h=crop_h, crop_w=crop_w, global_batch=global_batch, process_index=process_index,
                           process_count=process_count, channel_order=channel_order, max_stride=max_stride)
        self.where = f"{name}/{split}"
        self.records = open_split(name, data_dir, split)
        self.seed, self.num_frames, self.crop, self.max_stride = seed, num_frames, (crop_h, crop_w), max_stride
        self.global_batch, self.local_batch = global_batch, global_batch // process_count
        self.offset = process_index * self.local_batch
        self.flip = channel_order == "BGR"
        self.workers, self.prefetch = workers, prefetch
        self._order = (-1, None)

    def __len__(self) -> int:
        return len(self.records)

    def record_of(self, example: int) -> int:
        """The record index that global example `example` reads."""
        epoch, pos = divmod(example, len(self.records))
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.records)))
        return int(self._order[1][pos])

    def load(self, example: int) -> np.ndarray:
        """Global example `example`: (num_frames, crop_h, crop_w, 3) uint8."""
        record = self.records[self.record_of(example)]
        n = len(record["frames"])
        if n < self.num_frames:
            raise InputError(
                f"{self.where}: clip {_text(record['id'])} has {n} frames, the config needs "
                f"data.num_frames={self.num_frames}"
            )
        rng = np.random.default_rng([self.seed, 1, example])
        indices = sample_temporal_window(rng, n, self.num_frames, self.max_stride)
        clip = decode_frames(record, indices, self.where)
        _, h, w, _ = clip.shape
        if self.crop[0] > h or self.crop[1] > w:
            raise InputError(
                f"{self.where}: clip {_text(record['id'])} is {w}x{h}, smaller than the "
                f"{self.crop[1]}x{self.crop[0]} crop (data.width x data.height)"
            )
        clip = augment_clip(rng, clip, *self.crop)
        return np.ascontiguousarray(clip[..., ::-1]) if self.flip else clip

    def examples(self, step: int) -> range:
        first = step * self.global_batch + self.offset
        return range(first, first + self.local_batch)

    def batch(self, step: int) -> np.ndarray:
        """This process's share of global batch `step`: (B_local, T, crop_h, crop_w, 3) uint8."""
        return np.stack([self.load(e) for e in self.examples(step)])

    def batches(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """batch(start), ..., batch(stop - 1), loaded `prefetch` steps ahead by `workers` processes."""
        if self.workers == 0:
            for step in range(start, stop):
                yield self.batch(step)
            return
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs JAX
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(self.kwargs,)) as pool:
            pending: deque = deque()
            next_step = start
            try:
                while next_step < stop or pending:
                    while next_step < stop and len(pending) < self.prefetch:
                        pending.append([pool.submit(_load_in_worker, e) for e in self.examples(next_step)])
                        next_step += 1
                    futures = pending.popleft()
                    yield np.stack([f.result() for f in futures])
            finally:
                for futures in pending:
                    for f in futures:
                        f.cancel()


_WORKER_SOURCE: TfdsSource | None = None


def _init_worker(kwargs: dict) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = TfdsSource(**kwargs)


def _load_in_worker(example: int) -> np.ndarray:
    return _WORKER_SOURCE.load(example)


class EvalClips:
    """Every clip of a split once (or the first `max_clips`), in record order, unaugmented: the
    first `num_frames` frames of each.

    `batches(global_batch)` pads the last batch so that no example is dropped and every process
    gets the same number of batches; the mask says which rows are real.
    """

    def __init__(self, name: str, data_dir, split: str, num_frames: int, channel_order: str = "RGB",
                 max_clips: int | None = None):
        self.records = open_split(name, data_dir, split)
        self.where, self.num_frames, self.flip = f"{name}/{split}", num_frames, channel_order == "BGR"
        if max_clips is not None and max_clips < 1:
            raise InputError(f"max_clips must be >= 1, got {max_clips}")
        self.size = len(self.records) if max_clips is None else min(len(self.records), int(max_clips))

    def __len__(self) -> int:
        return self.size

    def clip_id(self, index: int) -> str:
        return _text(self.records[index]["id"])

    def load(self, index: int) -> np.ndarray:
        record = self.records[index]
        n = len(record["frames"])
        if n < self.num_frames:
            raise InputError(
                f"{self.where}: clip {_text(record['id'])} has {n} frames, the protocol reads {self.num_frames}"
            )
        clip = decode_frames(record, range(self.num_frames), self.where)
        return np.ascontiguousarray(clip[..., ::-1]) if self.flip else clip

    def batches(self, global_batch: int, process_index: int = 0, process_count: int = 1):
        """Yields (clips (B_local, T, H, W, 3) uint8, mask (B_local,) bool, indices (B_local,) int)."""
        if global_batch % process_count:
            raise InputError(f"eval batch {global_batch} is not divisible by the {process_count} processes")
        local = global_batch // process_count
        total = len(self)
        num_batches = -(-total // global_batch)
        shape = None
        for b in range(num_batches):
            idx = np.arange(b * global_batch + process_index * local, b * global_batch + (process_index + 1) * local)
            mask = idx < total
            clips = [self.load(int(i)) for i in idx[mask]]
            if clips:
                shape = clips[0].shape
            elif shape is None:
                shape = self.load(0).shape
            if any(c.shape != shape for c in clips):
                sizes = sorted({f"{c.shape[2]}x{c.shape[1]}" for c in clips})
                raise InputError(f"{self.where}: clips of different sizes in one eval batch ({', '.join(sizes)})")
            pad = [np.zeros(shape, np.uint8)] * int((~mask).sum())
            yield np.stack(clips + pad), mask, np.where(mask, idx, -1)
