"""The hand-written worker pool and clip order of the TFDS training input that Grain replaced
(issue 15; `dmvfn_jax/data/pipeline.py` at commit b6fbaec), kept so that `bench/input_pipeline.py`
(`--pipelines grain,legacy`, the default) can time it beside the Grain pipeline in one run.
Nothing in the package imports it. It loads a clip as the package does (`TfdsClipLoader`, the
same code the old pipeline had), so the two differ only in what Grain replaced: the per-epoch
clip order (numpy's permutation of (seed, epoch) here, Grain's index shuffle there) and the
process pool (one example per task here, whole batches per worker in Grain).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator

import numpy as np

from dmvfn_jax.data.pipeline import TfdsClipLoader, open_split
from dmvfn_jax.data.stream import example_rng
from dmvfn_jax.errors import InputError


class LegacyTfdsSource:
    """Training clips from a TFDS build, addressed by step, loaded by a `ProcessPoolExecutor`."""

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
        self.records = open_split(name, data_dir, split)
        self.loader = TfdsClipLoader(f"{name}/{split}", num_frames, (crop_h, crop_w), max_stride,
                                     channel_order)
        self.seed = seed
        self.global_batch, self.local_batch = global_batch, global_batch // process_count
        self.offset = process_index * self.local_batch
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
        return self.loader(self.records[self.record_of(example)], example_rng(self.seed, example))

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
    _WORKER_SOURCE = LegacyTfdsSource(**kwargs)


def _load_in_worker(example: int) -> np.ndarray:
    return _WORKER_SOURCE.load(example)
