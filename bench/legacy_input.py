"""The hand-written TFDS training input that Grain replaced (issue 15), frozen here as it was
(commit b6fbaec, `dmvfn_jax/data/pipeline.py`) so that `bench/input_pipeline.py --compare` can
time it beside the Grain pipeline in one run. Nothing in the package imports it.

Its stream differs from the Grain one only in the per-epoch clip order (numpy's permutation of
(seed, epoch) here, Grain's index shuffle there); windows and augmentations are drawn from the
same per-example generator (seed, 1, example).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator

import numpy as np

from dmvfn_jax.data.augment import augment_clip, sample_temporal_window
from dmvfn_jax.data.pipeline import ClipInfo, _text, clip_index, decode_frames, open_split
from dmvfn_jax.errors import InputError


class LegacyTfdsSource:
    """Training clips from a TFDS build, addressed by step (module docstring)."""

    def __init__(self, name: str, data_dir, split: str, seed: int, num_frames: int, crop_h: int, crop_w: int,
                 global_batch: int, process_index: int = 0, process_count: int = 1, channel_order: str = "RGB",
                 max_stride: int = 1, workers: int = 0, prefetch: int = 2, check_clips: bool = True):
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
        if check_clips:  # once, in the training process; its input workers skip it
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


_WORKER_SOURCE: LegacyTfdsSource | None = None


def _init_worker(kwargs: dict) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = LegacyTfdsSource(**kwargs, check_clips=False)


def _load_in_worker(example: int) -> np.ndarray:
    return _WORKER_SOURCE.load(example)
