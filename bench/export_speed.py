"""The exported StableHLO and ONNX artifacts against `Predictor`: same weights, frames, routing and device.

    python bench/export_speed.py [--size 448x256] [--batch 1] [--routings threshold,all] [--rounds 7]
                                 [--onnx grid_sample,gather] [--threads 2]

Per routing: `dmvfn_jax.export.export_predictor` (what `python -m dmvfn_jax.export` writes),
serialized and deserialized in memory, called through `jax.jit(exported.call)`, against
`Predictor.predict` on the same random official-format weights, marked BGR: the Predictor
takes RGB frames and flips them inside its program, the artifact takes the BGR frames. Both are timed end to end, numpy
float32 frames in, numpy prediction out, after a first call that compiles (its time is printed
too), in interleaved rounds so that a slow patch of this noisy machine hits both alike; median
(minimum) ms per call. The outputs are compared as well.

With `--onnx` (default both forms of the warp; `--onnx ''` for none), `export_onnx` of the same
model, run in onnxruntime on the CPU with `--threads` intra-op threads (2: what JAX uses on this
2-core machine), BGR frames in, timed in the same interleaved rounds; `onnx-grid_sample` has each
warp as one GridSample (what the command writes), `onnx-gather` the warp as JAX traces it.
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
from timing import interleaved_times  # bench/timing.py
from workloads import random_dmvfn  # bench/workloads.py


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="448x256", help="WIDTHxHEIGHT (default %(default)s)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--routings", default="threshold,all")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--precision", default="highest", choices=export.PRECISIONS, help="of the artifact")
    p.add_argument("--onnx", default="grid_sample,gather", help="ONNX warp forms to time ('' for none)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = p.parse_args()
    onnx_warps = [w for w in args.onnx.split(",") if w]
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

        runners = [("artifact", run_artifact), ("Predictor", run_predictor)]
        for warp in onnx_warps:
            import onnxruntime as ort

            t = time.perf_counter()
            proto = export.export_onnx(model, height, width, routing, warp=warp)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            opts.log_severity_level = 3
            sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            print(f"{routing}: ONNX ({warp}) exported and loaded in {time.perf_counter() - t:.1f}s")

            def run_onnx(sess=sess):
                return sess.run(None, {"prev": prev_bgr, "cur": cur_bgr})[0][..., ::-1]

            runners.append((f"onnx-{warp}", run_onnx))
        outs = {}
        for name, thunk in runners:
            t = time.perf_counter()
            outs[name] = thunk()
            print(f"{routing}: {name} first call (compiles) {time.perf_counter() - t:.1f}s", flush=True)
            cases[(routing, name)] = thunk
        for name in outs:
            if name != "Predictor":
                diff = float(np.abs(outs[name] - outs["Predictor"]).max())
                print(f"{routing}: max |{name} - Predictor| = {diff:.2e}")

    times = interleaved_times(cases, args.rounds)
    names = ["Predictor", "artifact"] + [f"onnx-{w}" for w in onnx_warps]
    print("\n| routing | " + " | ".join(f"{n} ms" for n in names) + " | " +
          " | ".join(f"{n} / Predictor" for n in names[1:]) + " |")
    print("|" + " --- |" * (2 * len(names)))
    for routing in routings:
        med = {n: 1e3 * statistics.median(times[(routing, n)]) for n in names}
        low = {n: 1e3 * min(times[(routing, n)]) for n in names}
        print(f"| {routing} | " + " | ".join(f"{med[n]:.0f} ({low[n]:.0f})" for n in names) + " | " +
              " | ".join(f"{med[n] / med['Predictor']:.2f}" for n in names[1:]) + " |")


if __name__ == "__main__":
    main()
