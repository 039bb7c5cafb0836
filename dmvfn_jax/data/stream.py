"""The training stream of the clip sources, on Grain: batch `step` is a pure function of the seed
and the step, so a run is reproducible, resumes exactly, and does not depend on the number of
input workers or of processes.

    order    = MapDataset.range(N).shuffle(seed).repeat(...)     every clip once per epoch,
                                                                a new order each epoch
    examples = order.map_with_index(load)                       example e: clip order[e], loaded
                                                                with the generator (seed, 1, e)
    batches  = examples.batch(B / P)[p::P]                      process p's share of every
                                                                global batch (a block of B / P)

Global batch `s` is examples s*B .. s*B+B-1 for any process count P, so the processes' shares,
concatenated, are the one-process batch. `iterator(offset)` reads batches from `offset` on, in
the training process (`workers=0`) or in `workers` spawned processes (`mp_prefetch`), `prefetch`
batches ahead in all; its state (`get_state`) is what the training checkpoint saves beside the model.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from dmvfn_jax.errors import InputError


def example_rng(seed: int, example: int) -> np.random.Generator:
    """The generator of global example `example`: its window and its augmentation draw."""
    return np.random.default_rng([seed, 1, example])


class _LoadExample:
    """example index, clip index -> the example (picklable, for the spawned workers)."""

    def __init__(self, clips: Sequence[Any], load: Callable[[Any, np.random.Generator], np.ndarray], seed: int):
        self.clips, self.load, self.seed = clips, load, seed

    def __call__(self, example: int, clip: int) -> np.ndarray:
        return self.load(self.clips[int(clip)], example_rng(self.seed, example))


class TrainingStream:
    """Batches of one process from `clips` (anything with `len` and `[i]`: a TFDS data source, a
    list of frame files) and `load(clip, rng) -> (T, H, W, 3) uint8`."""

    def __init__(self, clips: Sequence[Any], load: Callable[[Any, np.random.Generator], np.ndarray], seed: int,
                 global_batch: int, process_index: int = 0, process_count: int = 1, workers: int = 0,
                 prefetch: int = 2):
        import grain

        if global_batch % process_count:
            raise InputError(f"batch_size {global_batch} is not divisible by the {process_count} processes")
        if workers < 0 or prefetch < 1:
            raise InputError(f"data.workers must be >= 0 and data.prefetch >= 1, got {workers} and {prefetch}")
        if not 0 <= seed < 2**32:
            raise InputError(f"data.seed must be in [0, 2**32), got {seed}")
        self.local_batch = global_batch // process_count
        self.workers, self.prefetch = workers, prefetch
        self._load = _LoadExample(clips, load, seed)
        # epochs without end in practice: 2^50 examples (an endless repeat() breaks batch + slice)
        epochs = max(1, 2**50 // len(clips))
        self.order = grain.MapDataset.range(len(clips)).shuffle(seed=seed).repeat(epochs)
        examples = self.order.map_with_index(self._load)
        self.dataset = examples.batch(self.local_batch)[process_index::process_count]

    def clip_of(self, example: int) -> int:
        """The clip index that global example `example` reads."""
        return int(self.order[example])

    def load(self, example: int) -> np.ndarray:
        """Global example `example`: (T, H, W, 3) uint8."""
        return self._load(example, self.clip_of(example))

    def batch(self, step: int) -> np.ndarray:
        """This process's share of global batch `step`: (B_local, T, H, W, 3) uint8."""
        return np.asarray(self.dataset[step])

    def iterator(self, offset: int = 0):
        """A Grain iterator over batches `offset`, `offset + 1`, ... (with `get_state`/`set_state`)."""
        import grain

        ds = self.dataset[offset:].to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        if self.workers:
            _absl_flags_ready()
            # `prefetch` batches ahead in all, as many per worker as that takes (rounded up)
            per_worker = -(-self.prefetch // self.workers)
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                             per_worker_buffer_size=per_worker),
                                worker_init_fn=ExitWithParent(os.getpid()))
        return iter(ds)

    def batches(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """batch(start), ..., batch(stop - 1); closing the generator stops the workers."""
        it = self.iterator(start)
        try:
            for _ in range(start, stop):
                yield np.asarray(next(it))
        finally:
            close_iterator(it)


def close_iterator(it) -> None:
    """Stops an iterator's input workers (Grain's `mp_prefetch` iterators have `close`)."""
    close = getattr(it, "close", None)
    if close is not None:
        close()


class StreamSource:
    """A training source whose batches come from `self.stream` (a `TrainingStream`)."""

    stream: TrainingStream

    def load(self, example: int) -> np.ndarray:
        """Global example `example`: (num_frames, crop_h, crop_w, 3) uint8."""
        return self.stream.load(example)

    def batch(self, step: int) -> np.ndarray:
        """This process's share of global batch `step`: (B_local, T, crop_h, crop_w, 3) uint8."""
        return self.stream.batch(step)

    def batches(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """batch(start), ..., batch(stop - 1), loaded `prefetch` batches ahead by `workers` processes."""
        return self.stream.batches(start, stop)

    def iterator(self, offset: int = 0):
        """The Grain iterator over batches `offset`, ... (its state goes into training checkpoints)."""
        return self.stream.iterator(offset)


class ExitWithParent:
    """Grain's input workers outlive a training process killed with SIGKILL (they wait for a
    reader that is gone): each one ends itself once its parent is gone."""

    def __init__(self, parent_pid: int, poll_s: float = 1.0):
        self.parent_pid, self.poll_s = parent_pid, poll_s

    def __call__(self, worker_index: int, worker_count: int) -> None:
        import threading

        threading.Thread(target=self._watch, name="exit-with-parent", daemon=True).start()

    def _watch(self) -> None:
        import time

        while os.getppid() == self.parent_pid:
            time.sleep(self.poll_s)
        os._exit(0)


def _absl_flags_ready() -> None:
    """Grain's worker processes read absl flags, which a process that is not an absl app (a
    notebook, a test) has not parsed: their defaults are what it means."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
