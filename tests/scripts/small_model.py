"""The small DMVFN of the tests whose point is not the model (sharding, collectives, several
processes, the training loop's faults and signals): two narrow blocks compile in about 12 s
where the official nine take about 30, and step 8x faster (`python bench/compile_model_size.py`).
The tests of the model itself, its parity and its learning keep the official nine."""

SMALL_MODEL = {"widths": (16, 16), "scales": (2, 1)}
# the same as `train.py` / `python -m dmvfn_jax.plan` overrides: --config.model.widths=(16,16,)
SMALL_MODEL_FLAGS = tuple(f"--config.model.{k}=({','.join(map(str, v))},)" for k, v in SMALL_MODEL.items())
