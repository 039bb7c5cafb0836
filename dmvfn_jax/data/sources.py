"""Training inputs addressed by step, so the input position of a checkpoint is its step.

A source returns, for a global batch step, this process's share of the batch as uint8 clips
(B_local, T, H, W, 3). The same step always gives the same clips, which makes resuming exact.
"""

from __future__ import annotations

import numpy as np

from dmvfn_jax.channels import in_order
from dmvfn_jax.data.stream import StreamSource, TrainingStream
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
    """Deterministic synthetic videos (see `synthetic.py`); clip i of step s is seeded by (seed, s, i).

    `still_fraction`: the share of clips, drawn per clip from its seed, rendered with no motion at
    all (every frame the same; `motion=0`), so that a model sees inputs where copying the last frame
    is exact and can learn to run fewer blocks on them (README, "Routing that adapts to the input").
    0 draws nothing: the clips are those of a source without it."""

    def __init__(self, seed: int, num_frames: int, height: int, width: int, global_batch: int,
                 process_index: int = 0, process_count: int = 1, still_fraction: float = 0.0, **options):
        if global_batch % process_count:
            raise InputError(f"batch_size {global_batch} is not divisible by the {process_count} processes")
        if not 0.0 <= still_fraction <= 1.0:
            raise InputError(f"config.data.still_fraction must be in [0, 1], got {still_fraction!r}")
        self.seed, self.num_frames, self.height, self.width = seed, num_frames, height, width
        self.options = options
        self.still_fraction = float(still_fraction)
        self.local_batch = global_batch // process_count
        self.offset = process_index * self.local_batch

    def batches(self, start: int, stop: int):
        return (self.batch(step) for step in range(start, stop))

    def is_still(self, clip_seed_: int) -> bool:
        """Whether the clip of this seed is rendered still (a draw apart from the scene's own)."""
        if self.still_fraction == 0.0:
            return False
        return bool(np.random.default_rng([clip_seed_, 1]).random() < self.still_fraction)

    def batch(self, step: int) -> np.ndarray:
        step_seed = clip_seed(self.seed, step)
        clips = []
        for i in range(self.offset, self.offset + self.local_batch):
            seed = clip_seed(step_seed, i)
            options = dict(self.options, motion=0.0) if self.is_still(seed) else self.options
            clips.append(synthetic_video(seed, self.num_frames, self.height, self.width, **options))
        return np.stack(clips)


def heldout_synthetic(seed: int, num_clips: int, num_frames: int, height: int, width: int, **options) -> np.ndarray:
    """Held-out clips: seeded apart from the training steps' (`seed` is the data seed)."""
    return synthetic_clips(clip_seed(seed + 1, 2**31 - 1), num_clips, num_frames, height, width, **options)


class FolderClipLoader:
    """A clip's frame files and its generator -> the training example."""

    def __init__(self, crop: tuple[int, int], channel_order: str):
        self.crop, self.channel_order = crop, channel_order

    def __call__(self, files, rng: np.random.Generator) -> np.ndarray:
        from dmvfn_jax.data.augment import augment_clip
        from dmvfn_jax.image_io import FrameError, load_image

        frames = [load_image(f) for f in files]
        if any(f.shape != frames[0].shape for f in frames):
            sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
            raise FrameError(f"clip {files[0].parent}: frames of different sizes ({', '.join(sizes)})")
        return in_order(augment_clip(rng, np.stack(frames), *self.crop), self.channel_order)


class ClipFolderSource(StreamSource):
    """Clips stored as folders of frames (`root/<clip>/<frame>.png`, the layout the official
    preparation and `python -m dmvfn_jax.data.prepare` write), with the official augmentations.

    Step s takes the global examples s*B .. s*B+B-1 of an endless stream that visits every clip
    once per epoch in an order shuffled per epoch; each clip gets one augmentation draw (crop,
    rotation cascade, channel reversal, flips) seeded by (seed, example index). Each process
    reads only its own share. Frames are read as RGB and flipped when the config trains on BGR.
    The stream is the TFDS source's, on Grain (`stream.py`), with `workers` input processes.
    """

    def __init__(self, root, seed: int, num_frames: int, crop_h: int, crop_w: int, global_batch: int,
                 process_index: int = 0, process_count: int = 1, channel_order: str = "RGB",
                 workers: int = 0, prefetch: int = 2):
        from pathlib import Path

        from dmvfn_jax.image_io import list_frames

        root = Path(root)
        if not root.is_dir():
            raise InputError(f"data_dir {root}: no such folder")
        clips = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not clips:
            raise InputError(f"data_dir {root}: holds no clip folders (expected {root}/<clip>/<frame>.png)")
        self.frames = []
        for clip in clips:
            files = list_frames(clip)
            if len(files) < num_frames:
                raise InputError(f"clip {clip}: {len(files)} frames, the config needs {num_frames}")
            self.frames.append(files[:num_frames])
        self.stream = TrainingStream(self.frames, FolderClipLoader((crop_h, crop_w), channel_order), seed,
                                     global_batch, process_index, process_count, workers, prefetch)

    def __len__(self) -> int:
        return len(self.frames)


SOURCES = ("synthetic", "clips", "tfds")


def make_source(config, process_index: int, process_count: int):
    """The training source that `config.data` names (`config.data_dir` says where its files are)."""
    data, global_batch = config.data, config.batch_size
    name = data.source
    if data.get("still_fraction", 0.0) and name != "synthetic":
        raise InputError(f"config.data.still_fraction={data.still_fraction} renders still clips of the synthetic "
                         f"source only; data.source is {name!r}: leave it at 0")
    if name == "synthetic":
        return SyntheticSource(data.seed, data.num_frames, data.height, data.width, global_batch,
                               process_index, process_count, float(data.get("still_fraction", 0.0)),
                               **synthetic_options(data))
    if name == "clips":
        if not config.get("data_dir"):
            raise InputError(
                "config.data.source='clips' reads clip folders (<clip>/<frame>.png): set --config.data_dir"
            )
        return ClipFolderSource(config.data_dir, data.seed, data.num_frames, data.height, data.width,
                                global_batch, process_index, process_count, data.channel_order,
                                workers=data.get("workers", 0), prefetch=data.get("prefetch", 2))
    if name == "tfds":
        from dmvfn_jax.data.pipeline import TfdsSource

        return TfdsSource(data.tfds_name, config.get("data_dir"), data.get("split", "train"), data.seed,
                          data.num_frames, data.height, data.width, global_batch, process_index, process_count,
                          data.channel_order, max_stride=data.get("max_stride", 1),
                          workers=data.get("workers", 0), prefetch=data.get("prefetch", 2))
    raise InputError(f"config.data.source={name!r}: sources are {', '.join(map(repr, SOURCES))}")
