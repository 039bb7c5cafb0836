"""How the compile time of the training step and of a prediction depends on the model's size.

    python bench/compile_model_size.py [--size 64x64] [--batch 4] [--models official,three,...]

The test suite is mostly compiling, and most of its compiles are of the full nine-block model,
also in the tests whose point is not the model (sharding, collectives, several processes). This
sweeps the two dimensions a smaller model could cut, the number of blocks and their widths, and
times, in a fresh process per model with the compilation cache off, the demo config's training
step (`per_batch`, lower + compile, then the median of 3 steps) and the all-blocks prediction
(lower + compile). Widths are the blocks' `nf`, scales their downsampling (README, Model).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: workloads.py, timing.py

import argparse
import json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dmvfn_jax.models.dmvfn import SCALES, WIDTHS  # noqa: E402
from workloads import run_fresh  # noqa: E402

# name: (widths, scales)
MODELS = {
    "official": (WIDTHS, SCALES),
    "nine_narrow": ((16,) * 9, (4, 4, 4, 2, 2, 2, 1, 1, 1)),
    "three": ((160, 80, 44), (4, 2, 1)),
    "three_narrow": ((16, 16, 16), (4, 2, 1)),
    "two_narrow": ((16, 16), (2, 1)),
    "one_narrow": ((16,), (1,)),
}

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/bench")
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from workloads import compile_and_time_step, train_step
from dmvfn_jax.models import DMVFN

widths, scales = json.loads(sys.argv[2])
size, batch = int(sys.argv[3]), int(sys.argv[4])
model = DMVFN(rngs=nnx.Rngs(0), widths=tuple(widths), scales=tuple(scales))
jitted, state, clips = train_step(model, batch, size)
train_compile_s, step_ms, _ = compile_and_time_step(jitted, state, clips, repeats=3)
frames = jnp.asarray(np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32))
gates = jnp.ones((1, len(widths)), jnp.float32)
graphdef, params = nnx.split(model)
predict = jax.jit(lambda p, a, b, g: nnx.merge(graphdef, p).infer(a, b, g).prediction)
t = time.perf_counter()
predict.lower(params, frames, frames, gates).compile()
infer_compile_s = time.perf_counter() - t
n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
print(json.dumps({"params": n_params, "train_compile_s": train_compile_s, "step_ms": step_ms,
                  "infer_compile_s": infer_compile_s}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64, help="square frame side (default 64, the demo's)")
    p.add_argument("--batch", type=int, default=4, help="clips per training step (default 4, the demo's)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    args = p.parse_args(argv)
    print(f"training step (per_batch) at {args.size}x{args.size} batch {args.batch}, prediction at batch 1; "
          "cache off, a fresh process per model")
    print(f"{'model':14s} {'blocks':>6s} {'params':>9s} {'train compile s':>15s} {'step ms':>8s} {'predict compile s':>17s}")
    for name in args.models.split(","):
        widths, scales = MODELS[name]
        m = run_fresh(CHILD, json.dumps([widths, scales]), args.size, args.batch)
        print(f"{name:14s} {len(widths):6d} {m['params']:9d} {m['train_compile_s']:15.1f} {m['step_ms']:8.1f} "
              f"{m['infer_compile_s']:17.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
