"""The exported StableHLO artifact against `Predictor`: same weights, frames, routing and device.

    python bench/export_speed.py [--size 448x256] [--batch 1] [--routings threshold,all] [--rounds 7]

Per routing: `dmvfn_jax.export.export_predictor` (what `python -m dmvfn_jax.export` writes),
serialized and deserialized in memory, called through `jax.jit(exported.call)`, against
`Predictor.predict` on the same random official-format weights, marked BGR: the Predictor
takes RGB frames and flips them inside its program, the artifact takes the BGR frames. Both are timed end to end, numpy
float32 frames in, numpy prediction out, after a first call that compiles (its time is printed
too), in interleaved rounds so that a slow patch of this noisy machine hits both alike; median
(minimum) ms per call. The outputs are compared as well.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from dmvfn_jax import export
from dmvfn_jax.image_io import parse_size
from dmvfn_jax.predictor import Predictor
from workloads import interleaved_times, random_dmvfn  # bench/workloads.py


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="448x256", help="WIDTHxHEIGHT (default %(default)s)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--routings", default="threshold,all")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--precision", default="highest", choices=export.PRECISIONS, help="of the artifact")
    args = p.parse_args()
    width, height = parse_size(args.size)
    routings = args.routings.split(",")
    print(f"backend {jax.default_backend()}, {height}x{width} (HxW), batch {args.batch}, artifact precision "
          f"{args.precision}, Predictor at JAX's default precision", flush=True)

    model = random_dmvfn(0)
    predictor = Predictor(model, "BGR")
    rng = np.random.default_rng(0)
    prev, cur = rng.random((2, args.batch, height, width, 3), dtype=np.float32)
    prev_bgr, cur_bgr = np.ascontiguousarray(prev[..., ::-1]), np.ascontiguousarray(cur[..., ::-1])

    cases = {}
    for routing in routings:
        t = time.perf_counter()
        blob = bytes(export.export_predictor(model, height, width, routing, ("cpu",), args.precision).serialize())
        exported = jax.export.deserialize(blob)
        call = jax.jit(exported.call)
        print(f"{routing}: exported and deserialized in {time.perf_counter() - t:.1f}s ({len(blob) / 1e6:.1f} MB)")

        def run_artifact(call=call):
            return np.asarray(call(prev_bgr, cur_bgr))[..., ::-1]

        def run_predictor(routing=routing):
            return predictor.predict(prev, cur, routing=routing)

        outs = {}
        for name, thunk in (("artifact", run_artifact), ("Predictor", run_predictor)):
            t = time.perf_counter()
            outs[name] = thunk()
            print(f"{routing}: {name} first call (compiles) {time.perf_counter() - t:.1f}s", flush=True)
            cases[(routing, name)] = thunk
        diff = float(np.abs(outs["artifact"] - outs["Predictor"]).max())
        print(f"{routing}: max |artifact - Predictor| = {diff:.2e}")

    times = interleaved_times(cases, args.rounds)
    print("\n| routing | Predictor ms | artifact ms | artifact / Predictor |")
    print("| --- | --- | --- | --- |")
    for routing in routings:
        med = {n: 1e3 * statistics.median(times[(routing, n)]) for n in ("Predictor", "artifact")}
        low = {n: 1e3 * min(times[(routing, n)]) for n in ("Predictor", "artifact")}
        print(f"| {routing} | {med['Predictor']:.0f} ({low['Predictor']:.0f}) | {med['artifact']:.0f} "
              f"({low['artifact']:.0f}) | {med['artifact'] / med['Predictor']:.2f} |")


if __name__ == "__main__":
    main()
