"""The training augmentations: exact op semantics, one draw per clip, the cascade's probabilities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dmvfn_jax.data.augment import (
    ROTATIONS,
    Augmentation,
    apply_augmentation,
    augment_clip,
    draw_augmentation,
    sample_temporal_window,
    vimeo_triplet,
)

# Row 0 at the top: 1 2 3 / 4 5 6 / 7 8 9.
GRID = np.arange(1, 10, dtype=np.uint8).reshape(3, 3)


def grid_frame() -> np.ndarray:
    """(3, 3, 3) uint8: channel c holds GRID + 10 c, so channels and positions are all distinct."""
    return np.stack([GRID + 10 * c for c in range(3)], axis=-1).astype(np.uint8)


def aug(rotation="none", reverse=False, vflip=False, hflip=False, top=0, left=0, h=3, w=3):
    return Augmentation(top, left, h, w, rotation, reverse, vflip, hflip)


def random_clip(seed=0, t=4, h=9, w=11, c=3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, c), dtype=np.uint8)


@pytest.mark.parametrize(
    "rotation, want",
    [
        ("none", [[1, 2, 3], [4, 5, 6], [7, 8, 9]]),
        ("cw90", [[7, 4, 1], [8, 5, 2], [9, 6, 3]]),  # the left column becomes the top row
        ("180", [[9, 8, 7], [6, 5, 4], [3, 2, 1]]),
        ("ccw90", [[3, 6, 9], [2, 5, 8], [1, 4, 7]]),  # the right column becomes the top row
    ],
)
def test_rotation_semantics(rotation, want):
    out = apply_augmentation(grid_frame(), aug(rotation))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], np.array(want) + 10 * c)


def test_rotations_match_cv2():
    cv2 = pytest.importorskip("cv2")
    frame = random_clip(1, t=1, h=5, w=5)[0]
    codes = {"cw90": cv2.ROTATE_90_CLOCKWISE, "180": cv2.ROTATE_180, "ccw90": cv2.ROTATE_90_COUNTERCLOCKWISE}
    for rotation, code in codes.items():
        np.testing.assert_array_equal(apply_augmentation(frame, aug(rotation, h=5, w=5)), cv2.rotate(frame, code))


def test_channel_reversal_and_flips_semantics():
    frame = grid_frame()
    out = apply_augmentation(frame, aug(reverse=True))
    np.testing.assert_array_equal(out, frame[..., ::-1])
    np.testing.assert_array_equal(out[..., 0], GRID + 20)
    out = apply_augmentation(frame, aug(vflip=True))
    np.testing.assert_array_equal(out[..., 0], [[7, 8, 9], [4, 5, 6], [1, 2, 3]])  # upside down
    out = apply_augmentation(frame, aug(hflip=True))
    np.testing.assert_array_equal(out[..., 0], [[3, 2, 1], [6, 5, 4], [9, 8, 7]])  # mirrored


def test_rotation_comes_before_the_flips():
    out = apply_augmentation(grid_frame(), aug("cw90", vflip=True))
    np.testing.assert_array_equal(out[..., 0], [[9, 6, 3], [8, 5, 2], [7, 4, 1]])  # cw90, then vflip
    out = apply_augmentation(grid_frame(), aug("cw90", hflip=True))
    np.testing.assert_array_equal(out[..., 0], [[1, 4, 7], [2, 5, 8], [3, 6, 9]])


def test_crop_position():
    frame = np.arange(4 * 5 * 2, dtype=np.uint8).reshape(4, 5, 2)
    out = apply_augmentation(frame, aug(top=1, left=2, h=2, w=3))
    assert out.shape == (2, 3, 2) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, frame[1:3, 2:5])
    np.testing.assert_array_equal(apply_augmentation(frame, aug(top=2, left=0, h=2, w=2)), frame[2:4, 0:2])


def test_every_combination_matches_the_spec_order_with_cv2():
    """Crop, cv2.rotate, channels reversed, cv2.flip vertical, cv2.flip horizontal, for all 32 cases."""
    cv2 = pytest.importorskip("cv2")
    codes = {"cw90": cv2.ROTATE_90_CLOCKWISE, "180": cv2.ROTATE_180, "ccw90": cv2.ROTATE_90_COUNTERCLOCKWISE}
    clip = random_clip(2, t=3, h=9, w=11)
    for rotation, rev, vf, hf in itertools.product(ROTATIONS, *[(False, True)] * 3):
        a = Augmentation(2, 3, 6, 6, rotation, rev, vf, hf)
        got = apply_augmentation(clip, a)
        assert got.shape == (3, 6, 6, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
        for t in range(3):
            want = np.ascontiguousarray(clip[t, 2:8, 3:9])
            if rotation != "none":
                want = cv2.rotate(want, codes[rotation])
            if rev:
                want = np.ascontiguousarray(want[..., ::-1])
            if vf:
                want = cv2.flip(want, 0)
            if hf:
                want = cv2.flip(want, 1)
            np.testing.assert_array_equal(got[t], want, err_msg=str(a))


def test_every_frame_gets_the_same_transform():
    clip = random_clip(3, t=6, h=20, w=24)
    rng = np.random.default_rng(5)
    for _ in range(40):
        a = draw_augmentation(rng, 20, 24, 12, 12)
        out = apply_augmentation(clip, a)
        assert out.shape == (6, 12, 12, 3)
        for t in range(clip.shape[0]):
            np.testing.assert_array_equal(out[t], apply_augmentation(clip[t], a))
            np.testing.assert_array_equal(out[t], apply_augmentation(clip[t : t + 1], a)[0])


def test_result_is_a_copy():
    clip = random_clip(4)
    out = apply_augmentation(clip, aug(h=9, w=11))
    np.testing.assert_array_equal(out, clip)
    out[...] = 0
    assert clip.any()


def test_deterministic_for_a_seed():
    clip = random_clip(6, t=5, h=16, w=20)
    a = [augment_clip(np.random.default_rng(1234), clip, 8, 8) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    draws = [[draw_augmentation(np.random.default_rng(s), 16, 20, 8, 8) for _ in range(2)] for s in range(20)]
    assert all(x == y for x, y in draws)
    assert len({d[0] for d in draws}) > 10  # different seeds, different draws
    w = [sample_temporal_window(np.random.default_rng(9), 57) for _ in range(2)]
    np.testing.assert_array_equal(w[0], w[1])
    np.testing.assert_array_equal(vimeo_triplet(np.random.default_rng(9)), vimeo_triplet(np.random.default_rng(9)))


def test_draw_order_is_fixed_and_independent_of_outcomes():
    """top, left, then six uniforms; rotate=False consumes the same draws and only drops the rotation."""
    for seed in range(50):
        rng = np.random.default_rng(seed)
        a = draw_augmentation(rng, 30, 40, 10, 10)
        after = rng.random()
        ref = np.random.default_rng(seed)
        top, left, u = ref.integers(0, 21), ref.integers(0, 31), ref.random(6)
        rotation = "cw90" if u[0] < 0.5 else "180" if u[1] < 0.5 else "ccw90" if u[2] < 0.5 else "none"
        assert a == Augmentation(top, left, 10, 10, rotation, u[3] < 0.5, u[4] < 0.5, u[5] < 0.5)
        assert after == ref.random()
        b = draw_augmentation(np.random.default_rng(seed), 30, 40, 10, 10, rotate=False)
        assert b == a._replace(rotation="none")


def test_cascade_probabilities():
    n = 20_000
    rng = np.random.default_rng(0)
    draws = [draw_augmentation(rng, 4, 4, 4, 4) for _ in range(n)]

    def check(p_emp, p):
        sigma = np.sqrt(p * (1 - p) / n)
        assert abs(p_emp - p) < 4 * sigma, (p_emp, p)

    rotations = [d.rotation for d in draws]
    for rotation, p in [("cw90", 1 / 2), ("180", 1 / 4), ("ccw90", 1 / 8), ("none", 1 / 8)]:
        check(rotations.count(rotation) / n, p)
    flags = np.array([(d.reverse_channels, d.vflip, d.hflip) for d in draws])
    for j in range(3):
        check(flags[:, j].mean(), 1 / 2)
    codes = flags @ np.array([4, 2, 1])
    for k in range(8):  # the three flags are independent of each other
        check(np.mean(codes == k), 1 / 8)
    cw = np.array(rotations) == "cw90"
    check(np.mean(cw & flags[:, 0]), 1 / 4)  # and of the rotation
    assert all(d.top == 0 and d.left == 0 for d in draws[:100])  # crop == frame: offset 0


def test_crop_offsets_cover_the_valid_range_uniformly():
    n = 7_000
    rng = np.random.default_rng(1)
    draws = [draw_augmentation(rng, 10, 7, 4, 4) for _ in range(n)]
    tops = np.bincount([d.top for d in draws])
    lefts = np.bincount([d.left for d in draws])
    assert len(tops) == 7 and len(lefts) == 4  # 0 .. H - crop_h and 0 .. W - crop_w, nothing beyond
    for counts in (tops, lefts):
        p = 1 / len(counts)
        assert np.all(np.abs(counts / n - p) < 4 * np.sqrt(p * (1 - p) / n)), counts
    rng = np.random.default_rng(2)
    rect = [draw_augmentation(rng, 10, 7, 3, 7, rotate=False) for _ in range(500)]
    assert {d.top for d in rect} == set(range(8)) and {d.left for d in rect} == {0}
    out = augment_clip(np.random.default_rng(3), random_clip(t=2, h=10, w=7), 3, 7, rotate=False)
    assert out.shape == (2, 3, 7, 3)


def test_temporal_window_ranges():
    rng = np.random.default_rng(0)
    for n in [10, 15, 19, 20, 29, 30, 37, 49, 50, 51, 60, 120, 400]:
        top = max(1, min(5, n // 10))
        strides, starts = set(), set()
        for _ in range(2000):
            idx = sample_temporal_window(rng, n)
            assert idx.shape == (10,) and idx.dtype == np.int64
            stride = int(idx[1] - idx[0])
            np.testing.assert_array_equal(np.diff(idx), stride)
            assert 0 <= idx[0] and idx[-1] <= n - 1
            strides.add(stride)
            starts.add(int(idx[0]))
        assert strides == set(range(1, top + 1)), (n, strides)
        assert 0 in starts
        if n <= 60:  # every start of the smallest and of the largest stride shows up
            assert set(range(n - 9)) <= starts, n
            assert n - 9 * top - 1 in starts
    for _ in range(100):  # a custom length and max stride
        idx = sample_temporal_window(rng, 100, length=4, max_stride=30)
        assert 1 <= idx[1] - idx[0] <= 25 and idx[-1] <= 99


def test_vimeo_triplet():
    rng = np.random.default_rng(0)
    got = {tuple(vimeo_triplet(rng)) for _ in range(300)}
    assert got == {(s, s + 1, s + 2) for s in range(5)}
    assert tuple(vimeo_triplet(rng, 3)) == (0, 1, 2)


def test_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"crop 300x256 .*frames of 256x448"):
        draw_augmentation(rng, 256, 448, 300, 256)
    with pytest.raises(ValueError, match=r"crop 256x500 .*frames of 256x448"):
        draw_augmentation(rng, 256, 448, 256, 500, rotate=False)
    with pytest.raises(ValueError, match=r"not square.*rotate=False"):
        draw_augmentation(rng, 256, 448, 128, 256)
    with pytest.raises(ValueError, match="crop_h must be >= 1"):
        draw_augmentation(rng, 8, 8, 0, 4)
    with pytest.raises(TypeError, match="np.random.Generator"):
        draw_augmentation(1234, 8, 8, 4, 4)
    with pytest.raises(ValueError, match="rotation must be one of"):
        apply_augmentation(grid_frame(), aug("cw180"))
    with pytest.raises(ValueError, match=r"does not fit in frames of 3x3"):
        apply_augmentation(grid_frame(), aug(top=1))
    with pytest.raises(ValueError, match="got shape"):
        apply_augmentation(GRID, aug())
    with pytest.raises(ValueError, match=r"crop 8x8 .*frames of 9x7"):
        augment_clip(rng, random_clip(h=9, w=7), 8, 8)
    with pytest.raises(ValueError, match=r"at least 10 frames .*got 9"):
        sample_temporal_window(rng, 9)
    with pytest.raises(ValueError, match=r"at least 4 frames .*got 3"):
        sample_temporal_window(rng, 3, length=4)
    with pytest.raises(ValueError, match="max_stride must be >= 1"):
        sample_temporal_window(rng, 30, max_stride=0)
    with pytest.raises(ValueError, match=r"at least 3 frames .*got 2"):
        vimeo_triplet(rng, 2)
