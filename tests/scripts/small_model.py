"""The small DMVFN of the tests whose point is not the model (sharding, collectives, several
processes, the training loop's faults and signals): two narrow blocks, whose training step
compiles and runs faster than the official nine's (BENCHMARKS.md, Decisions, "The small model of the tests").
The tests of the model itself, its parity and its learning keep the official nine."""

SMALL_MODEL = {"widths": (16, 16), "scales": (2, 1)}
# the same as `train.py` / `python -m dmvfn_jax.planning.plan` overrides: --config.model.widths=(16,16,)
SMALL_MODEL_FLAGS = tuple(f"--config.model.{k}=({','.join(map(str, v))},)" for k, v in SMALL_MODEL.items())
