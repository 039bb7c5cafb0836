"""The official DMVFN training augmentations and temporal sampling, host-side in plain NumPy.

One `Augmentation` is drawn per clip and applied identically to every frame of it:

1. a random `crop_h x crop_w` crop (256x256 officially, 224x224 for Vimeo), its top-left corner
   uniform over all valid offsets;
2. the rotation cascade: 90 degrees clockwise with p 1/2, else 180 degrees with p 1/2, else 90
   degrees anticlockwise with p 1/2, else none (so P = 1/2, 1/4, 1/8, 1/8);
3. reversed channel order with p 1/2;
4. vertical flip (rows upside down) with p 1/2;
5. horizontal flip (columns mirrored) with p 1/2.

`apply_augmentation` runs the ops in that order (rotation does not commute with the flips).
"Clockwise" is as seen on screen with row 0 at the top, i.e. `cv2.ROTATE_90_CLOCKWISE`, which
is `np.rot90(k=-1)` (NumPy's `k=1` turns such an image anticlockwise).

Random draws, in this fixed order, from the `np.random.Generator` passed in (so the same
generator state gives the same result, and the number of draws never depends on the outcome):

- `draw_augmentation`: `top = rng.integers(0, height - crop_h + 1)`, then
  `left = rng.integers(0, width - crop_w + 1)`, then `u = rng.random(6)`: `u[0]`, `u[1]`, `u[2]`
  are the three rotation coin flips (each `< 0.5` means heads; all three are always drawn, also
  with `rotate=False`, where they are ignored), `u[3]` channel reversal, `u[4]` vertical flip,
  `u[5]` horizontal flip.
- `sample_temporal_window`: the stride `rng.integers(1, max_stride_here + 1)`, then the start
  `rng.integers(0, num_available - (length - 1) * stride)`.
- `vimeo_triplet`: the start `rng.integers(0, num_frames - 2)`.

Arrays are (T, H, W, C) clips or (H, W, C) frames, normally uint8; the dtype is kept. Results
are fresh C-contiguous arrays, never views of the input.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dmvfn_jax.errors import InputError, check_int

ROTATIONS = ("none", "cw90", "180", "ccw90")
_ROT90_K = {"none": 0, "cw90": -1, "180": 2, "ccw90": 1}  # np.rot90 k, row 0 at the top


class Augmentation(NamedTuple):
    """One clip's transform: crop at (top, left) of size crop_h x crop_w, then the rest in order."""

    top: int
    left: int
    crop_h: int
    crop_w: int
    rotation: str  # one of ROTATIONS
    reverse_channels: bool
    vflip: bool
    hflip: bool


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a np.random.Generator (np.random.default_rng(seed)), got {rng!r}")
    return rng


def draw_augmentation(
    rng: np.random.Generator, height: int, width: int, crop_h: int, crop_w: int, rotate: bool = True
) -> Augmentation:
    """Draws one clip's augmentation for frames of `height x width` (draw order: module docstring).

    A crop larger than the frame is an error. With `rotate=True` the crop must be square (a
    90-degree turn would change the clip's shape); pass `rotate=False` for non-square crops.
    """
    _check_rng(rng)
    height, width = check_int("height", height, 1), check_int("width", width, 1)
    crop_h, crop_w = check_int("crop_h", crop_h, 1), check_int("crop_w", crop_w, 1)
    if crop_h > height or crop_w > width:
        raise InputError(
            f"crop {crop_h}x{crop_w} (h x w) does not fit in frames of {height}x{width} (h x w)"
        )
    if rotate and crop_h != crop_w:
        raise InputError(
            f"crop {crop_h}x{crop_w} (h x w) is not square, so a 90-degree rotation would change "
            "the clip's shape: use a square crop or rotate=False"
        )
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    heads = rng.random(6) < 0.5
    rotation = "none"
    if rotate:
        if heads[0]:
            rotation = "cw90"
        elif heads[1]:
            rotation = "180"
        elif heads[2]:
            rotation = "ccw90"
    return Augmentation(
        top=top,
        left=left,
        crop_h=crop_h,
        crop_w=crop_w,
        rotation=rotation,
        reverse_channels=bool(heads[3]),
        vflip=bool(heads[4]),
        hflip=bool(heads[5]),
    )


def apply_augmentation(clip: np.ndarray, aug: Augmentation) -> np.ndarray:
    """Crop, rotate, reverse channels, flip vertically, flip horizontally: the same for every frame.

    `clip` is (T, H, W, C) or a single (H, W, C) frame; the result is (T, crop_h, crop_w, C)
    (or (crop_h, crop_w, C)), with crop_h and crop_w swapped only for a 90-degree rotation of a
    non-square crop, which `draw_augmentation` never produces.
    """
    clip = np.asarray(clip)
    if clip.ndim not in (3, 4):
        raise InputError(f"expected a (T, H, W, C) clip or an (H, W, C) frame, got shape {clip.shape}")
    if aug.rotation not in _ROT90_K:
        raise InputError(f"rotation must be one of {ROTATIONS}, got {aug.rotation!r}")
    h_axis = clip.ndim - 3
    height, width = clip.shape[h_axis], clip.shape[h_axis + 1]
    top, left = check_int("top", aug.top, 0), check_int("left", aug.left, 0)
    crop_h, crop_w = check_int("crop_h", aug.crop_h, 1), check_int("crop_w", aug.crop_w, 1)
    if top + crop_h > height or left + crop_w > width:
        raise InputError(
            f"crop {crop_h}x{crop_w} (h x w) at top={top}, left={left} does not fit in frames of "
            f"{height}x{width} (h x w)"
        )
    out = clip[..., top : top + crop_h, left : left + crop_w, :]
    out = np.rot90(out, k=_ROT90_K[aug.rotation], axes=(h_axis, h_axis + 1))
    if aug.reverse_channels:
        out = out[..., ::-1]
    if aug.vflip:
        out = np.flip(out, axis=h_axis)
    if aug.hflip:
        out = np.flip(out, axis=h_axis + 1)
    return np.array(out, order="C", copy=True)


def augment_clip(
    rng: np.random.Generator, clip: np.ndarray, crop_h: int, crop_w: int, rotate: bool = True
) -> np.ndarray:
    """Draws one augmentation for `clip` (T, H, W, C) and applies it to all its frames."""
    clip = np.asarray(clip)
    if clip.ndim != 4:
        raise InputError(f"expected a (T, H, W, C) clip, got shape {clip.shape}")
    aug = draw_augmentation(rng, clip.shape[1], clip.shape[2], crop_h, crop_w, rotate=rotate)
    return apply_augmentation(clip, aug)


def sample_temporal_window(
    rng: np.random.Generator, num_available: int, length: int = 10, max_stride: int = 5
) -> np.ndarray:
    """UCF101's clip sampling: `length` frame indices `start + stride * arange(length)`.

    The stride is uniform over `1 .. max(1, min(max_stride, num_available // length))`, then the
    start uniform over every position where all `length` indices fit in `0 .. num_available - 1`.
    Returns int64 indices (length,).
    """
    _check_rng(rng)
    num_available = check_int("num_available", num_available, 0)
    length = check_int("length", length, 1)
    max_stride = check_int("max_stride", max_stride, 1)
    if num_available < length:
        raise InputError(f"need at least {length} frames for a window of {length}, got {num_available}")
    top_stride = max(1, min(max_stride, num_available // length))
    stride = int(rng.integers(1, top_stride + 1))
    start = int(rng.integers(0, num_available - (length - 1) * stride))
    return start + stride * np.arange(length, dtype=np.int64)


def vimeo_triplet(rng: np.random.Generator, num_frames: int = 7) -> np.ndarray:
    """A random triplet of consecutive frames of a Vimeo septuplet: int64 indices (3,)."""
    _check_rng(rng)
    num_frames = check_int("num_frames", num_frames, 0)
    if num_frames < 3:
        raise InputError(f"need at least 3 frames for a triplet, got {num_frames}")
    start = int(rng.integers(0, num_frames - 2))
    return start + np.arange(3, dtype=np.int64)
