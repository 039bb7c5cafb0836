"""The model, training step and configs the bench scripts measure, built one way for all of them."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_config(name: str):
    """`configs/NAME.py`'s `get_config()`. The config files import `configs.common`, so they need
    the repository root on `sys.path` (as `train.py` and `python -m dmvfn_jax.planning.plan` run from it
    have): this is the one place the bench scripts put it there."""
    import importlib

    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    return importlib.import_module(f"configs.{name}").get_config()


def random_dmvfn(seed: int = 0, **model_kwargs):
    """DMVFN carrying random weights in the official format (`random_official_state`), as
    loaded from a converted checkpoint; `model_kwargs` go to `DMVFN` (e.g. `conv_form`)."""
    from flax import nnx

    from dmvfn_jax import checkpoint as ckpt
    from dmvfn_jax.convert.dmvfn_torch import random_official_state, torch_to_jax
    from dmvfn_jax.models import DMVFN

    build = lambda: DMVFN(rngs=nnx.Rngs(0), **model_kwargs)  # noqa: E731
    return ckpt.build_with_params(build, torch_to_jax(random_official_state(seed), ckpt.flat_shapes(ckpt.abstract_params(build))))


def train_step(model, batch: int, size: int, seed: int = 0, optimizer=None):
    """`(jitted_step, state, clips)`: one optimiser step of the official recipe (Laplacian loss,
    AdamW, one update per batch) on one device, and random uint8 3-frame clips of size x size.
    `optimizer`: training's (`make_train_optimizer`) by default.

    The step donates its state: pass the state it returns back in. The state starts from a
    copy of the model's parameters, so the model stays usable (and can build more steps).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dmvfn_jax import parallel
    from dmvfn_jax.train import step as step_lib
    from dmvfn_jax.train.optim import lr_schedule, make_train_optimizer

    opt = make_train_optimizer(1e-3) if optimizer is None else optimizer
    net, state = step_lib.init_state(model, opt, seed)
    state = jax.tree.map(jnp.array, state)  # jnp.array copies: donation must not delete the model's arrays
    fn = step_lib.make_train_step(net, opt, update_mode="per_batch")
    sharded, state = step_lib.shard_train_step(fn, parallel.data_mesh(jax.devices()[:1]), state)
    lr = float(lr_schedule(1000, 10, 1e-5, 1e-4)(10))  # the peak: the rate does not change the time
    jitted = jax.jit(lambda s, c: sharded(s, c, lr), donate_argnums=(0,))
    clips = jnp.asarray(np.random.default_rng(seed).integers(0, 256, (batch, 3, size, size, 3), dtype=np.uint8))
    return jitted, state, clips


def train_thunk(model, batch: int, size: int, optimizer=None):
    """A function that runs one compiled training step (`train_step`) and waits for it; each
    call continues from the state the last one returned."""
    import jax

    jitted, state, clips = train_step(model, batch, size, optimizer=optimizer)  # a fresh state: the step donates it
    compiled = jitted.lower(state, clips).compile()
    box = [state]

    def once():
        box[0], metrics = compiled(box[0], clips)
        jax.block_until_ready(metrics["total"])

    return once
