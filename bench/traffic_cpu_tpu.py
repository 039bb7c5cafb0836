"""XLA's cost analysis of the same per-device programs compiled for the CPU and for a TPU chip.

    .venv/bin/python bench/traffic_cpu_tpu.py                       # the demo step (2 clips at 64x64)
    .venv/bin/python bench/traffic_cpu_tpu.py --cases warp warp_grad forward train demo
    .venv/bin/python bench/traffic_cpu_tpu.py --optimizer adamw sgd   # what the update costs
    .venv/bin/python bench/traffic_cpu_tpu.py --cases demo optimizer --sources 8  # where the cycles go
    .venv/bin/python bench/traffic_cpu_tpu.py --optimizer adamw sgd --cpu-time 20  # and the CPU's time

Each case is one device's program, compiled on this machine's CPU and for one chip of a v5e:2x2
slice (libtpu's compile-only devices; nothing runs), and printed with the FLOPs and the bytes
accessed each compiler estimates (`compiled.cost_analysis()`), their ratio, and the bytes of
the buffers the TPU program writes to HBM as written and as tiled (`dmvfn_jax.planning.hlo.buffers`):

- `demo`: the demo config's training step, `--clips` clips of 3 frames at `--size` (per_batch,
  Laplacian loss, float32; on the TPU 4 x `--clips` clips over the 4 chips, so each gets `--clips`);
- `train`: one update of the official nine (the Cityscapes config, Laplacian loss, no VGG)
  on 2 clips x 3 frames at `--big` (256) per chip, per_batch;
- `forward`: the nine's inference forward (`infer`, every block on) on 2 frame pairs at `--big`;
- `warp`, `warp_grad`: `ops.warp` alone on 2 frames at `--big` (3 channels), and its gradient
  with respect to image and flow;
- `optimizer`: the optimiser's part of an update alone (`step.apply_update`: the gradient norm, AdamW,
  the non-finite skip) on the nine's parameters packed into one vector, as training keeps them,
  whatever the frames.

Each row also prints the TPU compiler's estimate of the program's cycles (the sum of its
instructions' `estimated_cycles`); `--sources N` lists each TPU program's N sources with the most.

`--optimizer` swaps the steps' AdamW (`adamw`, training's) for `sgd`, a step with no moments (the
parameters minus the learning rate times the gradient), to see what the optimiser's update costs.

These are the figures of BENCHMARKS.md, "Where the TPU's bytes go". Every figure is the
compiler's estimate (`plan.compiled_cost`), not a measurement: no TPU was used. On the TPU the
warp is the form `ops.warp_impl_for` chooses there (the Pallas kernel of `dmvfn_jax.models.tpu_warp`),
whose own cost is what the kernel declares (its `pl.CostEstimate`), not the compiler's estimate.
XLA's cost analysis counts a while loop's body once; the TPU compiler turns some gathers into
loops, so each row also prints the while loops of the TPU program (`loops`) as a warning sign.
"""

from __future__ import annotations

import argparse
import re
import sys

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from dmvfn_jax import parallel  # noqa: E402
from dmvfn_jax.models import grid, ops  # noqa: E402
from dmvfn_jax.planning import hlo, plan, tpu  # noqa: E402
from dmvfn_jax.models.dmvfn import DMVFN  # noqa: E402
from dmvfn_jax.train import optim  # noqa: E402
from dmvfn_jax.train import step as step_lib  # noqa: E402
from workloads import load_config  # noqa: E402  (bench/workloads.py: configs/*.py)

CASES = ("demo", "train", "forward", "warp", "warp_grad", "optimizer")
OPTIMIZERS = ("adamw", "sgd")
TOPOLOGY = "v5e:2x2"


def _figures(compiled) -> dict:
    c = plan.compiled_cost(compiled)
    text = compiled.as_text()
    found = hlo.buffers(text)
    written, tiled = hlo.padding_totals(found)
    return {"flops": float(c.get("flops", 0.0)), "bytes": float(c.get("bytes accessed", 0.0)),
            "written": written, "tiled": tiled, "loops": len(re.findall(r"\swhile\(", text)),
            "cycles": sum(b.estimated_cycles * b.runs for b in found), "sources": hlo.by_source(found)}


def _optimizer(name: str, weight_decay: float):
    """The optimiser of the step cases: None (training's AdamW) or a stand-in (`--optimizer`)."""
    if name == "adamw":
        return None
    # sgd: no moments; its one state holds the step size, as training's last one does
    return optax.chain(optax.inject_hyperparams(optax.scale)(step_size=0.0))


def _step_case(config, clips: int, size: int, optimizer: str) -> tuple[dict, dict]:
    config.data.height = config.data.width = size
    config.update_mode = "per_batch"
    config.data.num_frames = 3
    config.batch_size = clips
    opt = _optimizer(optimizer, config.weight_decay)
    cpu = plan.compile_train_step(config, parallel.data_mesh(jax.devices()[:1]), optimizer=opt).compiled
    topo = tpu.parse_topology(TOPOLOGY)
    config.batch_size = clips * topo.chips
    devices = tpu.compile_only_devices(topo)
    tpu_step = plan.compile_train_step(config, Mesh(np.asarray(devices), ("data",)), optimizer=opt).compiled
    return _figures(cpu), _figures(tpu_step)


def _one_device(fn, *shapes) -> tuple[dict, dict]:
    """`fn` compiled for the CPU and for one TPU chip, on abstract arguments: float32 arrays of the
    given shapes (tuples) or pytrees of `jax.ShapeDtypeStruct`s."""
    is_shape = lambda s: isinstance(s, tuple) and all(isinstance(d, int) for d in s)  # noqa: E731
    args = [jax.ShapeDtypeStruct(s, jnp.float32) if is_shape(s) else s for s in shapes]
    cpu = jax.jit(lambda *a: fn(*a)).lower(*args).compile()
    replicated = tpu.one_chip(TOPOLOGY)
    with ops.compiling_for("tpu", next(iter(replicated.device_set))):  # the TPU's forms, traced anew
        on_tpu = jax.jit(lambda *a: fn(*a), in_shardings=replicated, out_shardings=replicated).lower(*args).compile()
    return _figures(cpu), _figures(on_tpu)


def run_case(name: str, clips: int, size: int, big: int, optimizer: str = "adamw") -> tuple[str, dict, dict]:
    frames, flow = (2, big, big, 3), (2, big, big, 2)
    by = "" if optimizer == "adamw" else f", {optimizer}"
    if name == "demo":
        return (f"demo step, {clips} clip(s) x 3 frames at {size}x{size}{by}",
                *_step_case(load_config("demo"), clips, size, optimizer))
    if name == "train":
        nine = load_config("cityscapes")
        nine.vgg_checkpoint = ""
        return f"the nine's update, 2 clips x 3 frames at {big}x{big}{by}", *_step_case(nine, 2, big, optimizer)
    if name == "forward":
        graphdef, state = nnx.split(nnx.eval_shape(lambda: DMVFN(rngs=nnx.Rngs(0), conv_form="plain")))

        def forward(params, img0, img1):  # the parameters an argument of the program, like the frames
            return nnx.merge(graphdef, params).infer(img0, img1, None, sequential=False).prediction

        return f"the nine's forward, 2 pairs at {big}x{big}", *_one_device(forward, state, frames, frames)
    if name == "warp":
        return f"ops.warp, 2 frames at {big}x{big}", *_one_device(ops.warp, frames, flow)
    if name == "warp_grad":
        def grad(img, fl):
            return jax.grad(lambda i, f: jnp.sum(ops.warp(i, f) ** 2), argnums=(0, 1))(img, fl)

        return f"ops.warp and its gradient, 2 frames at {big}x{big}", *_one_device(grad, frames, flow)
    if name == "optimizer":
        graphdef, params = nnx.split(nnx.eval_shape(lambda: DMVFN(rngs=nnx.Rngs(0))), nnx.Param)
        params = jax.eval_shape(parallel.pack, params)  # one vector, as training keeps them
        opt = optim.make_train_optimizer(load_config("cityscapes").weight_decay)
        scalar = jax.ShapeDtypeStruct((), jnp.float32)

        def update(p, s, g, loss, lr):
            return step_lib.apply_update(opt, p, s, g, loss, lr)

        return ("the optimiser's update of the nine", *_one_device(update, params, jax.eval_shape(opt.init, params),
                                                                     params, scalar, scalar))
    raise ValueError(f"unknown case {name!r}; cases: {', '.join(CASES)}")


def lifted_sizes() -> list[tuple[int, int, float, float]]:
    """(block, scale, MB of its kernels, biases and slopes over cells (`grid.lift_block`), MB of its
    own parameters) for each of the official nine: what a step over cells makes of its weights."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: DMVFN(rngs=nnx.Rngs(0), conv_form="plain")))
    scales = nnx.merge(graphdef, state).scales  # static: abstract parameters are enough
    mb = lambda tree: sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree)) / 1e6  # noqa: E731
    rows = []
    for i, scale in enumerate(scales):
        block = lambda st, i=i: nnx.merge(graphdef, st).blocks[i]  # noqa: E731
        lifted = jax.eval_shape(lambda st, i=i, scale=scale: grid.lift_block(block(st, i), scale), state)
        own = jax.eval_shape(lambda st, i=i: nnx.state(block(st, i), nnx.Param), state)
        rows.append((i, scale, mb(lifted), mb(own)))
    return rows


def cpu_times(optimizers: list[str], clips: int, size: int, rounds: int) -> None:
    """The demo step (the nine, `clips` clips of 3 frames at `size`) timed on this CPU with each
    optimiser, in interleaved rounds (`bench/timing.py`): the median and the spread per optimiser."""
    import statistics

    from timing import interleaved_times  # bench/timing.py
    from workloads import random_dmvfn, train_thunk

    model = random_dmvfn()
    cases = {name: train_thunk(model, clips, size, _optimizer(name, 1e-3)) for name in optimizers}
    for thunk in cases.values():
        thunk()  # the first call of each, outside the rounds
    times = interleaved_times(cases, rounds)
    print(f"the demo step on this CPU ({clips} clips x 3 frames at {size}x{size}), {rounds} interleaved rounds:")
    for name, ts in times.items():
        print(f"  {name:10s} median {1e3 * statistics.median(ts):8.1f} ms  (min {1e3 * min(ts):.1f}, max {1e3 * max(ts):.1f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["demo"], choices=CASES)
    ap.add_argument("--clips", type=int, default=2, help="the demo step's clips per device")
    ap.add_argument("--size", type=int, default=64, help="the demo step's frame size")
    ap.add_argument("--big", type=int, default=256, help="the frame size of the other cases")
    ap.add_argument("--sources", type=int, default=0, metavar="N",
                    help="also list each TPU program's N sources with the most estimated cycles")
    ap.add_argument("--lifted", action="store_true",
                    help="also print the size of each of the nine's blocks over cells (`grid.lift_block`)")
    ap.add_argument("--optimizer", nargs="+", default=["adamw"], choices=OPTIMIZERS,
                    help="the step cases' optimiser: training's AdamW or a stand-in (each one a row)")
    ap.add_argument("--cpu-time", type=int, default=0, metavar="ROUNDS",
                    help="also time the demo step on this CPU with each --optimizer, in ROUNDS interleaved rounds")
    args = ap.parse_args(argv)
    print(f"cost analysis of one device's program: this CPU against one {TOPOLOGY} chip (compiler estimates; the "
          "warp's Pallas kernel counts what it declares); warp on the TPU: "
          f"{ops.warp_impl_for('tpu', 3, args.big, args.big)} "
          f"at {args.big}x{args.big}, {ops.warp_impl_for('tpu', 3, args.size, args.size)} at {args.size}x{args.size}; "
          f"on the CPU: {ops.warp_impl_for('cpu', 3, args.big, args.big)}")
    print(f"{'case':52s} {'CPU GFLOP':>9s} {'TPU GFLOP':>9s} {'CPU GB':>8s} {'TPU GB':>8s} {'TPU/CPU':>8s} "
          f"{'HBM bufs GB written/tiled':>26s} {'loops':>5s} {'TPU Mcycles':>11s}")
    runs = [(name, opt) for name in args.cases for opt in (args.optimizer if name in ("demo", "train") else ["adamw"])]
    for name, opt in runs:
        what, cpu, on_tpu = run_case(name, args.clips, args.size, args.big, opt)
        ratio = on_tpu["bytes"] / cpu["bytes"] if cpu["bytes"] else float("nan")
        bufs = f"{on_tpu['written'] / 1e9:.3f} / {on_tpu['tiled'] / 1e9:.3f}"
        print(f"{what:52s} {cpu['flops'] / 1e9:9.2f} {on_tpu['flops'] / 1e9:9.2f} {cpu['bytes'] / 1e9:8.3f} "
              f"{on_tpu['bytes'] / 1e9:8.3f} {ratio:7.2f}x {bufs:>26s} {on_tpu['loops']:5d} "
              f"{on_tpu['cycles'] / 1e6:11.2f}", flush=True)
        for r in sorted(on_tpu["sources"], key=lambda r: -r.estimated_cycles)[:args.sources]:
            print(f"    {r.estimated_cycles / 1e6:8.3f} M cycles ({100 * r.estimated_cycles / max(on_tpu['cycles'], 1):4.1f}%)"
                  f"  {r.source}")
    if args.cpu_time:
        cpu_times(args.optimizer, args.clips, args.size, args.cpu_time)
    if args.lifted:
        rows = lifted_sizes()
        print("the nine's weights over cells, per block (block, scale: MB over cells / MB of its parameters):")
        print("  " + ", ".join(f"{i} (x{s}): {lifted:.1f} / {own:.2f}" for i, s, lifted, own in rows))
        print(f"  all: {sum(r[2] for r in rows):.1f} MB over cells / {sum(r[3] for r in rows):.1f} MB of parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
