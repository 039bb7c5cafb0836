"""Run as a script: the data-parallel steps on 8 fake CPU devices. Prints one JSON line per variant
with the collectives of its compiled program (`dmvfn_jax.planning.hlo`); a `run` variant's program
is also run, against the same step on one device.

    python tests/scripts/data_parallel_check.py [--official] VARIANT [VARIANT ...]

VARIANT:
- `train:MODE:ESTIMATOR:DTYPE`: the training step of `shard_train_step`, compiled from shapes;
- `run:MODE:ESTIMATOR`: the same step in float32, compiled for random weights in the official
  format and run once, on 8 devices and on 1, on the same global batch; its line adds both losses
  (`loss_1`, `loss_n`), the largest parameter change (`moved`) and the largest difference between
  the two runs' parameters (`max_abs_diff`);
- `eval:MODE`: `evaluation.step.sharded_eval_step` (clean or official), compiled from shapes;
- `gspmd:MODE`: the whole-batch training step under a plain `jax.jit` with the batch sharded (the
  formulation before `shard_map`, which the test expects to move activations between devices).

Of the suite's small model (small_model.py: which collectives a step holds is fixed by `shard_map`
and the step's structure, not by the number or width of the blocks), or with `--official` of the
official nine blocks (BENCHMARKS.md, "Data parallelism"). LLVM's cheap settings (`FAST=0` keeps
XLA's default): the collectives are placed by the HLO passes, before LLVM sees the program, and the
compared runs are compiled under the same settings. Matmuls and convs at full float32 precision,
as the numbers compared need (the collectives do not depend on it).
"""

import argparse
import json
import os

from fast_xla import xla_flags  # tests/scripts, this script's folder

os.environ["XLA_FLAGS"] = xla_flags("--xla_force_host_platform_device_count=8",
                                   level="fast" if os.environ.get("FAST", "1") == "1" else "default")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from dmvfn_jax import checkpoint as ckpt  # noqa: E402
from dmvfn_jax import parallel  # noqa: E402
from dmvfn_jax.convert.dmvfn_torch import random_official_state, torch_to_jax  # noqa: E402
from dmvfn_jax.data.synthetic import synthetic_clips  # noqa: E402
from dmvfn_jax.models import DMVFN  # noqa: E402
from dmvfn_jax.models.dmvfn import WIDTHS  # noqa: E402
from dmvfn_jax.planning import hlo  # noqa: E402
from dmvfn_jax.train import step as S  # noqa: E402
from dmvfn_jax.train.optim import make_train_optimizer  # noqa: E402
from small_model import SMALL_MODEL  # noqa: E402  (tests/scripts)

BATCH, FRAMES, SIZE = 8, 4, 64  # 8 clips of 4 frames: 2 triplets, so update_per_triplet scans twice
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def shapes(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def collectives(variant, compiled, **extra) -> str:
    found = hlo.collectives(compiled.as_text())
    return json.dumps({"variant": variant, "summary": hlo.summary(found),
                       "all_reduce_bytes": [c.result_bytes for c in found if c.kind == "all-reduce"],
                       "forbidden": sorted({c.kind for c in hlo.forbidden(found)}), **extra})


def train_program(blocks, mode, estimator, dtype, gspmd=False):
    """`blocks`: DMVFN's keyword arguments for its blocks (none: its defaults, the official nine)."""
    model = nnx.eval_shape(lambda: DMVFN(rngs=nnx.Rngs(0), dtype=DTYPES[dtype], **blocks))
    graphdef, params = nnx.split(model, nnx.Param)
    opt = make_train_optimizer()
    state = jax.eval_shape(lambda p: S.init_state(nnx.merge(graphdef, p), opt, 0)[1], params)
    step = S.make_train_step(S.PackedModel.of(graphdef, params), opt, update_mode=mode, estimator=estimator)
    mesh = parallel.data_mesh()
    batch = jax.ShapeDtypeStruct((BATCH, FRAMES, SIZE, SIZE, 3), jnp.uint8)
    if gspmd:
        rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        state_sh = jax.tree.map(lambda _: rep, state)
        jitted = jax.jit(step, in_shardings=(state_sh, data, rep), out_shardings=(state_sh, rep), donate_argnums=(0,))
    else:
        jitted, _ = S.shard_train_step(step, mesh, state)
    return jitted.lower(state, batch, jax.ShapeDtypeStruct((), jnp.float32)).compile()


def fresh_model(blocks):
    """A DMVFN with random weights in the official format."""
    build = lambda: DMVFN(rngs=nnx.Rngs(0), **blocks)  # noqa: E731
    widths = blocks.get("widths", WIDTHS)
    return ckpt.build_with_params(build, torch_to_jax(random_official_state(3, widths),
                                                      ckpt.flat_shapes(ckpt.abstract_params(build)),
                                                      num_blocks=len(widths)))


def run_program(variant, blocks, mode, estimator) -> str:
    """The 8-device step compiled for concrete weights, its collectives, and one step of it against
    the same step on one device."""
    # eps=1e-3: Adam divides by |g| + eps, so with the default 1e-8 a near-zero gradient entry
    # turns reduction-order noise (1e-9) into a full-size step; a larger eps keeps the update
    # a faithful (Lipschitz) image of the gradient, which is what this check compares.
    opt = make_train_optimizer(eps=1e-3)
    clips = synthetic_clips(0, BATCH, FRAMES, SIZE, SIZE)
    model_def, initial = nnx.split(fresh_model(blocks), nnx.Param)
    initial = jax.tree.map(np.asarray, initial)  # host copies: each run's state is donated to its step

    def run(devices):
        model = nnx.merge(model_def, jax.tree.map(jnp.asarray, initial))
        net, state = S.init_state(model, opt, seed=0)
        step = S.make_train_step(net, opt, update_mode=mode, estimator=estimator)
        mesh = parallel.data_mesh(devices)
        jitted, state = S.shard_train_step(step, mesh, state)
        batch, lr = parallel.global_batch(mesh, clips), np.float32(1e-4)
        compiled = jitted.lower(state, batch, lr).compile()
        state, metrics = compiled(state, batch, lr)
        return jax.tree.map(np.asarray, net.params(state.params)), float(metrics["total"]), compiled

    (p1, loss_1, _), (pn, loss_n, compiled_n) = run(jax.devices()[:1]), run(jax.devices())
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(pn), strict=True))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(initial), strict=True))
    return collectives(variant, compiled_n, loss_1=loss_1, loss_n=loss_n, moved=moved, max_abs_diff=diff)


def eval_program(blocks, mode_name):
    from dmvfn_jax.evaluation.protocols import MODES, make_protocol
    from dmvfn_jax.evaluation.step import sharded_eval_step

    model = nnx.eval_shape(lambda: DMVFN(rngs=nnx.Rngs(0), **blocks))
    graphdef, params = nnx.split(model)
    protocol = make_protocol("clip_folder", None, (0, 1), 2)
    fn = sharded_eval_step(parallel.data_mesh(), graphdef, None, protocol, MODES[mode_name], ["psnr", "ssim"],
                           "BGR" if mode_name == "official" else "RGB", True)
    clips = jax.ShapeDtypeStruct((BATCH, 4, SIZE, SIZE, 3), jnp.uint8)
    mask = jax.ShapeDtypeStruct((BATCH,), jnp.bool_)
    key = jax.eval_shape(lambda: jax.random.key(0))
    return fn.lower(shapes(params), None, clips, mask, key).compile()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", action="store_true", help="the official nine blocks, not the small model")
    parser.add_argument("variants", nargs="+", metavar="VARIANT")
    args = parser.parse_args(argv)
    blocks = {} if args.official else SMALL_MODEL
    assert jax.device_count() == 8, jax.devices()
    for variant in args.variants:
        kind, *params = variant.split(":")
        if kind == "run":
            print(run_program(variant, blocks, *params), flush=True)
            continue
        if kind == "train":
            compiled = train_program(blocks, *params)
        elif kind == "gspmd":
            compiled = train_program(blocks, params[0], "bernoulli", "float32", gspmd=True)
        elif kind == "eval":
            compiled = eval_program(blocks, *params)
        else:
            raise SystemExit(f"unknown variant {variant}")
        print(collectives(variant, compiled), flush=True)


if __name__ == "__main__":
    main()
