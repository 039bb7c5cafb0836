"""Batched against sequential (one sample after another, `lax.map`) execution of the network on the
local device, inference and the training gradient, in one run.

    python bench/decisions/batch_mode.py [--batch 8]

Inference: `DMVFN.infer(..., sequential=False|True)` at 256x448 with all blocks. Training: the
gradient of the Laplacian training loss through `train_outputs` at 256x256, batched, or mapped
over the samples (what a sequential training mode would do). Random weights and frames.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for timing.py (BENCHMARKS.md, "Running")

import argparse
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dmvfn_jax import losses
from dmvfn_jax.models import DMVFN
from timing import median_ms  # bench/timing.py


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    b = args.batch
    graphdef, params = nnx.split(DMVFN(rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    print(f"device {jax.devices()[0].device_kind}; batch {b}; median ms of 3")
    a, c = (jnp.asarray(rng.random((b, 256, 448, 3), dtype=np.float32)) for _ in range(2))
    for seq in (False, True):
        f = jax.jit(lambda p, a, c, seq=seq: nnx.merge(graphdef, p).infer(a, c, None, sequential=seq).prediction)
        print(f"inference 256x448 all blocks, {'sequential' if seq else 'batched   '}: {median_ms(f, params, a, c, repeats=3):9.1f} ms",
              flush=True)
    a, c, gt = (jnp.asarray(rng.random((b, 256, 256, 3), dtype=np.float32)) for _ in range(3))
    gates = jnp.ones((b, 9))

    def outputs(p, seq):
        model = nnx.merge(graphdef, p)
        if not seq:
            return model.train_outputs(a, c, gates)
        per = jax.lax.map(lambda t: [o[0] for o in model.train_outputs(t[0][None], t[1][None], t[2][None])], (a, c, gates))
        return list(per)

    for seq in (False, True):
        loss = lambda p, seq=seq: losses.dmvfn_loss(outputs(p, seq), gt, None)[0]  # noqa: E731
        print(f"training gradient 256x256, {'sequential' if seq else 'batched   '}: "
              f"{median_ms(jax.jit(jax.grad(loss)), params, repeats=3):9.1f} ms", flush=True)


if __name__ == "__main__":
    main()
