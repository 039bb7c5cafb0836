"""`Predictor`: a loaded checkpoint that predicts next frames from RGB inputs.

    from dmvfn_jax import Predictor
    p = Predictor.from_checkpoint("checkpoints/dmvfn_city")
    nxt = p.predict(prev, cur)                 # (H, W, 3) float32 RGB in [0, 1]
    clip = p.rollout([f0, f1], steps=5)        # (5, H, W, 3)

Inputs are HWC (or NHWC batches) uint8 or float arrays in [0, 1], or PIL images, all RGB.
The checkpoint's channel order (BGR for the official weights) is handled inside; outputs are
always RGB. One compilation per input shape: every routing choice runs the same program.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dmvfn_jax import channels
from dmvfn_jax import checkpoint as ckpt
from dmvfn_jax.image_io import FrameError
from dmvfn_jax.models import routing as routing_lib
from dmvfn_jax.checkpoint import load_dmvfn
from dmvfn_jax.models.dmvfn import DMVFN, InferenceResult, rollout


def as_frames(x: Any, name: str) -> np.ndarray:
    """One input as float32 (B, H, W, 3) in [0, 1]; `name` is used in errors."""
    if hasattr(x, "mode") and hasattr(x, "size") and not isinstance(x, np.ndarray):  # PIL image
        if x.mode not in ("RGB",):
            raise FrameError(f"{name}: PIL image in mode {x.mode}; DMVFN needs 3-channel RGB")
        x = np.asarray(x)
    arr = np.asarray(x)
    if arr.ndim not in (3, 4):
        raise FrameError(f"{name}: expected an (H, W, 3) frame or (B, H, W, 3) batch, got shape {arr.shape}")
    if arr.shape[-1] != 3:
        raise FrameError(f"{name}: has {arr.shape[-1]} channels (shape {arr.shape}); DMVFN needs 3-channel RGB")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise FrameError(f"{name}: contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise FrameError(f"{name}: float values span [{lo:g}, {hi:g}]; expected [0, 1] (or pass uint8)")
    else:
        raise FrameError(f"{name}: dtype {arr.dtype} not supported; pass uint8 or float in [0, 1]")
    if arr.shape[-3] < 1 or arr.shape[-2] < 1:
        raise FrameError(f"{name}: empty frame of shape {arr.shape}")
    return arr if arr.ndim == 4 else arr[None]


class Predictor:
    """A DMVFN model plus its channel order, compiled per input shape."""

    def __init__(self, model: DMVFN, channel_order: str = "BGR", metadata: dict | None = None):
        if channel_order not in ckpt.CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {ckpt.CHANNEL_ORDERS}, got {channel_order!r}")
        self.model = model
        self.channel_order = channel_order
        self.metadata = dict(metadata or {})
        self._graphdef, self._state = nnx.split(model)
        self.trace_count = 0  # how many times the prediction function was traced (compiled)
        self._step = jax.jit(self._step_impl, static_argnames=("first_decides", "empty"))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> "Predictor":
        """Loads a checkpoint directory written by `convert_weights.py` or by training."""
        model, meta = load_dmvfn(path)
        return cls(model, meta["channel_order"], meta)

    # -- compiled core ----------------------------------------------------------------------
    def _step_impl(self, state, prev, cur, key, gates, choice, *, first_decides, empty) -> InferenceResult:
        """One program for every routing choice: `choice` indexes `routing_lib.CHOICES_BY_INDEX`
        (data, not a compile-time constant); `gates` (B, n) are read when it is "explicit"."""
        self.trace_count += 1  # runs only while tracing
        model = nnx.merge(self._graphdef, state)
        prev, cur = channels.reorder(prev, self.channel_order), channels.reorder(cur, self.channel_order)
        chosen = routing_lib.gates_by_index(model.routing_probs, prev, cur, choice, key, gates)
        res = model.infer(prev, cur, chosen, first_decides=first_decides, empty=empty)
        return res._replace(prediction=channels.reorder(res.prediction, self.channel_order))

    def _run(self, prev, cur, routing, key, first_decides=False, empty="merge") -> InferenceResult:
        routing_lib.check_routing(routing, self.model.num_blocks)
        shape = (prev.shape[0], self.model.num_blocks)
        if isinstance(routing, str):
            name, gates = routing, np.zeros(shape, np.float32)
        else:
            name, gates = "explicit", jnp.broadcast_to(jnp.asarray(routing, jnp.float32), shape)
        choice = np.int32(routing_lib.CHOICES_BY_INDEX.index(name))
        return self._step(self._state, prev, cur, key, gates, choice, first_decides=first_decides, empty=empty)

    # -- public API -------------------------------------------------------------------------
    def predict_full(self, prev, cur, routing: routing_lib.Routing = "threshold", seed: int = 0, **kw) -> InferenceResult:
        """Like `predict`, but returns the flow, fusion mask and gates too (batched arrays)."""
        p, c = as_frames(prev, "prev"), as_frames(cur, "cur")
        if p.shape != c.shape:
            raise FrameError(f"prev and cur differ in shape: {p.shape[1:]} vs {c.shape[1:]}")
        return self._run(jnp.asarray(p), jnp.asarray(c), routing, jax.random.key(seed), **kw)

    def predict(self, prev, cur, routing: routing_lib.Routing = "threshold", seed: int = 0, **kw) -> np.ndarray:
        """The frame after `cur`, float32 RGB in [0, 1], shaped like the input (HWC or NHWC).

        `routing`: "threshold" (default, deterministic), "sample" (Bernoulli, seeded by `seed`),
        "all" (every block), or explicit gates (9,) / (B, 9).
        """
        batched = np.ndim(prev) == 4
        out = np.asarray(self.predict_full(prev, cur, routing, seed, **kw).prediction)
        return out if batched else out[0]

    def rollout(self, frames: Sequence[Any] | np.ndarray, steps: int, routing="threshold", seed: int = 0,
                on_step: Callable[[int], None] | None = None, **kw):
        """Predicts `steps` frames autoregressively from the last two of `frames`.

        `frames`: a sequence of >= 2 frames (each HWC, or NHWC for a batch), or an array
        (T, H, W, 3) or (B, T, H, W, 3). Returns (steps, H, W, 3), or (B, steps, H, W, 3).
        Step k uses the PRNG key `fold_in(key(seed), k)` when routing samples.
        `on_step(k)`, if given, is called once prediction k (1-based) is computed (a progress bar).
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if isinstance(frames, np.ndarray) or hasattr(frames, "shape"):
            arr = np.asarray(frames)
            if arr.ndim == 4:
                seq, batched = [arr[-2], arr[-1]], False
            elif arr.ndim == 5:
                seq, batched = [arr[:, -2], arr[:, -1]], True
            else:
                raise FrameError(f"frames: expected (T, H, W, 3) or (B, T, H, W, 3), got shape {arr.shape}")
        else:
            if len(frames) < 2:
                raise FrameError(f"frames: need at least 2 frames, got {len(frames)}")
            seq = list(frames[-2:])
            batched = np.ndim(seq[0]) == 4
        prev = as_frames(seq[0], "frames[-2]")
        cur = as_frames(seq[1], "frames[-1]")
        if prev.shape != cur.shape:
            raise FrameError(f"frames[-2] and frames[-1] differ in shape: {prev.shape[1:]} vs {cur.shape[1:]}")
        prev, cur = jnp.asarray(prev), jnp.asarray(cur)
        base = jax.random.key(seed)

        def step(a, b, k):
            pred = self._run(a, b, routing, jax.random.fold_in(base, k), **kw).prediction
            if on_step is not None:
                pred.block_until_ready()
                on_step(k + 1)
            return pred

        outs = rollout(step, prev, cur, steps)
        out = np.stack([np.asarray(o) for o in outs], axis=1)  # (B, steps, H, W, 3)
        return out if batched else out[0]
