"""Channel order. Frames are RGB wherever a user sees them (image files, arrays, `Predictor`); a
DMVFN network takes its frames in the order it was trained on, which its checkpoint records (the
official weights: BGR). No imports: NumPy and JAX arrays alike."""

from __future__ import annotations

ORDERS = ("BGR", "RGB")


def reorder(x, order: str):
    """RGB frames (..., 3) in `order`, or frames in `order` back to RGB: for BGR the channel axis
    reversed (its own inverse), for RGB `x` itself."""
    if order not in ORDERS:
        raise ValueError(f"channel order must be one of {ORDERS}, got {order!r}")
    return x[..., ::-1] if order == "BGR" else x


def in_order(clip, order: str):
    """`reorder` of RGB NumPy frames into a contiguous array (the input pipelines' batches)."""
    import numpy as np

    return np.ascontiguousarray(reorder(clip, order))
