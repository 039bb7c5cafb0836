"""`cv2.resize(..., interpolation=cv2.INTER_LINEAR)` in numpy, bit for bit: how the official data
scripts resize frames, without OpenCV (`data/prepare.py` and the TFDS builders use it)."""

from __future__ import annotations

import numpy as np

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: weights are 11-bit fixed point
_COEF_SCALE = np.float32(1 << _COEF_BITS)


def _linear_taps(src: int, dst: int, clamp_weights: bool):
    """OpenCV's source taps and fixed-point weights along one axis (resizeGeneric, INTER_LINEAR)."""
    scale = 1.0 / (dst / src)  # OpenCV keeps inv_scale = dst/src and takes scale = 1/inv_scale
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_weights:  # x: a tap outside the image becomes weight (1, 0) on the border pixel
        low, high = s < 0, s >= src - 1
        f[low | high] = 0
        s[low], s[high] = 0, src - 1
    w0 = np.rint((np.float32(1) - f) * _COEF_SCALE).astype(np.int32)  # saturate_cast<short> rounds half to even
    w1 = np.rint(f * _COEF_SCALE).astype(np.int32)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


def resize_linear(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """`cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)` for (H, W, C) uint8 images.

    Half-pixel centres (source x = (dst x + 0.5) * W / width - 0.5, clamped at the border), no
    antialiasing, and OpenCV's integer arithmetic: 11-bit weights, the horizontal pass kept in
    int32 and the vertical pass rounded as its SIMD kernel does. An exact 2x reduction is the
    2x2 mean rounded half up (OpenCV switches to INTER_AREA there, which is the same filter).
    Bit-exact against opencv-python 5.0 on the official sizes (tests/test_prepare.py).
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"resize_linear: expected an (H, W[, C]) uint8 image, got {img.dtype} {img.shape}")
    squeeze = img.ndim == 2
    x = img[..., None] if squeeze else img
    h_in, w_in = x.shape[:2]
    if width < 1 or height < 1:
        raise ValueError(f"resize_linear: bad target size {width}x{height}")
    if (w_in, h_in) == (width, height):
        out = x.copy()
    elif w_in == 2 * width and h_in == 2 * height:
        s = x.astype(np.int32)
        s = s[0::2, 0::2] + s[0::2, 1::2] + s[1::2, 0::2] + s[1::2, 1::2]
        out = ((s + 2) >> 2).astype(np.uint8)
    else:
        x0, x1, a0, a1 = _linear_taps(w_in, width, clamp_weights=True)
        y0, y1, b0, b1 = _linear_taps(h_in, height, clamp_weights=False)  # rows clamp, weights do not
        rows, inverse = np.unique(np.concatenate([y0, y1]), return_inverse=True)
        src = x[rows].astype(np.int32)
        horiz = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]  # <= 255 * 2048 * 2
        r0, r1 = horiz[inverse[:height]], horiz[inverse[height:]]
        # VResizeLinearVec_32s8u: ((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16), then (v + 2) >> 2
        v = (((r0 >> 4) * b0[:, None, None]) >> 16) + (((r1 >> 4) * b1[:, None, None]) >> 16)
        out = np.clip((v + 2) >> 2, 0, 255).astype(np.uint8)
    return out[..., 0] if squeeze else out
