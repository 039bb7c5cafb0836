"""The official DMVFN optimiser: AdamW under a linear-warmup, cosine-decay learning rate.

Official recipe (batch step `s`, `total` batch steps in the whole run):

    s <  warmup: lr = base + (peak - base) * s / warmup
    s >= warmup: lr = base + (peak - base) * (0.5 + 0.5 * cos(pi * (s - warmup) / (total - warmup)))

with `base = 1e-5`, `peak = 1e-4`, `warmup = 2000`, and AdamW(0.9, 0.999), eps 1e-8, decoupled
weight decay 1e-3 on every parameter.

`optax.adamw` is algebraically the update of `torch.optim.AdamW`: torch does
`p <- p * (1 - lr * wd)` and then the bias-corrected Adam step
`p <- p - lr * m_hat / (sqrt(v_hat) + eps)`, both from the same pre-step `p`; optax's chain
`scale_by_adam -> add_decayed_weights -> scale_by_learning_rate` gives
`p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)`: the decay is multiplied by the
learning rate in both, `eps` is outside the square root in both (`eps_root = 0`).

One numerical difference remains: optax computes the bias correction `1 - b2**t` in float32,
where the cancellation (0.999 is not a float32, and `1 - 0.999**t` is ~1e-3 * t) costs
~2e-5 relative error for the first few hundred steps, while torch computes it in float64.
`scale_by_adam_torch` below computes it as `-expm1(t * log(b2))` instead (~1e-7), so the float32
parameters follow torch's to a few ulps (`tests/test_optim.py`); its state is optax's
`ScaleByAdamState`, so the optimiser state has exactly the structure of `optax.adamw`'s.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import optax

from dmvfn_jax import parallel
from dmvfn_jax.errors import check_int


def _check_float(name: str, value) -> float:
    """A finite, non-negative Python number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def lr_schedule(
    total_steps: int,
    warmup_steps: int = 2000,
    base_lr: float = 1e-5,
    peak_lr: float = 1e-4,
) -> optax.Schedule:
    """The official learning rate as a function of the batch step (jit-safe).

    Args:
      total_steps: batch steps in the whole run (epochs * steps per epoch); the cosine phase
        reaches `base_lr` at this step. Steps past it stay at `base_lr` (the official loop never
        gets there).
      warmup_steps: length of the linear warm-up from `base_lr` to `peak_lr`; 0 for none.
      base_lr: learning rate at step 0 and at the end.
      peak_lr: learning rate at the end of the warm-up.
    Returns:
      `step -> lr`, taking a Python or JAX integer (or an array of them) and returning the
      learning rate in JAX's default float dtype.
    Raises:
      ValueError: when the arguments do not describe a schedule
        (`total_steps > warmup_steps >= 0`, `0 <= base_lr <= peak_lr`, finite).
    """
    total = check_int("total_steps", total_steps)
    warmup = check_int("warmup_steps", warmup_steps)
    if warmup < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup}")
    if total <= warmup:
        raise ValueError(
            f"total_steps ({total}) must be greater than warmup_steps ({warmup}): "
            "the cosine phase needs at least one step"
        )
    base = _check_float("base_lr", base_lr)
    peak = _check_float("peak_lr", peak_lr)
    if peak < base:
        raise ValueError(f"peak_lr ({peak}) must be >= base_lr ({base})")
    span = peak - base

    def schedule(step) -> jax.Array:
        s = jnp.asarray(step, dtype=float)
        warm = base + span * s / max(warmup, 1)
        progress = jnp.clip((s - warmup) / (total - warmup), 0.0, 1.0)
        decay = base + span * (0.5 + 0.5 * jnp.cos(jnp.pi * progress))
        return jnp.where(s < warmup, warm, decay)

    return schedule


def _bias_correction(decay: float, count: jax.Array) -> jax.Array:
    """`1 - decay**count` without float32 cancellation: `-expm1(count * log(decay))`."""
    log_decay = math.log(decay) if decay > 0 else -math.inf
    return -jnp.expm1(jnp.asarray(count, dtype=float) * log_decay)


def scale_by_adam_torch(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """`optax.scale_by_adam` (eps_root 0, no Nesterov) with torch's accurate bias correction.

    Returns `m_hat / (sqrt(v_hat) + eps)` with `m_hat = m / (1 - b1**t)`,
    `sqrt(v_hat) = sqrt(v) / sqrt(1 - b2**t)`, grouped as torch's `_single_tensor_adam` does.
    """

    def init_fn(params):
        zeros = optax.tree.zeros_like
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32), mu=zeros(params), nu=zeros(params)
        )

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        bc1 = _bias_correction(b1, count)
        bc2_sqrt = jnp.sqrt(_bias_correction(b2, count))

        def scale(m, v):
            return (m / bc1.astype(m.dtype)) / (jnp.sqrt(v) / bc2_sqrt.astype(v.dtype) + eps)

        updates = jax.tree.map(scale, mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(
    schedule: optax.ScalarOrSchedule,
    weight_decay: float = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    updates_per_step: int = 1,
) -> optax.GradientTransformation:
    """AdamW as `torch.optim.AdamW` (decoupled decay `p *= 1 - lr * wd`, then Adam).

    The decay applies to every parameter, biases and PReLU slopes included, as in the official
    code.

    Args:
      schedule: a learning rate, or `step -> lr` such as `lr_schedule(...)`.
      weight_decay: decoupled weight decay; multiplied by the learning rate like torch does.
      b1, b2: Adam moment decay rates.
      eps: added to `sqrt(v_hat)` (outside the square root, like torch).
      updates_per_step: optimiser updates per batch step. The official loop makes one update
        per triplet of a clip, all at the batch step's learning rate (28 for 30-frame
        Cityscapes clips); with `k` here, update `n` uses `schedule(n // k)`, so the schedule
        stays indexed by batch step.
    Returns:
      The optax transformation; `update(grads, state, params)` needs `params` for the decay.
    Raises:
      ValueError: for negative or non-finite hyper-parameters, `b1`/`b2` outside [0, 1), or
        `updates_per_step < 1`.
    """
    weight_decay = _check_float("weight_decay", weight_decay)
    for name, beta in (("b1", b1), ("b2", b2)):
        if _check_float(name, beta) >= 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
    eps = _check_float("eps", eps)
    k = check_int("updates_per_step", updates_per_step)
    if k < 1:
        raise ValueError(f"updates_per_step must be >= 1, got {k}")
    if callable(schedule):
        learning_rate = schedule if k == 1 else (lambda count: schedule(count // k))
    else:
        learning_rate = _check_float("schedule (a constant learning rate)", schedule)
    # The chain of `optax.adamw`, with the torch-accurate Adam scaling.
    return optax.chain(
        scale_by_adam_torch(b1, b2, eps),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def make_train_optimizer(
    weight_decay: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """The same AdamW as `make_optimizer`, with the learning rate set by the caller per batch.

    The training step sets it with `set_learning_rate(opt_state, schedule(batch_step))` before
    each batch, so the schedule follows batch steps in both update modes (one update per batch,
    or one per triplet) and a skipped non-finite update cannot shift it. The step gives it the
    parameters packed into one float32 vector (`step.PackedModel`), so Adam's moments are one
    vector each: lane-dense on a TPU (BENCHMARKS.md, decisions 40 and 42).
    """
    weight_decay = _check_float("weight_decay", weight_decay)
    for name, beta in (("b1", b1), ("b2", b2)):
        if _check_float(name, beta) >= 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
    return optax.chain(
        scale_by_adam_torch(b1, b2, _check_float("eps", eps)),
        optax.add_decayed_weights(weight_decay),
        optax.inject_hyperparams(optax.scale)(step_size=0.0),
    )


def packed_moments_state(state):
    """`make_train_optimizer`'s state for a tree of parameters (training's before 03d7ba4: a moment per
    parameter) as the state for the same parameters packed (`parallel.pack`): the same values."""
    adam, *rest = state
    return (adam._replace(mu=parallel.pack(adam.mu), nu=parallel.pack(adam.nu)), *rest)


def set_learning_rate(opt_state, lr):
    """Returns `opt_state` of `make_train_optimizer` with the learning rate `lr`."""
    *head, last = opt_state
    hyper = dict(last.hyperparams)
    hyper["step_size"] = -jnp.asarray(lr, jnp.float32)
    return (*head, last._replace(hyperparams=hyper))


def learning_rate(opt_state) -> jax.Array:
    return -opt_state[-1].hyperparams["step_size"]
