"""The nine blocks as three `lax.scan`s over stacked parameters, against the unrolled loop.

    python bench/decisions/block_scan.py [--size 64x64] [--batch 4]

The blocks come in three runs of three alike (widths 160/80/44 at scales 4/2/1). Under
`lax.scan` each run's body would be traced and compiled once instead of three times, which
could cut the compile time of every model program, the test suite's main cost. This times, in a
fresh process per variant with the compilation cache off, the demo config's training step
(`per_batch`, lower + compile, then the median of 5 steps) and an all-blocks prediction, and
prints the largest difference between the variants' nine training outputs on the same input.
The parameters keep their layout (the stacking happens inside the program), so checkpoints
are unaffected; only the loop differs. BENCHMARKS.md, attempts.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: timing.py, workloads.py

import argparse
import json
import tempfile

from workloads import run_fresh  # noqa: E402

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/bench")
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from timing import median_ms
from workloads import compile_and_time_step
from dmvfn_jax import parallel
from dmvfn_jax.data.synthetic import synthetic_clips
from dmvfn_jax.models.dmvfn import DMVFN, merge
from dmvfn_jax.train import optim, step as step_lib

variant, size, batch, out_file = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
H, W = map(int, size.split("x"))


def runs(model):
    # [(start, stop)] of consecutive blocks of one width and scale
    key = lambda i: (model.scales[i], model.blocks[i].conv0[1].conv.out_features)
    out, start = [], 0
    for i in range(1, model.num_blocks + 1):
        if i == model.num_blocks or key(i) != key(start):
            out.append((start, i))
            start = i
    return out


def scanned(model, p0, p1, gates, with_outputs):
    # the blocks of each run under one lax.scan; gates (B, n); returns (state, ungated updates)
    state = model._initial_state(p0, p1)
    ungated = []
    for a, b in runs(model):
        graphdef = nnx.graphdef(model.blocks[a])
        stacked = jax.tree.map(lambda *x: jnp.stack(x), *[nnx.state(model.blocks[i]) for i in range(a, b)])
        scale = model.scales[a]

        def body(s, xs):
            params, g = xs
            block = nnx.merge(graphdef, params)
            x13 = jnp.concatenate([p0, p1, s.warped0, s.warped1, s.mask], axis=-1)
            flow_d, mask_d = block(x13, s.flow, scale)
            ys = (s.flow + flow_d, s.mask + mask_d) if with_outputs else None
            return model._advance(p0, p1, s, flow_d, mask_d, g.reshape(-1, 1, 1, 1)), ys

        state, ys = jax.lax.scan(body, state, (stacked, jnp.moveaxis(gates[:, a:b], 1, 0)))
        if with_outputs:
            ungated += [(ys[0][k], ys[1][k]) for k in range(b - a)]
    return state, ungated


if variant == "scan":
    def train_blocks(self, p0, p1, gates):
        state, ungated = scanned(self, p0, p1, gates, True)
        return [merge(p0, p1, f, m) for f, m in ungated[:-1]] + [merge(p0, p1, state.flow, state.mask)]

    def run_blocks(self, p0, p1, gates, static_all):
        assert static_all  # all blocks: the case timed here
        return scanned(self, p0, p1, gates, False)[0]

    DMVFN._train_blocks, DMVFN._run_blocks = train_blocks, run_blocks

out = {"variant": variant}
model = DMVFN(rngs=nnx.Rngs(0))
x = jnp.asarray(synthetic_clips(1, batch, 2, H, W).astype(np.float32) / 255)
gates = jnp.asarray(np.random.default_rng(0).integers(0, 2, (batch, 9)), jnp.float32)
with jax.default_matmul_precision("highest"):
    outs = jax.jit(lambda a, b: model.train_outputs(a, b, gates))(x[:, 0], x[:, 1])
np.save(out_file, np.stack([np.asarray(o) for o in outs]))
f = jax.jit(lambda a, b: model.infer(a, b, sequential=False).prediction)
t = time.perf_counter()
infer = f.lower(x[:1, 0], x[:1, 1]).compile()
out["infer_compile_s"] = time.perf_counter() - t
out["infer_ms"] = median_ms(infer, x[:1, 0], x[:1, 1])
opt = optim.make_train_optimizer(1e-4)
graphdef, state = step_lib.init_state(model, opt, 0)
fn = step_lib.make_train_step(graphdef, opt, update_mode="per_batch")
mesh = parallel.data_mesh(jax.devices()[:1])
jitted, state = step_lib.shard_train_step(fn, mesh, state)
clips = parallel.global_batch(mesh, synthetic_clips(0, batch, 3, H, W))
out["train_compile_s"], out["train_step_ms"], _ = compile_and_time_step(jitted, state, clips, jnp.float32(1e-3))
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64x64", help="HxW of the training clips and the prediction")
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("unrolled", "scan"):
            results[variant] = run_fresh(CHILD, variant, args.size, args.batch, f"{tmp}/{variant}.npy")
            print(json.dumps(results[variant]), flush=True)
        import numpy as np

        diff = float(np.abs(np.load(f"{tmp}/unrolled.npy") - np.load(f"{tmp}/scan.npy")).max())
    print(f"\nsize {args.size}, batch {args.batch}, cache off, one fresh process per variant")
    print("| variant | training step compile s | step ms | all-blocks prediction compile s | prediction ms |")
    print("| --- | --- | --- | --- | --- |")
    for v, r in results.items():
        print(f"| {v} | {r['train_compile_s']:.1f} | {r['train_step_ms']:.0f} | {r['infer_compile_s']:.1f} | {r['infer_ms']:.1f} |")
    print(f"largest difference between the variants' nine training outputs: {diff:.3g}")


if __name__ == "__main__":
    main()
