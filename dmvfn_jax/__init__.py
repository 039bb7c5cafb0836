"""dmvfn-jax: DMVFN video prediction in JAX/Flax NNX.

`DMVFN` is the network; `Predictor` loads a converted checkpoint and predicts frames.
"""

from dmvfn_jax.models import DMVFN

__version__ = "0.1.0"


def __getattr__(name):  # keep `import dmvfn_jax` light: Predictor pulls in orbax and PIL
    if name == "Predictor":
        from dmvfn_jax.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'dmvfn_jax' has no attribute {name!r}")


__all__ = ["DMVFN", "Predictor", "__version__"]
