"""Run as a script: compile training and evaluation steps on 8 fake CPU devices and print, one JSON
line per program, the collectives of the compiled HLO (`dmvfn_jax.planning.hlo`).

    python tests/scripts/collectives_check.py [--official] VARIANT [VARIANT ...]

VARIANT: `train:MODE:ESTIMATOR:DTYPE` (the training step of `shard_train_step`), `eval:MODE`
(`evaluation.step.sharded_eval_step`, clean or official), or `gspmd:MODE` (the whole-batch
training step under a plain `jax.jit` with the batch sharded: the formulation before
`shard_map`, which the test expects to move activations between devices).

Nothing runs: the programs are lowered from shapes and compiled, for the suite's small model
(small_model.py: which collectives a step holds is fixed by `shard_map` and the step's structure,
not by the number or width of the blocks), or with `--official` for the official nine blocks (the
figures of BENCHMARKS.md, "Data parallelism"). LLVM's optimisation level is
lowered to compile faster (`FAST=0` keeps XLA's default): the collectives are placed by the HLO
passes, before LLVM sees the program, so the setting should not change them; no test compares the
two settings.
"""

import argparse
import json
import os

from fast_xla import xla_flags  # tests/scripts, this script's folder

os.environ["XLA_FLAGS"] = xla_flags("--xla_force_host_platform_device_count=8",
                                   level="fast" if os.environ.get("FAST", "1") == "1" else "default")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from dmvfn_jax import parallel  # noqa: E402
from dmvfn_jax.planning import hlo  # noqa: E402
from dmvfn_jax.models import DMVFN  # noqa: E402
from dmvfn_jax.train import step as S  # noqa: E402
from dmvfn_jax.train.optim import make_train_optimizer  # noqa: E402
from small_model import SMALL_MODEL  # noqa: E402  (tests/scripts)

BATCH, FRAMES, SIZE = 8, 4, 64  # 8 clips of 4 frames: 2 triplets, so update_per_triplet scans twice


def shapes(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def train_program(blocks, mode, estimator, dtype, gspmd=False):
    """`blocks`: DMVFN's keyword arguments for its blocks (none: its defaults, the official nine)."""
    model = nnx.eval_shape(lambda: DMVFN(rngs=nnx.Rngs(0), dtype={"float32": None, "bfloat16": jnp.bfloat16}[dtype],
                                          **blocks))
    graphdef, params = nnx.split(model, nnx.Param)
    opt = make_train_optimizer()
    state = jax.eval_shape(lambda p: S.init_state(nnx.merge(graphdef, p), opt, 0)[1], params)
    step = S.make_train_step(graphdef, opt, update_mode=mode, estimator=estimator)
    mesh = parallel.data_mesh()
    batch = jax.ShapeDtypeStruct((BATCH, FRAMES, SIZE, SIZE, 3), jnp.uint8)
    if gspmd:
        rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        state_sh = jax.tree.map(lambda _: rep, state)
        jitted = jax.jit(step, in_shardings=(state_sh, data, rep), out_shardings=(state_sh, rep), donate_argnums=(0,))
    else:
        jitted, _ = S.shard_train_step(step, mesh, state)
    return jitted.lower(state, batch, jax.ShapeDtypeStruct((), jnp.float32)).compile()


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
        if kind == "train":
            compiled = train_program(blocks, *params)
        elif kind == "gspmd":
            compiled = train_program(blocks, params[0], "bernoulli", "float32", gspmd=True)
        elif kind == "eval":
            compiled = eval_program(blocks, *params)
        else:
            raise SystemExit(f"unknown variant {variant}")
        found = hlo.collectives(compiled.as_text())
        print(json.dumps({"variant": variant, "summary": hlo.summary(found),
                          "all_reduce_bytes": [c.result_bytes for c in found if c.kind == "all-reduce"],
                          "forbidden": sorted({c.kind for c in hlo.forbidden(found)})}), flush=True)


if __name__ == "__main__":
    main()
