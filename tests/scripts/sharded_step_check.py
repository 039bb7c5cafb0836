"""Run as a script: one training step on 1 device vs on N fake CPU devices, same global batch,
of the suite's small model (small_model.py: what is checked is the sharding, not the model).

    python tests/scripts/sharded_step_check.py N MODE
Prints `max_abs_diff <value>` for the parameters after the step, and the losses.
"""

import os
import sys

from fast_xla import xla_flags  # tests/scripts, this script's folder

n_dev = int(sys.argv[1])
# LLVM's cheap settings: two training steps to compile, one run of each (the compared programs are
# compiled under the same settings).
os.environ["XLA_FLAGS"] = xla_flags(f"--xla_force_host_platform_device_count={n_dev}")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from dmvfn_jax import checkpoint as ckpt  # noqa: E402
from dmvfn_jax import parallel  # noqa: E402
from dmvfn_jax.convert.dmvfn_torch import random_official_state, torch_to_jax  # noqa: E402
from dmvfn_jax.data.synthetic import synthetic_clips  # noqa: E402
from dmvfn_jax.models import DMVFN  # noqa: E402
from dmvfn_jax.train import step as S  # noqa: E402
from dmvfn_jax.train.optim import make_train_optimizer  # noqa: E402
from small_model import SMALL_MODEL  # noqa: E402  (tests/scripts)


def fresh_model():
    """The suite's small DMVFN (small_model.py) with random weights in the official format."""
    build = lambda: DMVFN(rngs=nnx.Rngs(0), **SMALL_MODEL)  # noqa: E731
    shapes = ckpt.flat_shapes(ckpt.abstract_params(build))
    n = len(SMALL_MODEL["widths"])
    return ckpt.build_with_params(build, torch_to_jax(random_official_state(3, SMALL_MODEL["widths"]), shapes,
                                                      num_blocks=n))


def run(devices, clips, mode):
    # eps=1e-3: Adam divides by |g| + eps, so with the default 1e-8 a near-zero gradient entry
    # turns reduction-order noise (1e-9) into a full-size step; a larger eps keeps the update
    # a faithful (Lipschitz) image of the gradient, which is what this check compares.
    opt = make_train_optimizer(eps=1e-3)
    graphdef, state = S.init_state(fresh_model(), opt, seed=0)
    step = S.make_train_step(graphdef, opt, update_mode=mode)
    mesh = parallel.data_mesh(devices)
    jitted, state = S.shard_train_step(step, mesh, state)
    state, metrics = jitted(state, parallel.global_batch(mesh, clips), np.float32(1e-4))
    return jax.tree.map(np.asarray, state.params), jax.tree.map(np.asarray, metrics)


mode = sys.argv[2]
assert len(jax.devices()) == n_dev, jax.devices()
clips = synthetic_clips(0, 8, 4, 64, 64)
p1, m1 = run(jax.devices()[:1], clips, mode)
pn, mn = run(jax.devices(), clips, mode)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(pn)))
moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(jax.tree.map(np.asarray, nnx.state(fresh_model(), nnx.Param)))))
print(f"loss_1 {m1['total']:.8f} loss_n {mn['total']:.8f}")
print(f"moved {moved:.3e}")
print(f"max_abs_diff {diff:.3e}")
