"""XLA's cost analysis of the same per-device training step compiled for the CPU and for a TPU.

    .venv/bin/python bench/traffic_cpu_tpu.py [--clips 2] [--size 64]

One device's program of the demo step (per_batch, `--clips` clips of 3 frames, float32,
Laplacian loss): on this machine's CPU (one device, `--clips` clips) and on a v5e:2x2 slice
(compile-only libtpu devices, 4 x `--clips` clips, so each chip gets `--clips`). Prints the
FLOPs and the HBM/memory bytes each compiler estimates; BENCHMARKS.md ("TPU plan") uses it to
say how far the TPU traffic estimate, which sets the plan's roofline bound, departs from the
CPU's for identical work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")

import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from configs import demo  # noqa: E402
from dmvfn_jax import parallel, plan, tpu  # noqa: E402


def cost(compiled) -> tuple[float, float]:
    c = plan._cost(compiled)
    return float(c["flops"]), float(c["bytes accessed"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args(argv)
    config = demo.get_config()
    config.data.height = config.data.width = args.size
    rows = []
    config.batch_size = args.clips
    compiled = plan.compile_train_step(config, parallel.data_mesh(jax.devices()[:1])).compiled
    rows.append(("CPU, 1 device", *cost(compiled)))
    topo = tpu.parse_topology("v5e:2x2")
    config.batch_size = args.clips * topo.chips
    compiled = plan.compile_train_step(config, Mesh(np.asarray(tpu.compile_only_devices(topo)), ("data",))).compiled
    rows.append(("TPU v5e, per chip", *cost(compiled)))
    print(f"per-device program: {args.clips} clip(s) x 3 frames at {args.size}x{args.size}, per_batch, float32")
    print(f"{'target':20s} {'GFLOP':>8s} {'GB accessed':>12s}")
    for name, flops, nbytes in rows:
        print(f"{name:20s} {flops / 1e9:8.2f} {nbytes / 1e9:12.2f}")
    print(f"TPU / CPU bytes: {rows[1][2] / rows[0][2]:.1f}x; FLOPs: {rows[1][1] / rows[0][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
