"""Prediction with a trained or converted model: `Predictor` (the Python API, `predictor.py`) and
the command (`command.py`, `python -m dmvfn_jax.predict`)."""


def __getattr__(name):
    # imported on first use, so that `python -m dmvfn_jax.predict --help` does not load JAX first
    if name == "Predictor":
        from dmvfn_jax.predict.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'dmvfn_jax.predict' has no attribute {name!r}")


__all__ = ["Predictor"]
