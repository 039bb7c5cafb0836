"""The synthetic video generator: deterministic, any size, with gradual but non-trivial motion."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dmvfn_jax.data.synthetic import clip_seed, synthetic_clips, synthetic_video


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    return synthetic_clips(7, 8, 10, 64, 64)


def test_same_seed_same_video_different_seed_different():
    a = synthetic_video(3, 6, 40, 48)
    np.testing.assert_array_equal(a, synthetic_video(3, 6, 40, 48))
    assert not np.array_equal(a, synthetic_video(4, 6, 40, 48))


def test_clips_are_deterministic_and_distinct(clips):
    np.testing.assert_array_equal(clips, synthetic_clips(7, 8, 10, 64, 64))
    np.testing.assert_array_equal(clips[3], synthetic_video(clip_seed(7, 3), 10, 64, 64))
    assert len({c.tobytes() for c in clips}) == len(clips)
    assert not np.array_equal(clips[0], synthetic_clips(8, 1, 10, 64, 64)[0])


@pytest.mark.parametrize("t, h, w", [(1, 1, 1), (3, 37, 53), (9, 16, 5), (2, 71, 29)])
def test_any_size(t, h, w):
    video = synthetic_video(11, t, h, w)
    assert video.shape == (t, h, w, 3) and video.dtype == np.uint8
    clips = synthetic_clips(11, 2, t, h, w)
    assert clips.shape == (2, t, h, w, 3) and clips.dtype == np.uint8
    assert synthetic_clips(11, 0, t, h, w).shape == (0, t, h, w, 3)


def test_longer_video_extends_shorter():
    """Frames are rendered in chunks; frame t must not depend on the video length."""
    long = synthetic_video(5, 19, 33, 41)
    np.testing.assert_array_equal(long[:5], synthetic_video(5, 5, 33, 41))
    np.testing.assert_array_equal(long[:9], synthetic_video(5, 9, 33, 41))


def test_content_uses_the_range(clips):
    assert clips.std() > 30
    assert clips.min() < 30 and clips.max() > 225


def test_motion_is_present_but_gradual(clips):
    x = clips.astype(np.float64)
    step1 = np.abs(x[:, 1:] - x[:, :-1]).mean(axis=(2, 3, 4))  # (N, T-1)
    step5 = np.abs(x[:, 5:] - x[:, :-5]).mean(axis=(2, 3, 4))  # (N, T-5)
    assert (step1 > 1.0).all(), "every frame should differ from the previous one"
    # per clip, frames 5 apart differ clearly more than consecutive ones
    assert (step5.mean(axis=1) > 1.25 * step1.mean(axis=1)).all(), (step1.mean(1), step5.mean(1))


def test_copy_last_frame_is_a_nontrivial_baseline(clips):
    x = clips.astype(np.float64)
    mse = ((x[:, 1:] - x[:, :-1]) ** 2).mean(axis=(2, 3, 4))
    psnr = 10 * np.log10(255.0**2 / mse)
    assert np.isfinite(psnr).all()
    assert (psnr < 35).all() and (psnr > 10).all(), (psnr.min(), psnr.max())


def test_fast_enough():
    start = time.perf_counter()
    synthetic_clips(0, 64, 10, 64, 64)
    elapsed = time.perf_counter() - start
    assert elapsed < 15, f"64 clips of 10 frames at 64x64 took {elapsed:.1f} s (about 1 s expected)"


@pytest.mark.parametrize(
    "args, match",
    [
        ((-1, 2, 8, 8), "seed must be >= 0"),
        ((0, 0, 8, 8), "num_frames must be >= 1"),
        ((0, 2, 0, 8), "height must be >= 1"),
        ((0, 2, 8, 2.5), "width must be an integer"),
        ((True, 2, 8, 8), "seed must be an integer"),
    ],
)
def test_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        synthetic_video(*args)
    seed, *size = args
    with pytest.raises(ValueError, match=match):
        synthetic_clips(seed, 1, *size)


def test_clips_reject_negative_count():
    with pytest.raises(ValueError, match="num_clips must be >= 0"):
        synthetic_clips(0, -1, 2, 8, 8)


def test_scene_options():
    from dmvfn_jax.data.synthetic import synthetic_video

    base = synthetic_video(3, 4, 32, 40)
    np.testing.assert_array_equal(base, synthetic_video(3, 4, 32, 40, 1.0, 1.0, (2, 4), None))
    still = synthetic_video(3, 4, 32, 40, motion=0.0)
    assert np.array_equal(still[0], still[-1])  # no motion: every frame is the same
    assert not np.array_equal(synthetic_video(3, 4, 32, 40, smoothness=3.0), base)
    empty = synthetic_video(3, 3, 32, 40, shapes=(0, 0), pan_direction=0.0)
    # a pan towards +x: frame t+1 shifted left by the speed matches frame t in the interior
    errs = [np.abs(empty[1, :, 8:-8].astype(int) - np.roll(empty[0], s, axis=1)[:, 8:-8].astype(int)).mean()
            for s in range(0, 4)]
    assert int(np.argmin(errs)) >= 1  # moved right by at least about a pixel, not left
    with pytest.raises(ValueError, match="shapes"):
        synthetic_video(3, 2, 8, 8, shapes=(3, 1))
    with pytest.raises(ValueError, match="motion"):
        synthetic_video(3, 2, 8, 8, motion=-1.0)
    with pytest.raises(ValueError, match="smoothness"):
        synthetic_video(3, 2, 8, 8, smoothness=0.0)


def test_still_clips_are_drawn_per_clip_and_zero_draws_none():
    """`data.still_fraction`: that share of training clips (drawn from each clip's seed) has no motion
    at all; 0 gives the clips of a source without the option."""
    from dmvfn_jax.data.sources import SyntheticSource
    from dmvfn_jax.errors import InputError

    plain = SyntheticSource(3, 3, 32, 32, 16, shapes=(0, 2))
    none = SyntheticSource(3, 3, 32, 32, 16, still_fraction=0.0, shapes=(0, 2))
    half = SyntheticSource(3, 3, 32, 32, 16, still_fraction=0.5, shapes=(0, 2))
    np.testing.assert_array_equal(none.batch(5), plain.batch(5))
    moving, mixed = plain.batch(5), half.batch(5)
    still = [bool(np.all(c == c[0])) for c in mixed]
    assert not any(np.all(c == c[0]) for c in moving)
    assert 3 <= sum(still) <= 13  # about half of 16
    for c, m, s in zip(mixed, moving, still):
        np.testing.assert_array_equal(c, np.broadcast_to(m[0], m.shape) if s else m)  # the same scene, held still
    np.testing.assert_array_equal(half.batch(5), mixed)  # deterministic
    with pytest.raises(InputError, match="still_fraction"):
        SyntheticSource(3, 3, 32, 32, 16, still_fraction=1.5)


def test_still_fraction_of_another_source_is_refused():
    """Only the synthetic source renders still clips: elsewhere the option would do nothing, silently."""
    import configs.demo
    from dmvfn_jax.data.sources import make_source
    from dmvfn_jax.errors import InputError

    c = configs.demo.get_config()
    c.data.source, c.data_dir = "clips", "/nowhere"
    with pytest.raises(InputError, match="still_fraction=0.25 renders still clips of the synthetic source only"):
        make_source(c, 0, 1)
