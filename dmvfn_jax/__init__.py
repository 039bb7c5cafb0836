"""dmvfn-jax: DMVFN video prediction in JAX/Flax NNX.

`DMVFN` is the network; `Predictor` loads a converted checkpoint and predicts frames.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Both are imported on first use, so that `import dmvfn_jax.image_io` (reading a PNG, an input
    # worker, a dataset builder) does not import JAX and Flax, nor Predictor's orbax.
    if name == "DMVFN":
        from dmvfn_jax.models import DMVFN

        return DMVFN
    if name == "Predictor":
        from dmvfn_jax.predict.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'dmvfn_jax' has no attribute {name!r}")


__all__ = ["DMVFN", "Predictor", "__version__"]
