"""The jitted evaluation step: one batch of clips predicted autoregressively by each variant
(routed, all blocks, copy-last-frame) and scored, per device under `shard_map`, with the sums
all-reduced once per batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from dmvfn_jax import channels, parallel
from dmvfn_jax.evaluation import metrics as metric_lib
from dmvfn_jax.evaluation.protocols import Mode, Protocol
from dmvfn_jax.models import routing as routing_lib
from dmvfn_jax.models.dmvfn import rollout

VARIANTS = ("dmvfn", "dmvfn_all_blocks", "copy_last")


def _metric_fn(name: str, lpips_model):
    if name == "lpips":
        return lambda x, y: lpips_model(x * 2 - 1, y * 2 - 1)
    return getattr(metric_lib, name)


def make_eval_fn(graphdef, lpips_graphdef, protocol: Protocol, mode: Mode, metric_names, model_order: str,
                 with_predictions: bool):
    """fn(params, lpips_params, clips uint8 (B,T,H,W,3) RGB, mask (B,), key, axis_name=None) -> (sums, outputs).

    sums: per variant and metric the masked sum over the batch per step (horizon,), `count`,
    `gate_sum` (n,) over the routed predictions, `ran_sum` (n,): predictions whose batch ran the
    block (a block runs for a device's share of the batch when any of its samples' gates is on).
    outputs (only with `with_predictions`, else None): the routed rollout, each (B, horizon, ...):
    `prediction` (RGB), `flow` (pixels), `mask`, `gates`.

    With `axis_name` (under `parallel.per_device`) the batch is this device's share: the sums are
    added across devices in one all-reduce, sampled gates are the whole batch's draws, and with
    `first_decides` the batch's first sample (on device 0) decides, broadcast by an all-reduce.
    """
    c0, c1 = protocol.context

    def to_model(x):  # RGB frames in the network's order, and its predictions back
        return channels.reorder(x, model_order)

    def to_metric(x):
        return channels.reorder(x, mode.metric_order)

    def fn(params, lpips_params, clips, mask, key, axis_name=None):
        model = nnx.merge(graphdef, params)
        rows = parallel.batch_rows(clips.shape[0], axis_name)
        lpips_model = nnx.merge(lpips_graphdef, lpips_params) if lpips_graphdef is not None else None
        fns = {name: _metric_fn(name, lpips_model) for name in metric_names}
        frames = clips.astype(jnp.float32) / 255.0
        m = mask.astype(jnp.float32)
        out = {"count": m.sum()}

        def routed_step(a, b, k):
            ma, mb = to_model(a), to_model(b)
            v = model.routing_probs(ma, mb)
            gates = routing_lib.select_gates(v, mode.routing, jax.random.fold_in(key, k), rows)
            if mode.first_decides and axis_name is not None:  # the global batch's first sample
                first = jnp.where(jax.lax.axis_index(axis_name) == 0, gates[0], 0.0)
                gates = jnp.broadcast_to(jax.lax.psum(first, axis_name), gates.shape)
            res = model.infer(ma, mb, gates, first_decides=mode.first_decides, empty=mode.empty)
            return res._replace(prediction=to_model(res.prediction))

        steps = {
            "dmvfn": routed_step,
            "dmvfn_all_blocks": lambda a, b, k: to_model(model.infer(to_model(a), to_model(b), None).prediction),
            "copy_last": lambda a, b, k: b,
        }

        def kept(variant):
            """The variant's step for `rollout(scan=True)`: the prediction, kept (and, routed, its gates,
            flow and mask)."""
            def step(a, b, k):
                res = steps[variant](a, b, k)
                pred = getattr(res, "prediction", res)
                extras = {"prediction": pred}
                if variant == "dmvfn":
                    extras["gates"] = res.gates
                    if with_predictions:
                        extras.update(flow=res.flow, mask=res.mask)
                return pred, extras
            return step

        horizon = protocol.horizon
        truth = jnp.moveaxis(frames[:, c1 + 1:c1 + 1 + horizon], 1, 0)  # (horizon, B, H, W, 3)
        real = jnp.broadcast_to(m > 0, (horizon, m.shape[0])).reshape(-1)
        outputs = None
        for variant in VARIANTS:
            # one traced step per variant (the rollout's scan), then every prediction scored at once
            # (BENCHMARKS.md, Decisions, 35)
            stacked = rollout(kept(variant), frames[:, c0], frames[:, c1], horizon, scan=True)
            preds = stacked["prediction"]  # (horizon, B, H, W, 3)
            x = to_metric(preds).reshape((-1,) + preds.shape[2:])
            y = to_metric(truth).reshape(x.shape)
            # where, not a product: a padded row (zeros, mask 0) scores PSNR inf, and inf * 0 is nan
            out[variant] = {name: jnp.where(real, fns[name](x, y), 0.0).reshape(horizon, -1).sum(1)
                            for name in metric_names}
            if variant == "dmvfn":
                used = stacked["gates"] * m[None, :, None]  # (horizon, B, n)
                out["gate_sum"] = used.sum((0, 1))
                out["ran_sum"] = (jnp.any(used > 0, axis=1) * m.sum()).sum(0)
                if with_predictions:  # each (B, horizon, ...)
                    outputs = {k: jnp.moveaxis(v, 0, 1) for k, v in stacked.items()}
        if axis_name is not None:
            out = parallel.psum_packed(out, axis_name)
        return out, outputs

    return fn


def sharded_eval_step(mesh, graphdef, lpips_graphdef, protocol: Protocol, mode: Mode, metric_names,
                      model_order: str, with_predictions: bool):
    """`make_eval_fn` jitted per device over `mesh`: parameters and key replicated, clips and mask
    sharded on `data`; the sums come back replicated, the predictions sharded."""
    fn = make_eval_fn(graphdef, lpips_graphdef, protocol, mode, metric_names, model_order,
                      with_predictions)
    replicated, sharded, data = parallel.replicated(mesh), parallel.batch_sharded(mesh), P(parallel.DATA_AXIS)
    fn = parallel.per_device(fn, mesh, in_specs=(P(), P(), data, data, P()), out_specs=(P(), data))
    return jax.jit(fn, in_shardings=(replicated, replicated, sharded, sharded, replicated),
                   out_shardings=(replicated, sharded if with_predictions else None))
