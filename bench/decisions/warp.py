"""The two backward warps side by side: forward and gradient time on the local JAX device.

    python bench/decisions/warp.py [--repeats 10]

`ops.warp_map_coordinates` (jax.scipy map_coordinates per channel) against `ops.warp_gather`
(four whole-pixel gathers), 3-channel images as the model warps them, flows of a few pixels.
Prints median milliseconds per call after one warm-up; the faster is `ops.WARP_IMPL`'s default
(BENCHMARKS.md records the figures).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for timing.py (BENCHMARKS.md, "Running")

import argparse
import jax
import jax.numpy as jnp
import numpy as np

from dmvfn_jax.models import ops
from timing import median_ms  # bench/timing.py


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"device {jax.devices()[0].device_kind}; median ms of {args.repeats}")
    print(f"{'batch x H x W':16s} {'fwd map_coords':>14s} {'fwd gather':>11s} {'grad map_coords':>15s} {'grad gather':>12s}")
    for b, h, w in [(1, 256, 448), (8, 256, 448), (1, 512, 1024), (8, 256, 256)]:
        img = jnp.asarray(rng.random((b, h, w, 3), dtype=np.float32))
        flow = jnp.asarray(rng.normal(0, 8, (b, h, w, 2)).astype(np.float32))
        row = []
        for warp in (ops.warp_map_coordinates, ops.warp_gather):
            row.append(median_ms(jax.jit(warp), img, flow, repeats=args.repeats))
        for warp in (ops.warp_map_coordinates, ops.warp_gather):
            g = jax.jit(jax.grad(lambda f, warp=warp: warp(img, f).sum()))
            row.append(median_ms(g, flow, repeats=args.repeats))
        print(f"{b}x{h}x{w:<10d} {row[0]:14.2f} {row[1]:11.2f} {row[2]:15.2f} {row[3]:12.2f}", flush=True)


if __name__ == "__main__":
    main()
