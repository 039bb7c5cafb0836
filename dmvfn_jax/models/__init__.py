"""Flax NNX modules of DMVFN."""

from dmvfn_jax.models.dmvfn import DMVFN, SCALES, WIDTHS, InferenceResult, merge, rollout
from dmvfn_jax.models.mvfb import MVFB
from dmvfn_jax.models.routing import RoutingModule, bernoulli_st, gumbel_st, select_gates, training_gates

__all__ = [
    "DMVFN",
    "MVFB",
    "RoutingModule",
    "InferenceResult",
    "WIDTHS",
    "SCALES",
    "merge",
    "rollout",
    "bernoulli_st",
    "gumbel_st",
    "select_gates",
    "training_gates",
]
