"""Three formulations of the data-parallel training step, side by side on 8 fake CPU devices.

    .venv/bin/python bench/data_parallel.py [--mode per_batch] [--size 64] [--frames 3] [--repeats 3]

1. `jit`: the whole-batch step under `jax.jit`, batch sharded on `data`, parameters replicated;
   XLA's sharding propagation decides the rest (the step before `shard_map`);
2. `jit+constraints`: the same with `with_sharding_constraint(P("data"))` on the network's
   inputs, gates and nine outputs, the usual way to pin activations to the batch axis;
3. `shard_map`: `shard_train_step` (each device runs the single-device program, one packed
   all-reduce per update).

For each: the collectives in the compiled HLO (`dmvfn_jax.hlo`), compile time and the median
step time. Eight devices share this machine's cores, so the step times compare the
formulations with each other, not with a real accelerator. BENCHMARKS.md, "Data parallelism".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from bench.timing import median_ms  # noqa: E402
from dmvfn_jax import hlo, parallel  # noqa: E402
from dmvfn_jax.data.synthetic import synthetic_clips  # noqa: E402
from dmvfn_jax.models import DMVFN  # noqa: E402
from dmvfn_jax.models.dmvfn import DMVFN as DMVFNClass  # noqa: E402
from dmvfn_jax.train import step as S  # noqa: E402
from dmvfn_jax.train.optim import make_train_optimizer  # noqa: E402


def build(formulation: str, mode: str, mesh, state):
    graphdef, opt = build.graphdef, build.opt
    step = S.make_train_step(graphdef, opt, lambda s: 1e-4, update_mode=mode)
    if formulation == "shard_map":
        return S.shard_train_step(step, mesh, state)
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(parallel.DATA_AXIS))
    state_sh = jax.tree.map(lambda _: rep, state)
    state = jax.device_put(state, state_sh)
    return jax.jit(step, in_shardings=(state_sh, data), out_shardings=(state_sh, rep), donate_argnums=(0,)), state


def constrain_model(mesh):
    """Pins the network's inputs, gates and outputs to the batch axis (formulation 2)."""
    original = DMVFNClass.train_outputs
    data = NamedSharding(mesh, P(parallel.DATA_AXIS))
    pin = lambda x: jax.lax.with_sharding_constraint(x, data)  # noqa: E731

    def train_outputs(self, img0, img1, gates):
        return [pin(o) for o in original(self, pin(img0), pin(img1), pin(gates))]

    DMVFNClass.train_outputs = train_outputs
    return lambda: setattr(DMVFNClass, "train_outputs", original)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default="per_batch", choices=S.UPDATE_MODES)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    assert jax.device_count() == 8, jax.devices()
    mesh = parallel.data_mesh()
    build.opt = make_train_optimizer()
    model = DMVFN(rngs=nnx.Rngs(0))
    build.graphdef, state0 = S.init_state(model, build.opt, seed=0)
    clips = parallel.global_batch(mesh, synthetic_clips(0, 8, args.frames, args.size, args.size))
    print(f"8 fake CPU devices on {os.cpu_count()} cores; {args.mode}, 8 clips x {args.frames} frames at "
          f"{args.size}x{args.size}, float32, Laplacian loss")
    print(f"{'formulation':18s} {'all-reduce':>10s} {'all-gather':>10s} {'all-to-all':>10s} {'permute':>8s} "
          f"{'MiB moved':>9s} {'compile s':>9s} {'step ms':>8s}")
    for formulation in ("jit", "jit+constraints", "shard_map"):
        undo = constrain_model(mesh) if formulation == "jit+constraints" else (lambda: None)
        try:
            state = jax.tree.map(jnp.copy, state0)
            jitted, state = build(formulation, args.mode, mesh, state)
            import time

            t0 = time.perf_counter()
            compiled = jitted.lower(state, clips).compile()
            compile_s = time.perf_counter() - t0
            s = hlo.summary(hlo.collectives(compiled.as_text()))
            holder = {"state": state}

            def run():
                holder["state"], metrics = compiled(holder["state"], clips)
                jax.block_until_ready(metrics)

            ms = median_ms(run, repeats=args.repeats)
        finally:
            undo()
        moved = sum(v["bytes"] for v in s.values()) / 2**20
        print(f"{formulation:18s} {s['all-reduce']['ops']:>10d} {s['all-gather']['ops']:>10d} "
              f"{s['all-to-all']['ops']:>10d} {s['collective-permute']['ops']:>8d} {moved:>9.1f} "
              f"{compile_s:>9.1f} {ms:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
