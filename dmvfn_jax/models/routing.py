"""The routing module and the ways of turning its probabilities into block gates.

Training estimators (both give P(gate = 1) = v in the forward pass):
- `bernoulli_st`: the official one. g ~ Bernoulli(v), gradient passed straight through to v.
- `gumbel_st`: binary Gumbel-softmax with a temperature, hard sample in the forward pass and the
  gradient of the relaxed sample in the backward pass.

Inference choices (`select_gates`): `"sample"` (Bernoulli, seeded), `"threshold"` (v >= 0.5),
`"all"` (DMVFN without routing), or an explicit gate array from the caller.
"""

from __future__ import annotations

import functools

from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dmvfn_jax.models.layers import torch_conv, torch_linear

ROUTING_CHOICES = ("sample", "threshold", "all")
# `gates_by_index`'s order: the routing choices and explicit gates, as one compiled program's data;
# those that read the routing probabilities first
_READ_PROBS = ("threshold", "sample")
CHOICES_BY_INDEX = _READ_PROBS + ("all", "explicit")
# What the routing module reads, 6 channels in every option (the same parameters): "frames" (the
# official: the two frames), "difference" (the first frame and the second minus the first: a still
# pair's last three channels are exactly zero, so motion is in plain sight) or "motion" (the
# difference and its absolute value: nothing of the scene's content, so a still pair's input is
# exactly zero whatever it shows, and every still pair gets the same gates).
ROUTING_INPUTS = ("frames", "difference", "motion")
ESTIMATORS = ("bernoulli", "gumbel")
Routing = Union[str, jax.Array, np.ndarray]


class RoutingModule(nnx.Module):
    """Conv(6->32) -> ReLU -> Conv(32->32) -> global mean -> Linear(32->n) -> sigmoid -> normalise.

    `rescale=True` (the official module): v is rescaled to sum n/2 over the blocks (then clipped to
    [0, 1]), so every input switches on about half the blocks in expectation; False leaves the
    sigmoid's v as it is, so the expected number of blocks can depend on the input (with
    `routing.cost_weight`, README "Routing that adapts to the input"). `inputs`: one of
    `ROUTING_INPUTS`. The parameters are the same in every option.
    """

    def __init__(self, num_blocks: int = 9, *, rescale: bool = True, inputs: str = "frames", rngs: nnx.Rngs):
        if inputs not in ROUTING_INPUTS:
            raise ValueError(f"routing inputs must be one of {ROUTING_INPUTS}, got {inputs!r}")
        self.conv_a = torch_conv(6, 32, rngs=rngs)
        self.conv_b = torch_conv(32, 32, rngs=rngs)
        self.l1 = torch_linear(32, num_blocks, rngs=rngs)
        self.num_blocks = num_blocks
        self.rescale = bool(rescale)
        self.inputs = inputs

    def __call__(self, img0: jax.Array, img1: jax.Array) -> jax.Array:
        """Per-block probabilities v, (B, num_blocks), in [0, 1]."""
        x = routing_input(img0, img1, self.inputs)
        pooled = mean_of_conv3x3(jax.nn.relu(self.conv_a(x)), self.conv_b.kernel[...], self.conv_b.bias[...])
        v = jax.nn.sigmoid(self.l1(pooled))
        if not self.rescale:
            return v
        v = v / (jnp.sum(v, axis=1, keepdims=True) + 1e-6) * (self.num_blocks / 2)
        return jnp.clip(v, 0.0, 1.0)


def routing_input(img0: jax.Array, img1: jax.Array, inputs: str) -> jax.Array:
    """The routing module's 6-channel input (B, H, W, 6) for one of `ROUTING_INPUTS`."""
    if inputs == "frames":
        return jnp.concatenate([img0, img1], axis=-1)
    d = img1 - img0
    return jnp.concatenate([img0, d] if inputs == "difference" else [d, jnp.abs(d)], axis=-1)


def mean_of_conv3x3(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """`mean(conv(x), axis=(1, 2))` for a 3x3, stride-1, zero-padded conv, without the conv.

    The mean of a linear map is the map of sums: tap (i, j) of the kernel sees every pixel of
    `x` except one border row (i = 0: the last, i = 2: the first) and one border column, so its
    window sum is the total minus that row and column plus their shared corner. This is exact
    up to float rounding and costs a few reductions instead of a full-resolution 32->32 conv
    (about 10% of a training step on CPU before; BENCHMARKS.md, attempt 11).

    Args:
      x: (B, H, W, C); kernel: (3, 3, C, O); bias: (O,).
    Returns:
      (B, O).
    """
    _, h, w, _ = x.shape
    total = jnp.sum(x, axis=(1, 2))  # (B, C)
    rows = jnp.sum(x[:, (h - 1, 0)], axis=2)  # rows left out by taps i = 0 and i = 2: (B, 2, C)
    cols = jnp.sum(x[:, :, (w - 1, 0)], axis=1)  # (B, 2, C)
    corners = x[:, (h - 1, 0)][:, :, (w - 1, 0)]  # (B, 2, 2, C)
    zero_row = jnp.zeros_like(rows[:, :1])
    # excluded[i]: what tap row i misses; index 1 (the centre) misses nothing.
    ex_rows = jnp.concatenate([rows[:, :1], zero_row, rows[:, 1:]], axis=1)  # (B, 3, C)
    ex_cols = jnp.concatenate([cols[:, :1], zero_row, cols[:, 1:]], axis=1)
    # the corners at [0::2, 0::2] of a zero (B, 3, 3, C), by concatenation
    zero_col = jnp.zeros_like(corners[:, :, :1])
    corner_rows = jnp.concatenate([corners[:, :, :1], zero_col, corners[:, :, 1:]], axis=2)  # (B, 2, 3, C)
    ex_corners = jnp.concatenate([corner_rows[:, :1], jnp.zeros_like(corner_rows[:, :1]), corner_rows[:, 1:]], axis=1)
    sums = total[:, None, None] - ex_rows[:, :, None] - ex_cols[:, None, :] + ex_corners  # (B, 3, 3, C)
    return jnp.einsum("bijc,ijco->bo", sums, kernel.astype(x.dtype)) / (h * w) + bias.astype(x.dtype)


Rows = tuple  # (start, total): the array holds rows start .. start + B of a batch of `total` rows


def batch_noise(draw, key: jax.Array, shape: tuple[int, ...], rows: Rows | None = None) -> jax.Array:
    """`draw(key, shape)`, or, with `rows=(start, total)`, rows start .. start + shape[0] of
    `draw(key, (total,) + shape[1:])`.

    A data-parallel device holds a slice of the batch; drawing the whole batch's noise (a few
    numbers per sample) and keeping its own rows gives every device the draws that one device
    would make for the whole batch, with no communication.
    """
    if rows is None:
        return draw(key, shape)
    start, total = rows
    full = draw(key, (total,) + tuple(shape[1:]))
    return jax.lax.dynamic_slice_in_dim(full, start, shape[0], axis=0)


def _bernoulli(key: jax.Array, v: jax.Array, rows: Rows | None) -> jax.Array:
    # jax.random.bernoulli(key, v) is exactly uniform(key, v.shape, v.dtype) < v
    return batch_noise(lambda k, s: jax.random.uniform(k, s, v.dtype), key, v.shape, rows) < v


def bernoulli_st(key: jax.Array, v: jax.Array, rows: Rows | None = None) -> jax.Array:
    """Official estimator: hard Bernoulli(v) sample, identity gradient to v."""
    hard = _bernoulli(key, v, rows).astype(v.dtype)
    return v + jax.lax.stop_gradient(hard - v)


def gumbel_st(key: jax.Array, v: jax.Array, temperature: float = 1.0, eps: float = 1e-6,
              rows: Rows | None = None) -> jax.Array:
    """Binary Gumbel-softmax, straight-through: hard sample forward, relaxed gradient backward.

    The two-class softmax over logits (log v, log(1 - v)) with Gumbel noise is
    sigmoid((logit(v) + L) / temperature) with L ~ Logistic(0, 1); its hard version
    (relaxed > 0.5) is 1 with probability exactly v.
    """
    if temperature <= 0:
        raise ValueError(f"gumbel_st: temperature must be > 0, got {temperature}")
    vc = jnp.clip(v, eps, 1.0 - eps)
    noise = batch_noise(lambda k, s: jax.random.logistic(k, s, v.dtype), key, v.shape, rows)
    soft = jax.nn.sigmoid((jnp.log(vc) - jnp.log1p(-vc) + noise) / temperature)
    hard = (soft > 0.5).astype(v.dtype)
    return soft + jax.lax.stop_gradient(hard - soft)


def training_gates(v: jax.Array, key: jax.Array, estimator: str = "bernoulli", temperature: float = 1.0,
                   rows: Rows | None = None):
    """Hard gates with a gradient path to `v`, from the named training estimator.

    `rows=(start, total)`: `v` is a slice of a larger batch (`batch_noise`)."""
    if estimator == "bernoulli":
        return bernoulli_st(key, v, rows)
    if estimator == "gumbel":
        return gumbel_st(key, v, temperature, rows=rows)
    raise ValueError(f"unknown routing estimator {estimator!r}; choose one of {ESTIMATORS}")


def check_routing(routing: Routing, num_blocks: int = 9) -> None:
    """Raises a clear error for a routing choice that `select_gates` would not accept."""
    if isinstance(routing, str):
        if routing not in ROUTING_CHOICES:
            raise ValueError(f"unknown routing {routing!r}; choose one of {ROUTING_CHOICES} or pass gates")
        return
    shape = tuple(np.shape(routing))
    if shape not in ((num_blocks,),) and not (len(shape) == 2 and shape[1] == num_blocks):
        raise ValueError(f"explicit gates must have shape ({num_blocks},) or (B, {num_blocks}), got {shape}")


def select_gates(v: jax.Array, routing: Routing, key: jax.Array | None = None, rows: Rows | None = None) -> jax.Array:
    """Inference gates (B, n) in {0, 1} as float, from the routing probabilities `v` (B, n).

    `rows=(start, total)`: `v` is a slice of a larger batch; "sample" draws as for the whole batch."""
    check_routing(routing, v.shape[1])
    if isinstance(routing, str):
        if routing == "all":
            return jnp.ones_like(v)
        if routing == "threshold":
            return (v >= 0.5).astype(v.dtype)
        if key is None:
            raise ValueError("routing='sample' needs a PRNG key (pass seed= or key=)")
        return _bernoulli(key, v, rows).astype(v.dtype)
    gates = jnp.asarray(routing, v.dtype)
    return jnp.broadcast_to(gates, v.shape)


def gates_by_index(probs, img0: jax.Array, img1: jax.Array, choice: jax.Array, key: jax.Array,
                   given: jax.Array) -> jax.Array:
    """`select_gates` with the routing choice as data: one compiled program serves them all.

    `choice`: an int32 scalar indexing `CHOICES_BY_INDEX`; `probs(img0, img1)`: the routing
    probabilities (B, n), computed only for "threshold" and "sample"; `given`: the gates (B, n)
    of "explicit" (ignored otherwise). The gates equal `select_gates`' for the same choice."""
    shape = jax.eval_shape(probs, img0, img1)
    v = jax.lax.cond(choice < len(_READ_PROBS), probs, lambda a, b: jnp.zeros(shape.shape, shape.dtype), img0, img1)
    return jax.lax.switch(choice, [functools.partial(select_gates, v, c if c != "explicit" else given, key)
                                   for c in CHOICES_BY_INDEX])
