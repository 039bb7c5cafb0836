"""The training step: loss on triplets, AdamW update, sharded over a `data` mesh axis.

A batch is a uint8 array of clips (B, T, H, W, 3); a clip of T frames gives T - 2 triplets
(f[t], f[t+1] -> f[t+2]). Two update modes:
- `update_per_triplet` (official): one optimiser update per triplet position, T - 2 updates
  per batch, all at the learning rate of the batch step;
- `per_batch`: one update per batch on the mean loss over all its triplets.

The parameters travel packed into one float32 vector (`TrainState.params`; `PackedModel` turns it
into the model), Adam's moments likewise (`optim.make_train_optimizer`): on a TPU every array is
tiled in (8, 128) pieces of its two minor dimensions, and DMVFN's kernels tile to 2.2x their bytes
there, one vector does not (BENCHMARKS.md, decisions 40 and 42). Parameters and optimiser state
are replicated, the batch is sharded on the `data` axis, the state is donated. The learning rate
is an argument of the step (the loop evaluates the schedule), so one compiled step serves every
schedule: runs that differ only in their length or warm-up reuse it from the compilation cache.
`shard_train_step` runs the step under `jax.shard_map`: every device runs the single-device
program on its own clips, and the gradients and metrics of each update cross devices as one
packed all-reduce (`parallel.pmean_packed`), the only collective of the step.
The routing gates of a device's clips are the ones one device would draw for the whole batch,
so any number of devices computes what one device does. An update whose loss or gradient is
not finite is skipped (parameters and optimiser state unchanged) and counted.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

from dmvfn_jax import parallel
from dmvfn_jax.evaluation.metrics import psnr_from_mse
from dmvfn_jax.losses import dmvfn_loss
from dmvfn_jax.models.dmvfn import DMVFN
from dmvfn_jax.train.optim import set_learning_rate

UPDATE_MODES = ("update_per_triplet", "per_batch")


class TrainState(NamedTuple):
    params: jax.Array  # the model's parameters packed into one float32 vector (`PackedModel`)
    opt_state: Any
    step: jax.Array  # batch steps taken (int32)
    rng: jax.Array  # raw PRNG key data (uint32), so checkpoints hold plain arrays
    bad_streak: jax.Array  # consecutive skipped (non-finite) updates
    skipped: jax.Array  # all skipped updates


@dataclasses.dataclass(frozen=True, eq=False)
class PackedModel:
    """A DMVFN whose parameters are one float32 vector (`parallel.pack` of its `nnx.Param`s, in
    `jax.tree.leaves` order): the module's graph and the parameters' shapes."""

    graphdef: Any
    shapes: Any  # nnx.State of jax.ShapeDtypeStruct

    @classmethod
    def of(cls, graphdef, params) -> "PackedModel":
        """From `nnx.split(model, nnx.Param)`; `params` concrete or abstract."""
        return cls(graphdef, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params))

    def params(self, flat: jax.Array):
        """The parameters as the model's `nnx.State`; differentiable (its gradient is one vector)."""
        if flat.shape != (self.size,):
            raise ValueError(f"packed parameters of shape {flat.shape}; this model has ({self.size},)")
        return parallel.unpack(flat, self.shapes)

    def merge(self, flat: jax.Array) -> DMVFN:
        return nnx.merge(self.graphdef, self.params(flat))

    @functools.cached_property
    def size(self) -> int:
        return sum(x.size for x in jax.tree.leaves(self.shapes))


def init_state(model: DMVFN, optimizer: optax.GradientTransformation, seed: int) -> tuple[PackedModel, TrainState]:
    """(net, TrainState) of a model; `net` rebuilds the module from the packed parameters."""
    graphdef, params = nnx.split(model, nnx.Param)
    flat = parallel.pack(params)
    state = TrainState(
        params=flat,
        opt_state=optimizer.init(flat),
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(jax.random.key(seed)),
        bad_streak=jnp.zeros((), jnp.int32),  # distinct buffers: the state is donated
        skipped=jnp.zeros((), jnp.int32),
    )
    return PackedModel.of(graphdef, params), state


def block_costs(widths, scales) -> jax.Array:
    """Each block's weight in the cost term, a proxy for its share of the blocks' FLOPs: its wide
    convs run on (H / scale) x (W / scale) pixels with channels proportional to its width, so they go
    as (width / scale)^2 (the official nine: 1600, 1600, 1936 per scale group). It leaves out the
    8-channel path at half resolution that every block has, the same in every block, so it is close
    for the official nine's wide blocks and far for narrow ones (XLA's count of each block:
    `evaluation/flops.py`)."""
    c = jnp.asarray([(w / s) ** 2 for w, s in zip(widths, scales)], jnp.float32)
    return c / jnp.sum(c)


def routing_cost(v: jax.Array, widths, scales) -> jax.Array:
    """The expected share of the blocks' FLOPs switched on, averaged over the batch: the routing
    probabilities `v` (B, n) weighted by `block_costs` (1: every block on)."""
    return jnp.mean(v @ block_costs(widths, scales))


def _select(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def apply_update(optimizer: optax.GradientTransformation, params, opt_state, grads, loss: jax.Array, lr: jax.Array):
    """The optimiser's part of an update: `(params, opt_state, ok, grad_norm)`, the new parameters
    and state where the loss and the gradients' norm are finite (`ok`), else the old ones."""
    gnorm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(gnorm)
    opt_state = set_learning_rate(opt_state, lr)
    updates, new_opt = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    return _select(ok, new_params, params), _select(ok, new_opt, opt_state), ok, gnorm


def make_train_step(
    net: PackedModel,
    optimizer: optax.GradientTransformation,  # from optim.make_train_optimizer
    *,
    vgg=None,
    update_mode: str = "update_per_triplet",
    estimator: str = "bernoulli",
    temperature: float = 1.0,
    cost_weight: float = 0.0,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict]]:
    """Returns `step(state, clips, lr, axis_name=None) -> (state, metrics)`, not jitted; `lr` is
    the learning rate of this batch step (a float32 scalar: `optim.lr_schedule(...)(state.step)`).

    `cost_weight` > 0 adds a compute-cost term to the loss: the weight times the expected share of
    the blocks' FLOPs the routing switches on (`routing_cost`), so that a block whose update does
    not lower the loss for an input learns to stay off for it. 0 (the official recipe) leaves the
    loss and its program as they are.

    With `axis_name=None` the step is the whole-batch program (jit it on one device); under
    `shard_train_step` it runs per device with `axis_name="data"`.
    """
    if update_mode not in UPDATE_MODES:
        raise ValueError(f"update_mode must be one of {UPDATE_MODES}, got {update_mode!r}")

    def loss_fn(params, img0, img1, gt, key, rows):
        model = net.merge(params)
        outputs, gates, v = model.train_forward(img0, img1, key, estimator, temperature, rows)
        total, terms = dmvfn_loss(outputs, gt, vgg)
        if cost_weight:
            cost = routing_cost(v, model.widths, model.scales)
            total = total + cost_weight * cost
            terms = {**terms, "cost": cost, "total": total}
        mse = jnp.mean((outputs[-1] - gt) ** 2)
        return total, (terms, jnp.mean(gates, axis=0), mse)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(carry, triplet, lr, key, axis_name):
        params, opt_state, bad_streak, skipped = carry
        img0, img1, gt = triplet
        rows = parallel.batch_rows(img0.shape[0], axis_name)
        (loss, (terms, rates, mse)), grads = grad_fn(params, img0, img1, gt, key, rows)
        if axis_name is not None:  # means of equal shards = the whole batch's means; one all-reduce
            with jax.named_scope("all_reduce"):
                loss, terms, rates, mse, grads = parallel.pmean_packed((loss, terms, rates, mse, grads), axis_name)
        with jax.named_scope("optimizer"):
            params, opt_state, ok, gnorm = apply_update(optimizer, params, opt_state, grads, loss, lr)
            bad_streak = jnp.where(ok, 0, bad_streak + 1)
            skipped = skipped + (~ok).astype(jnp.int32)
        metrics = {**terms, "grad_norm": gnorm, "mse": mse, "routing_rate": rates}
        return (params, opt_state, bad_streak, skipped), metrics

    def step(state: TrainState, clips: jax.Array, lr: jax.Array, axis_name: str | None = None):
        frames = clips.astype(jnp.float32) / 255.0  # uint8 transport, normalise on device
        b, t = frames.shape[:2]
        if t < 3:
            raise ValueError(f"clips need at least 3 frames, got {t}")
        lr = jnp.asarray(lr, jnp.float32)
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        carry = (state.params, state.opt_state, state.bad_streak, state.skipped)
        if update_mode == "per_batch":
            trip = [frames[:, k : k + t - 2].reshape((b * (t - 2),) + frames.shape[2:]) for k in range(3)]
            carry, metrics = update(carry, trip, lr, key, axis_name)
        else:
            trips = tuple(jnp.moveaxis(frames[:, k : k + t - 2], 1, 0) for k in range(3))  # (T-2, B, ...)
            keys = jax.random.split(key, t - 2)

            def body(c, xs):
                *trip, k = xs
                return update(c, trip, lr, k, axis_name)

            carry, metrics = jax.lax.scan(body, carry, (*trips, keys))
            metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
        params, opt_state, bad_streak, skipped = carry
        metrics["psnr"] = psnr_from_mse(jnp.maximum(metrics.pop("mse"), 1e-10))  # of the batch's mean error
        metrics["lr"] = lr
        metrics["skipped_total"] = skipped
        metrics["bad_streak"] = bad_streak
        new_state = TrainState(params, opt_state, state.step + 1, state.rng, bad_streak, skipped)
        return new_state, metrics

    return step


def shard_train_step(step_fn, mesh: Mesh, state: TrainState):
    """jit of `step_fn` per device (`parallel.per_device`), with the state and the learning rate
    replicated, the state donated and the batch sharded on `data`.

    `state` may be concrete (it is placed on the mesh) or a tree of `jax.ShapeDtypeStruct`
    (returned as is: `jitted.lower(state, batch, lr)` compiles ahead of time, `dmvfn_jax.planning.plan`).
    Returns `(jitted_step, state_on_mesh)`.
    """
    replicated, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    state_sharding = jax.tree.map(lambda _: replicated, state)
    if not any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state)):
        state = parallel.replicate(state, mesh)
    mapped = parallel.per_device(step_fn, mesh, in_specs=(P(), P(parallel.DATA_AXIS), P()), out_specs=(P(), P()))
    jitted = jax.jit(
        mapped,
        in_shardings=(state_sharding, batch, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
    )
    return jitted, state
