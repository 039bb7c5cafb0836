"""GFLOPs per frame of the network, the routing module and each block, from XLA's cost analysis:
what `eval.py` reports beside the routed model's spending."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dmvfn_jax.models.dmvfn import DMVFN, padded_size


def flop_costs(model: DMVFN, height: int, width: int) -> dict:
    """GFLOPs per frame (XLA cost analysis) of the all-blocks network, the routing module and each
    block, with the convs in the plain form (one conv over the 17 channels, as the official code),
    whatever form the backend runs."""
    graphdef, params = nnx.split(model)

    def merged(p):
        return nnx.merge(graphdef, p)

    x = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    ph, pw = padded_size(height, width)
    xp = jax.ShapeDtypeStruct((1, ph, pw, 3), jnp.float32)

    def cost(f, *args) -> float:
        analysis = jax.jit(f).lower(params, *args).cost_analysis()
        if isinstance(analysis, (list, tuple)):
            analysis = analysis[0]
        return float((analysis or {}).get("flops", float("nan"))) / 1e9

    def block(i):
        return lambda p, a, b: merged(p).block_alone(i, a, b)

    return {
        "all_blocks": cost(lambda p, a, b: merged(p).infer(a, b, None, conv_form="plain").prediction, x, x),
        "routing": cost(lambda p, a, b: merged(p).routing_probs(a, b), x, x),
        "blocks": [cost(block(i), xp, xp) for i in range(model.num_blocks)],
    }
