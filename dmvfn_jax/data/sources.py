"""Training inputs addressed by step, so the input position of a checkpoint is its step.

A source returns, for a global batch step, this process's share of the batch as uint8 clips
(B_local, T, H, W, 3). The same step always gives the same clips, which makes resuming exact.
"""

from __future__ import annotations

import numpy as np

from dmvfn_jax.data.synthetic import clip_seed, synthetic_clips, synthetic_video
from dmvfn_jax.errors import InputError


def synthetic_options(data_config) -> dict:
    """The synthetic generator's scene options from `config.data` (defaults where absent)."""
    shapes = data_config.get("shapes", (2, 4))
    pan = data_config.get("pan_direction", None)
    return {
        "motion": float(data_config.get("motion", 1.0)),
        "smoothness": float(data_config.get("smoothness", 1.0)),
        "shapes": (int(shapes[0]), int(shapes[1])),
        "pan_direction": None if pan is None else float(pan),
    }


class SyntheticSource:
    """Deterministic synthetic videos (see `synthetic.py`); clip i of step s is seeded by (seed, s, i)."""

    def __init__(self, seed: int, num_frames: int, height: int, width: int, global_batch: int,
                 process_index: int = 0, process_count: int = 1, **options):
        if global_batch % process_count:
            raise InputError(f"batch_size {global_batch} is not divisible by the {process_count} processes")
        self.seed, self.num_frames, self.height, self.width = seed, num_frames, height, width
        self.options = options
        self.local_batch = global_batch // process_count
        self.offset = process_index * self.local_batch

    def batch(self, step: int) -> np.ndarray:
        step_seed = clip_seed(self.seed, step)
        return np.stack([
            synthetic_video(clip_seed(step_seed, i), self.num_frames, self.height, self.width, **self.options)
            for i in range(self.offset, self.offset + self.local_batch)
        ])


def heldout_synthetic(seed: int, num_clips: int, num_frames: int, height: int, width: int, **options) -> np.ndarray:
    """Held-out clips: seeded apart from the training steps' (`seed` is the data seed)."""
    return synthetic_clips(clip_seed(seed + 1, 2**31 - 1), num_clips, num_frames, height, width, **options)


def make_source(data_config, global_batch: int, process_index: int, process_count: int):
    """The training source that `config.data` names."""
    name = data_config.source
    if name == "synthetic":
        return SyntheticSource(data_config.seed, data_config.num_frames, data_config.height,
                               data_config.width, global_batch, process_index, process_count,
                               **synthetic_options(data_config))
    raise InputError(
        f"config.data.source={name!r}: only 'synthetic' is available in this version; the dataset "
        "pipelines (Cityscapes, KITTI, UCF101, Vimeo, DAVIS, clip folders) are the next piece of work"
    )
