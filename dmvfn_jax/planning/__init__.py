"""Planning a TPU slice before booking it: the training step compiled for a topology on libtpu's
compile-only devices (`plan.py`, `python -m dmvfn_jax.planning.plan`), the TPU chips' public figures
and topologies (`tpu.py`), and what a compiled program does, read from its HLO (`hlo.py`)."""
