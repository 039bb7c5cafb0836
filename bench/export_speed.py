"""The exported artifacts against each other and the official architecture's torch.onnx export:
same weights, frames and routing, CPU.

    python bench/export_speed.py [--sizes 448x256,1024x512] [--batches 1,8] [--routings threshold,all]
                                 [--rows onnx,official,predictor,stablehlo] [--rounds 7] [--threads 2]

Rows (`--rows`, any of):
- `onnx`: `export.export_onnx` (what `python -m dmvfn_jax.deploy.export --format onnx` writes: the warp
  from elementwise ops and GatherElements), in onnxruntime on the CPU with `--threads` intra-op threads;
- `onnx-grid_sample`: the same graph with each warp one GridSample (`warp="grid_sample"`);
- `official`: the official architecture (`dmvfn_jax/parity/torch_dmvfn.py`, written from the
  reference) carrying the same weights, exported by `torch.onnx.export` (TorchScript exporter,
  opset 17, dynamic batch), as a user of the official code would deploy it; the same runtime and
  threads. Its threshold routing is traced: the official inference code decides which blocks run
  in Python, so the export keeps the blocks the first call's frames chose (these frames: the
  same blocks as ours) and recomputes only the per-sample gates;
- `predictor`: `Predictor.predict` (JAX, RGB frames: it flips them inside its program);
- `stablehlo`: `export.export_predictor` serialized, deserialized and called through `jax.jit`.

Per case (size, batch, routing) every row is timed end to end, numpy float32 frames in, numpy
prediction out, after a first call (printed), in interleaved rounds so that a slow patch of this
noisy machine hits every row alike: median (minimum) ms per call. The outputs are compared with
the first row's. Then the node counts of the ONNX graphs by operator type (with the nodes
inside `If` branches). `--profile N`: each ONNX row also run N times under onnxruntime's profiler,
its kernel time per call summed by operator type (the largest first).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from dmvfn_jax.deploy import export
from dmvfn_jax.image_io import parse_size
from dmvfn_jax.deploy.onnx_graph import node_counts
from dmvfn_jax.predict.predictor import Predictor
from timing import interleaved_times  # bench/timing.py
from workloads import random_dmvfn  # bench/workloads.py

ROWS = ("onnx", "official", "onnx-grid_sample", "predictor", "stablehlo")
SEED = 0


def official_onnx(height: int, width: int, routing: str, prev, cur):
    """torch.onnx's export of the official architecture with `random_dmvfn(SEED)`'s weights;
    prev, cur: NCHW torch frames the trace runs on."""
    import io
    import warnings

    import torch

    from dmvfn_jax.convert.dmvfn_torch import random_official_state
    from dmvfn_jax.parity.torch_dmvfn import TorchDMVFN

    net = TorchDMVFN().eval()
    net.load_state_dict({k.removeprefix("module."): torch.from_numpy(np.asarray(v)) for k, v in
                         random_official_state(SEED).items()})

    class NextFrame(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, a, b):
            if routing == "all":
                gates = torch.ones(a.shape[0], 9)
            else:
                gates = (self.net.routing_probs(a, b) >= 0.5).float()
            return self.net.forward_infer(a, b, gates)

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's warnings about the Python branches
        torch.onnx.export(NextFrame(), (prev, cur), buf, opset_version=17, dynamo=False,
                          input_names=["prev", "cur"], output_names=["next"],
                          dynamic_axes={n: {0: "b"} for n in ("prev", "cur", "next")})
    import onnx

    return onnx.load_from_string(buf.getvalue())


def session(proto, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def profile(proto, feed, threads: int, runs: int) -> tuple[float, list[tuple[str, float]]]:
    """(ms per call, [(operator type, ms per call)] largest first) of onnxruntime's kernel times."""
    import json
    import tempfile

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    # the first call's allocations are not what a deployment repeats: its kernels are left out
    first = min((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"), key=lambda e: e["ts"])
    by_op = collections.Counter()
    for event in events:
        if (event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
                and event["ts"] >= first["ts"] + first["dur"]):
            by_op[event["args"]["op_name"]] += event["dur"] / 1e3 / runs
    return sum(by_op.values()), by_op.most_common()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="448x256,1024x512", help="WIDTHxHEIGHT,... (default %(default)s)")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--routings", default="threshold,all")
    p.add_argument("--rows", default="onnx,official,onnx-grid_sample", help=f"of {','.join(ROWS)} (default %(default)s)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile each ONNX row over N calls: kernel ms per operator type")
    args = p.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    if not rows or any(r not in ROWS for r in rows):
        p.error(f"--rows: a comma-separated list of {', '.join(ROWS)}")
    print(f"backend {jax.default_backend()}, onnxruntime {args.threads} threads, rows {', '.join(rows)}", flush=True)
    model = random_dmvfn(SEED)
    predictor = Predictor(model, "BGR")
    results, counts = [], {}
    for size in args.sizes.split(","):
        width, height = parse_size(size)
        for routing in args.routings.split(","):
            graphs = {}
            for batch in (int(b) for b in args.batches.split(",")):
                rng = np.random.default_rng(0)
                # frames in the model's (BGR) order; smooth, so that the routing sees an image
                base = rng.random((batch, height // 16, width // 16, 3), dtype=np.float32).repeat(16, 1).repeat(16, 2)
                prev = np.ascontiguousarray(base)
                cur = np.ascontiguousarray(np.roll(base, 3, axis=2))
                runners, feeds = {}, {}
                for row in rows:
                    t = time.perf_counter()
                    if row.startswith("onnx"):
                        warp = "grid_sample" if row == "onnx-grid_sample" else "gather"
                        if row not in graphs:  # one graph for every batch: its batch is dynamic
                            graphs[row] = export.export_onnx(model, height, width, routing, warp)
                        sess = session(graphs[row], args.threads)
                        feeds[row] = {"prev": prev, "cur": cur}
                        runners[row] = lambda s=sess: s.run(None, {"prev": prev, "cur": cur})[0]
                    elif row == "official":
                        import torch

                        nchw = [torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))) for x in (prev, cur)]
                        proto_official = official_onnx(height, width, routing, *nchw)
                        graphs.setdefault(row, proto_official)
                        sess = session(proto_official, args.threads)
                        feed = feeds[row] = {"prev": nchw[0].numpy(), "cur": nchw[1].numpy()}
                        runners[row] = lambda s=sess, f=feed: s.run(None, f)[0].transpose(0, 2, 3, 1)
                    elif row == "predictor":
                        rgb = [np.ascontiguousarray(x[..., ::-1]) for x in (prev, cur)]
                        runners[row] = lambda r=rgb: predictor.predict(*r, routing=routing)[..., ::-1]
                    else:
                        call = jax.jit(jax.export.deserialize(bytes(export.export_predictor(
                            model, height, width, routing, ("cpu",)).serialize())).call)
                        runners[row] = lambda c=call: np.asarray(c(prev, cur))
                    print(f"{size} b{batch} {routing}: {row} made in {time.perf_counter() - t:.1f}s", flush=True)
                outs = {}
                for row, thunk in runners.items():
                    t = time.perf_counter()
                    outs[row] = np.asarray(thunk())
                    print(f"  {row} first call {time.perf_counter() - t:.1f}s", flush=True)
                diffs = {row: float(np.abs(outs[row] - outs[rows[0]]).max()) for row in rows[1:]}
                for row, feed in feeds.items() if args.profile else ():
                    proto = graphs[row] if row != "official" else proto_official
                    total, ops = profile(proto, feed, args.threads, args.profile)
                    print(f"  {row} profile: {total:.0f} ms of kernels per call; " +
                          ", ".join(f"{op} {ms:.1f}" for op, ms in ops[:12]), flush=True)
                times = interleaved_times(runners, args.rounds)
                med = {r: 1e3 * statistics.median(times[r]) for r in rows}
                low = {r: 1e3 * min(times[r]) for r in rows}
                results.append((size, batch, routing, med, low, diffs))
            counts[(size, routing)] = {row: node_counts(g) for row, g in graphs.items()}

    print("\n| size | batch | routing | " + " | ".join(f"{r} ms" for r in rows) + " | " +
          " | ".join(f"{rows[0]} speed / {r}" for r in rows[1:]) + " | max diff from " + rows[0] + " |")
    print("| --- " * (3 + 2 * len(rows)) + "|")
    for size, batch, routing, med, low, diffs in results:
        print(f"| {size} | {batch} | {routing} | " + " | ".join(f"{med[r]:.0f} ({low[r]:.0f})" for r in rows) + " | " +
              " | ".join(f"{med[r] / med[rows[0]]:.2f}" for r in rows[1:]) + " | " +
              ", ".join(f"{r} {d:.1e}" for r, d in diffs.items()) + " |")
    for (size, routing), by_row in counts.items():
        if not by_row:
            continue
        types = collections.Counter()
        for c in by_row.values():
            types.update(c)
        print(f"\nnodes, {size}, {routing}: " + "; ".join(f"{row} {sum(c.values())}" for row, c in by_row.items()))
        print("| op | " + " | ".join(by_row) + " |\n|" + " --- |" * (1 + len(by_row)))
        for op, _ in types.most_common():
            print(f"| {op} | " + " | ".join(str(c.get(op, 0)) for c in by_row.values()) + " |")


if __name__ == "__main__":
    main()
