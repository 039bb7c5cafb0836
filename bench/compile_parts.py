"""Which parts of the training step the compile time goes to, for a model of the given blocks:
the forward training outputs, the Laplacian loss's gradient alone (on outputs given as inputs),
the gradient of loss-of-outputs, and the whole step (AdamW, routing, metrics). Cache off, one
fresh process per column; each part is lowered and compiled on its own. Beside the package, a
second column with the pyramid's resamplings as they were before attempt 17 of BENCHMARKS.md
(five shifted adds per axis, the upsample's phases stacked; `--package-only` leaves it out).

    python bench/compile_parts.py [--widths 16 --scales 1] [--size 64] [--batch 4] [--package-only]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: workloads.py

import argparse  # noqa: E402
import json  # noqa: E402

from workloads import run_fresh  # noqa: E402

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/bench")
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from dmvfn_jax import losses
from dmvfn_jax.losses import dmvfn_loss
from dmvfn_jax.models import DMVFN
from workloads import train_step
widths, scales = json.loads(sys.argv[2]); size, batch = int(sys.argv[3]), int(sys.argv[4])
if sys.argv[5] == "shifted adds":  # before attempt 17: no axis as a matrix
    losses.MATRIX_MAX = 0
model = DMVFN(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), widths=tuple(widths), scales=tuple(scales))
graphdef, params = nnx.split(model)
x = jnp.asarray(np.random.default_rng(0).random((batch, 3, size, size, 3), dtype=np.float32))
gates = jnp.ones((batch, len(widths)))
fwd = lambda p, x: nnx.merge(graphdef, p).train_outputs(x[:, 0], x[:, 1], gates)
outs = [jnp.zeros(o.shape) for o in jax.eval_shape(fwd, params, x)]
parts = {
    "forward (train_outputs)": (fwd, params, x),
    "loss gradient alone": (jax.grad(lambda o, x: dmvfn_loss(o, x[:, 2])[0]), outs, x),
    "gradient of loss(outputs)": (jax.grad(lambda p, x: dmvfn_loss(fwd(p, x), x[:, 2])[0]), params, x),
}
res = {}
for name, (f, *args) in parts.items():
    t = time.perf_counter()
    jax.jit(f).lower(*args).compile()
    res[name] = time.perf_counter() - t
jitted, state, clips = train_step(model, batch, size)
t = time.perf_counter()
jitted.lower(state, clips).compile()
res["whole training step"] = time.perf_counter() - t
print(json.dumps(res))
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[16])
    p.add_argument("--scales", type=int, nargs="+", default=[1])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--package-only", action="store_true", help="no column for the pyramid before attempt 17")
    args = p.parse_args(argv)
    forms = ("package",) if args.package_only else ("package", "shifted adds")
    cols = [run_fresh(CHILD, json.dumps([args.widths, args.scales]), args.size, args.batch, form) for form in forms]
    print(f"blocks {args.widths} at scales {args.scales}, {args.size}x{args.size}, batch {args.batch}; cache off; "
          "lower + compile s")
    print("| part | " + " | ".join(f"pyramid: {form}" for form in forms) + " |")
    print("| --- |" + " --- |" * len(forms))
    for name in cols[0]:
        print(f"| {name} | " + " | ".join(f"{col[name]:.1f}" for col in cols) + " |")


if __name__ == "__main__":
    main()
