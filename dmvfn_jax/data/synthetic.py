"""Deterministic synthetic videos: a panning textured background under moving textured shapes.

For the demo, smoke tests and users without a dataset. Everything is plain NumPy and drawn from
the seed, so the same seed gives the same video. The motion is modest and smooth (about 0.5-3 px
per frame at 64x64, scaled by `max(min(height, width) / 64, 0.5)`) and sub-pixel (textures are
analytic sums of plane waves evaluated at the moved coordinates, shape edges are anti-aliased),
so predicting the next frame is learnable but copying the last frame is not enough.

A video's random parameters are drawn before its frames are rendered and frame `t` depends only
on them and `t`, so a longer video with the same seed starts with the shorter one.
"""

from __future__ import annotations

import numpy as np

from dmvfn_jax.errors import check_int

_CHUNK = 8  # frames rendered at once (bounds memory for long or large videos)


def _waves(rng: np.random.Generator, count: int, wavelengths: tuple[float, float], scale: float):
    """Random plane waves: angular frequencies (count, 2) in radians per pixel, phases (count,)."""
    wavelength = rng.uniform(*wavelengths, size=count) * scale
    angle = rng.uniform(0.0, np.pi, size=count)
    freq = np.stack([np.cos(angle), np.sin(angle)], axis=-1) * (2 * np.pi / wavelength[:, None])
    return freq, rng.uniform(0.0, 2 * np.pi, size=count)


def _wave_factors(x: np.ndarray, y: np.ndarray, freq: np.ndarray, phase: np.ndarray):
    """`sin(fx x + fy y + phase)` on the grid x (T, W) by y (T, H), as a sum of outer products.

    `sin(u + v) = sin(u) cos(v) + cos(u) sin(v)` with `u = fx x + phase`, `v = fy y`, so the
    waves cost 1-D sines only. Returns `left` (T, H, K, 2) and `right` (T, K, 2, W) whose
    product summed over the last two axes of `left` is wave k's values (T, H, W).
    """
    u = x[:, None, :] * freq[:, 0, None] + phase[:, None]  # (T, K, W)
    v = y[:, :, None] * freq[:, 1]  # (T, H, K)
    left = np.stack([np.cos(v), np.sin(v)], axis=-1)
    right = np.stack([np.sin(u), np.cos(u)], axis=2)
    return left, right


def _colour_waves(x, y, freq, phase, colour) -> np.ndarray:
    """`sum_k colour[k] * sin(fx_k x + fy_k y + phase_k)`: (T, H, W, 3) float32."""
    left, right = _wave_factors(x, y, freq, phase)
    t, h, k, _ = left.shape
    right = right[..., None] * colour[None, :, None, None, :]  # (T, K, 2, W, 3)
    out = left.reshape(t, h, 2 * k) @ right.reshape(t, 2 * k, -1)  # (T, H, W * 3)
    return out.reshape(t, h, -1, 3).astype(np.float32)


def _wave(x, y, freq, phase) -> np.ndarray:
    """One plane wave `sin(fx x + fy y + phase)` on the grid: (T, H, W)."""
    left, right = _wave_factors(x, y, freq[None], np.atleast_1d(phase))
    return (left[:, :, 0, :] @ right[:, 0]).astype(np.float32)


class _Texture:
    """An infinite RGB texture: a smooth random colour field (a sum of random plane waves, each
    with its own colour) under stripes, a soft checker, or finer colour waves.

    Analytic, so sampling it at moved coordinates gives exact sub-pixel motion.
    """

    def __init__(self, rng: np.random.Generator, scale: float):
        self.mean = rng.uniform(0.25, 0.75, size=3)
        freq, phase = _waves(rng, 8, (14.0, 40.0), scale)
        colour = rng.normal(0.0, 0.12, size=(8, 3))
        self.kind = int(rng.integers(3))  # 0 stripes, 1 soft checker, 2 fine colour waves
        if self.kind == 2:
            fine_freq, fine_phase = _waves(rng, 6, (6.0, 12.0), scale)
            freq, phase = np.concatenate([freq, fine_freq]), np.concatenate([phase, fine_phase])
            colour = np.concatenate([colour, rng.normal(0.0, 0.1, size=(6, 3))])
        else:
            (self.stripe_freq,), (self.stripe_phase,) = _waves(rng, 1, (8.0, 18.0), scale)
            # the checker's second wave runs perpendicular to the stripes
            self.checker_freq = np.array([-self.stripe_freq[1], self.stripe_freq[0]])
            self.tint = rng.random(3)
            self.mix = rng.uniform(0.3, 0.55)
        self.freq, self.phase, self.colour = freq, phase, colour

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Colour in [0, 1] on the grid of texture coordinates x (T, W) by y (T, H), in pixels.

        Returns:
          (T, H, W, 3).
        """
        waves = _colour_waves(x, y, self.freq, self.phase, self.colour)
        colour = self.mean.astype(np.float32) + waves
        if self.kind == 2:
            return np.clip(colour, 0.0, 1.0)
        pattern = _wave(x, y, self.stripe_freq, self.stripe_phase)
        if self.kind == 1:
            across = _wave(x, y, self.checker_freq, 0.0)
            pattern = np.tanh(3.0 * pattern * across) * np.float32(1 / np.tanh(3.0))
        pattern = (0.5 + 0.5 * pattern)[..., None] * (self.mix * self.tint).astype(np.float32)
        return np.clip(np.float32(1 - self.mix) * colour + pattern, 0.0, 1.0)


def _bounce(p0: float, v: float, lo: float, hi: float, t: np.ndarray) -> np.ndarray:
    """Position at times t of a point moving at speed v from p0, reflected inside [lo, hi]."""
    span = hi - lo
    if span <= 0:
        return np.full_like(t, (lo + hi) / 2)
    d = np.mod(p0 - lo + v * t, 2 * span)
    return lo + span - np.abs(d - span)


class _Shape:
    """A disc or an axis-aligned rectangle with its own texture, bouncing off the frame edges."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, scale: float, motion: float = 1.0,
                 smoothness: float = 1.0):
        side = min(height, width)
        self.disc = bool(rng.integers(2))
        if self.disc:
            r = rng.uniform(0.12, 0.25) * side
            self.half = (r, r)
        else:
            self.half = tuple(rng.uniform(0.1, 0.25, size=2) * side)
        self.start = (rng.uniform(0, width), rng.uniform(0, height))
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.5, 3.0) * scale * motion
        self.velocity = (speed * np.cos(angle), speed * np.sin(angle))
        self.texture = _Texture(rng, scale * smoothness)
        self.height, self.width = height, width

    def render(self, frame: np.ndarray, xs: np.ndarray, ys: np.ndarray, t: np.ndarray):
        """Composites the shape over `frame` (T, H, W, 3) at times t (T,); xs (W,), ys (H,)."""
        hx, hy = self.half
        cx = _bounce(self.start[0], self.velocity[0], hx, self.width - 1 - hx, t)
        cy = _bounce(self.start[1], self.velocity[1], hy, self.height - 1 - hy, t)
        dx, dy = xs - cx[:, None], ys - cy[:, None]  # (T, W), (T, H)
        if self.disc:
            dist = np.sqrt(dx[:, None, :] ** 2 + dy[:, :, None] ** 2)
            alpha = np.clip(hx - dist + 0.5, 0.0, 1.0).astype(np.float32)
        else:
            ax = np.clip(hx - np.abs(dx) + 0.5, 0.0, 1.0)
            ay = np.clip(hy - np.abs(dy) + 0.5, 0.0, 1.0)
            alpha = (ay[:, :, None] * ax[:, None, :]).astype(np.float32)
        alpha = alpha[..., None]
        return frame + alpha * (self.texture(dx, dy) - frame)


def synthetic_video(
    seed: int, num_frames: int, height: int, width: int, motion: float = 1.0, smoothness: float = 1.0,
    shapes: tuple[int, int] = (2, 4), pan_direction: float | None = None,
) -> np.ndarray:
    """A synthetic RGB video: a textured background panning at a constant random velocity under
    2-4 textured discs and rectangles, each moving at its own velocity and bouncing off the edges.

    Args:
      seed: non-negative integer; the same seed gives the same video.
      num_frames, height, width: any positive sizes.
      motion: multiplies every velocity (1.0: 0.5-3 px per frame at 64x64; the random draws do
        not depend on it, so the same seed gives the same scene moving slower or faster).
      smoothness: multiplies every texture wavelength (1.0: stripes of 8-18 px at 64x64); larger
        values give smoother textures, whose motion is easier to estimate.
      shapes: the least and most number of moving shapes (inclusive).
      pan_direction: None pans the background in a random direction; an angle in degrees (0:
        the scene moves right, 90: down) pans every video that way, within +-20 degrees, like a
        camera that always turns the same way, so that the motion has a prior a model can learn.
    Returns:
      (num_frames, height, width, 3) uint8 RGB.
    Raises:
      ValueError: for a negative seed, a non-positive size, or out-of-range scene options.
    """
    seed = check_int("seed", seed, 0)
    num_frames = check_int("num_frames", num_frames, 1)
    height = check_int("height", height, 1)
    width = check_int("width", width, 1)
    if not (isinstance(motion, (int, float)) and np.isfinite(motion) and motion >= 0):
        raise ValueError(f"motion must be a finite number >= 0, got {motion!r}")
    if not (isinstance(smoothness, (int, float)) and np.isfinite(smoothness) and smoothness > 0):
        raise ValueError(f"smoothness must be a finite number > 0, got {smoothness!r}")
    rng = np.random.default_rng(seed)
    scale = max(min(height, width) / 64.0, 0.5)
    background = _Texture(rng, scale * smoothness)
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.5, 2.0) * scale * motion
    if pan_direction is not None:  # the same draw count: only the angle changes
        angle = np.deg2rad(pan_direction) + (angle / (2 * np.pi) - 0.5) * np.deg2rad(40.0)
    pan = (speed * np.cos(angle), speed * np.sin(angle))
    lo, hi = shapes
    if not 0 <= lo <= hi:
        raise ValueError(f"shapes must be (least, most) with 0 <= least <= most, got {shapes!r}")
    shapes = [_Shape(rng, height, width, scale, motion, smoothness) for _ in range(rng.integers(lo, hi + 1))]

    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    video = np.empty((num_frames, height, width, 3), np.uint8)
    for start in range(0, num_frames, _CHUNK):
        t = np.arange(start, min(start + _CHUNK, num_frames), dtype=np.float64)
        frame = background(xs - pan[0] * t[:, None], ys - pan[1] * t[:, None])
        for shape in shapes:
            frame = shape.render(frame, xs, ys, t)
        frame = np.clip(frame * np.float32(255) + np.float32(0.5), 0, 255)
        video[start : start + len(t)] = frame.astype(np.uint8)
    return video


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip `index` in `synthetic_clips(seed, ...)` (a hash of the pair)."""
    seed = check_int("seed", seed, 0)
    index = check_int("index", index, 0)
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint32)[0])


def synthetic_clips(
    seed: int, num_clips: int, num_frames: int, height: int, width: int, motion: float = 1.0,
    smoothness: float = 1.0, shapes: tuple[int, int] = (2, 4), pan_direction: float | None = None,
) -> np.ndarray:
    """`num_clips` independent synthetic videos: clip i is
    `synthetic_video(clip_seed(seed, i), num_frames, height, width)`.

    Returns:
      (num_clips, num_frames, height, width, 3) uint8 RGB.
    Raises:
      ValueError: for a negative seed or count, or a non-positive size.
    """
    check_int("seed", seed, 0)
    num_clips = check_int("num_clips", num_clips, 0)
    num_frames = check_int("num_frames", num_frames, 1)
    height = check_int("height", height, 1)
    width = check_int("width", width, 1)
    out = np.empty((num_clips, num_frames, height, width, 3), np.uint8)
    for i in range(num_clips):
        out[i] = synthetic_video(clip_seed(seed, i), num_frames, height, width, motion, smoothness, shapes,
                                 pan_direction)
    return out
