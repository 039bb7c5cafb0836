"""Plan a TPU run from a machine without TPUs: `python -m dmvfn_jax.planning.plan --config FILE --topology NAME`.

    python -m dmvfn_jax.planning.plan --config configs/cityscapes.py --topology v5e-256 --per-chip-batch 8 --vgg
    python -m dmvfn_jax.planning.plan --config configs/demo.py --topology v5e:2x2 --config.batch_size=8

Compiles the config's exact training step (`make_train_step` + `shard_train_step`, the program
`train.py` runs) for the TPU slice on compile-only devices (libtpu; `dmvfn_jax.planning.tpu`) and prints,
per chip:

- memory: parameters, optimiser state, the batch, XLA's temporaries and the total against the
  chip's HBM (compiler figures: `compiled.memory_analysis()`); the command exits 1 with one
  `error:` line when the step does not fit;
- FLOPs and HBM bytes per step (compiler estimates: `compiled.cost_analysis()`, which counts a
  loop body once, times the step's updates) and the collectives with their sizes and the times
  a step runs them (`dmvfn_jax.planning.hlo`);
- the matmul precision: float32 convs run on TPU as bfloat16 passes; JAX's default precision is
  one pass (bfloat16 accuracy), `high` three, `highest` six. `--precision` compiles with another
  setting; train.py takes it from `JAX_DEFAULT_MATMUL_PRECISION=highest`;
- a roofline lower bound of the step time, max(FLOPs x passes / peak FLOP/s, bytes / HBM
  bandwidth), from the chip's public figures (`dmvfn_jax.planning.tpu.CHIPS`, each with its source) and
  XLA's FLOP and traffic estimates (the compute term alone is a strict bound; the traffic term is
  as good as XLA's estimate, which counts DMVFN's few-channel tensors in the TPU's 128-lane
  tiles), and an estimate of the all-reduce time over the inter-chip links (it may overlap the
  compute);
- the implied wall time of the config's schedule (a lower bound: steps x step bound);
- where the HBM goes: the buffers the step writes to HBM (`dmvfn_jax.planning.hlo.buffers`), as written and
  as laid out in the TPU's (8, 128) tiles, grouped by the JAX operation that made them (its named
  scope: `block3`, `warp`, `laplacian_loss`, ...), the most tiled bytes first, each with the
  TPU compiler's own cycle estimate for its instructions (`--top N` rows; all in the JSON);
- the clips per second each host's input must deliver at that speed, against the clips/s of one
  input process (`--input-rate`, default `INPUT_RATE`: measured by `bench/input_pipeline.py`),
  so the input processes a host needs (at most this many: the
  step bound is a lower bound, so the demand is an upper bound).

`--per-chip-batch N` sets the global batch to N x chips and scales the number of steps and of
warm-up steps so that the run sees as many clips, and warms up over as many, as the config's
schedule. `--vgg` includes the VGG19 perceptual term
of the official recipe (only its architecture is needed; config.vgg_checkpoint does the same).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, NamedTuple

from dmvfn_jax.errors import InputError

PRECISION_PASSES = {"default": 1, "bfloat16": 1, "high": 3, "bfloat16_3x": 3, "highest": 6, "float32": 6}
# clips/s of one input process, the default of `--input-rate`: Grain without workers reading real
# Cityscapes 30-frame clips (1024x512 PNG, 256 crops, batch 8) on a 2-core CPU, measured by
# `python bench/input_pipeline.py --out bench/input_pipeline_cpu.json` (BENCHMARKS.md, "Input");
# `tests/test_plan.py` holds it equal to that file's best per-process rate
INPUT_RATE = 1.437
INPUT_RATE_SOURCE = ("bench/input_pipeline.py: Grain, no workers, real Cityscapes 30-frame clips on a 2-core CPU "
                     "(the default; --input-rate to give another)")


class DoesNotFit(InputError):
    """The compiler refused the step for lack of device memory."""


def _tree_bytes(tree) -> int:
    import jax

    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


class CompiledStep(NamedTuple):
    """A training step compiled without running it: the state and batch as `jax.ShapeDtypeStruct`s,
    and the blocks (`{"widths": ..., "scales": ...}`) of the model it was compiled for."""

    compiled: Any
    state: Any
    batch: Any
    blocks: dict
    warp: str  # the warp's form traced for the mesh's platform (`ops.warp_impl_for`)
    layout: str  # the blocks' layout traced for it (`grid.choose_layout`)


def compile_train_step(config, mesh, *, vgg: bool = False, precision: str = "default", optimizer=None) -> CompiledStep:
    """Compiles the training step of `config` over `mesh` without running it, its warps in the form
    chosen for the mesh's platform (`ops.compiling_for`). `optimizer`: training's AdamW
    (`optim.make_train_optimizer`) by default; another transformation whose last state holds
    `step_size` (`optim.set_learning_rate`) stands in for it in the benchmarks."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from dmvfn_jax.models import ops
    from dmvfn_jax.models.dmvfn import DMVFN, layout_form, warp_form
    from dmvfn_jax.train import optim
    from dmvfn_jax.train import step as step_lib
    from dmvfn_jax.train.build import model_blocks, routing_options

    dtype = {"float32": None, "bfloat16": jnp.bfloat16}[config.get("compute_dtype", "float32")]
    if optimizer is None:
        optimizer = optim.make_train_optimizer(config.weight_decay)
    # Shapes only: the parameters and the optimiser state are never materialised. The convs run
    # plain, as on a TPU: the model would choose by the default backend, which is this CPU.
    blocks = model_blocks(config)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: DMVFN(rngs=nnx.Rngs(0), dtype=dtype, conv_form="plain",
                                                      **routing_options(config), **blocks)),
                                 nnx.Param)
    abstract = jax.eval_shape(lambda p: step_lib.init_state(nnx.merge(graphdef, p), optimizer, config.seed)[1], params)
    vgg_net = None
    if vgg or config.get("vgg_checkpoint"):
        from dmvfn_jax.losses import VGG19Features

        with jax.default_device(jax.local_devices(backend="cpu")[0]):  # constants of the step, as in training
            vgg_net = VGG19Features(rngs=nnx.Rngs(0))
    net = step_lib.PackedModel.of(graphdef, params)
    step_fn = step_lib.make_train_step(net, optimizer, vgg=vgg_net, update_mode=config.update_mode,
                                       estimator=config.routing.estimator, temperature=config.routing.temperature,
                                       cost_weight=config.routing.get("cost_weight", 0.0))
    jitted, _ = step_lib.shard_train_step(step_fn, mesh, abstract)
    d = config.data
    batch = jax.ShapeDtypeStruct((config.batch_size, d.num_frames, d.height, d.width, 3), jnp.uint8)
    platform = mesh.devices.flat[0].platform
    warp = warp_form(platform, d.height, d.width)
    layout = layout_form(platform, d.height, d.width)
    device = mesh.devices.flat[0] if platform == "tpu" else None  # for Pallas kernels that ask the chip
    with jax.default_matmul_precision(None if precision == "default" else precision), ops.compiling_for(platform, device):
        lowered = jitted.lower(abstract, batch, jax.ShapeDtypeStruct((), jnp.float32))
        try:
            compiled = lowered.compile()
        except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses a step that cannot fit
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            reason = str(e).split("RESOURCE_EXHAUSTED:", 1)[1].strip().splitlines()[0]
            raise DoesNotFit(reason) from None
    return CompiledStep(compiled, abstract, batch, blocks, warp, layout)


def compiled_cost(compiled) -> dict:
    """XLA's cost analysis of a compiled program (`jax.stages.Compiled`) as one dict, e.g.
    `{"flops": ..., "bytes accessed": ...}`: the compiler's estimates (a while loop's body counted
    once; a Pallas kernel counts what it declares), whichever form `cost_analysis()` returns them
    in (a dict, or a list of one per program); {} where the backend reports none."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return dict(cost or {})


def hbm_report(text: str, updates: int = 1) -> dict:
    """Where a compiled TPU program's HBM buffers go (`hlo.buffers` of `compiled.as_text()`), per step.

    `updates`: the step's updates, for the totals' per-update figures; the rows count every run of
    a loop body already (`hlo.buffers`)."""
    from dmvfn_jax.planning import hlo

    found = hlo.buffers(text)
    written, tiled = hlo.padding_totals(found)
    rows = [{"source": r.source, "written_bytes": r.written_bytes, "tiled_bytes": r.tiled_bytes,
             "ratio": round(r.ratio, 2) if r.written_bytes else None, "instructions": r.buffers,
             "largest": r.example, "estimated_cycles": r.estimated_cycles} for r in hlo.by_source(found)]
    return {"written_bytes": written, "tiled_bytes": tiled, "updates": updates,
            "estimated_cycles": sum(b.estimated_cycles * b.runs for b in found),
            "kind": "compiled program (HLO layouts and tiles; cycles: the TPU compiler's estimates)",
            "by_source": rows}


def plan(config, topology_name: str, *, per_chip_batch: int | None = None, vgg: bool = False,
         precision: str = "default", input_rate: float | None = None, input_source: str = "") -> dict:
    """Compiles the training step of `config` for a TPU topology and returns the plan (see the module doc)."""
    from jax.sharding import Mesh
    import numpy as np

    from dmvfn_jax.planning import hlo, tpu
    from dmvfn_jax.train.build import validate_config

    topo = tpu.parse_topology(topology_name)
    if precision not in PRECISION_PASSES:
        raise InputError(f"--precision must be one of {', '.join(PRECISION_PASSES)}, got {precision!r}")
    config = config.copy_and_resolve_references()
    clips_in_schedule = config.batch_size * config.num_train_steps
    if per_chip_batch is not None:
        if per_chip_batch < 1:
            raise InputError(f"--per-chip-batch must be >= 1, got {per_chip_batch}")
        scale = config.batch_size / (per_chip_batch * topo.chips)  # the schedule in clips stays the same
        config.batch_size = per_chip_batch * topo.chips
        config.warmup_steps = max(1, math.ceil(config.warmup_steps * scale))
        config.num_train_steps = max(config.warmup_steps + 1, math.ceil(clips_in_schedule / config.batch_size))
    validate_config(config)
    if config.batch_size % topo.chips:
        raise InputError(f"global batch {config.batch_size} is not divisible by the {topo.chips} chips of "
                         f"{topo.cloud_name} ({topo.libtpu_name}); set --config.batch_size or --per-chip-batch")
    devices = tpu.compile_only_devices(topo)
    hosts = len({d.process_index for d in devices})
    mesh = Mesh(np.asarray(devices), ("data",))
    try:
        compiled, state, batch, blocks, warp, layout = compile_train_step(config, mesh, vgg=vgg, precision=precision)
    except DoesNotFit as e:
        raise DoesNotFit(f"the step does not fit on {topo.cloud_name} ({config.batch_size // topo.chips} clips of "
                         f"{config.data.num_frames} frames at {config.data.height}x{config.data.width} per chip): "
                         f"the TPU compiler says: {e}; lower the per-chip batch or use bfloat16") from None

    mem = compiled.memory_analysis()
    cost = compiled_cost(compiled)
    found = hlo.collectives(compiled.as_text())
    coll = {k: v for k, v in hlo.summary(found).items() if v["ops"]}
    chip = topo.chip
    compute_bf16 = config.get("compute_dtype", "float32") == "bfloat16"
    passes = PRECISION_PASSES[precision]
    total = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + \
        mem.temp_size_in_bytes + mem.generated_code_size_in_bytes
    # XLA's cost analysis counts a loop body once: the update_per_triplet scan's body is the update
    updates = config.data.num_frames - 2 if config.update_mode == "update_per_triplet" else 1
    flops = float(cost.get("flops", float("nan"))) * updates
    bytes_accessed = float(cost.get("bytes accessed", float("nan"))) * updates
    t_compute = flops * passes / chip.peak_bf16_flops
    t_memory = bytes_accessed / chip.hbm_bytes_per_s
    t_step = max(t_compute, t_memory)
    n = topo.chips
    allreduce_bytes = coll.get("all-reduce", {}).get("bytes", 0)
    t_allreduce = (2 * (n - 1) / n) * allreduce_bytes / chip.allreduce_bytes_per_s if n > 1 else 0.0
    per_host = config.batch_size / hosts
    need = per_host / t_step if t_step > 0 else float("inf")
    result = {
        "config": config.get("name", ""),
        "topology": {"name": topology_name, "libtpu": topo.libtpu_name, "cloud": topo.cloud_name,
                     "chips": n, "hosts": hosts, "chips_per_host": n // hosts, "device_kind": devices[0].device_kind},
        "step": {"global_batch": config.batch_size, "per_chip_batch": config.batch_size // n,
                 "frames": config.data.num_frames, "size": [config.data.height, config.data.width],
                 "update_mode": config.update_mode, "updates_per_step": updates,
                 "estimator": config.routing.estimator, "compute_dtype": config.get("compute_dtype", "float32"),
                 "vgg": bool(vgg or config.get("vgg_checkpoint")),
                 "model": {k: list(v) for k, v in blocks.items()}, "warp": warp, "layout": layout},
        "memory_per_chip": {
            "parameters": _tree_bytes(state.params), "optimizer": _tree_bytes(state.opt_state),
            "batch": _tree_bytes(batch) // n, "arguments": mem.argument_size_in_bytes,
            "temporaries": mem.temp_size_in_bytes, "code": mem.generated_code_size_in_bytes,
            "total": total, "hbm": chip.hbm_bytes, "fits": total <= chip.hbm_bytes,
            "kind": "compiler figures (memory_analysis)"},
        "per_chip": {"flops": flops, "hbm_bytes": bytes_accessed,
                     "kind": "compiler estimates (cost_analysis, x the step's updates: it counts a loop body once)"},
        "collectives": coll,
        "hbm_report": hbm_report(compiled.as_text(), updates),
        "precision": {"setting": precision, "bf16_passes": 1 if compute_bf16 else passes,
                      "note": _precision_note(compute_bf16, precision)},
        "roofline": {"compute_s": t_compute, "memory_s": t_memory, "step_lower_bound_s": t_step,
                     "allreduce_estimate_s": t_allreduce, "peak_bf16_flops": chip.peak_bf16_flops,
                     "hbm_bytes_per_s": chip.hbm_bytes_per_s, "source": chip.source,
                     "kind": "roofline bound from the chips' public peaks and XLA's estimates"},
        "schedule": {"steps": config.num_train_steps, "clips": config.batch_size * config.num_train_steps,
                     "hours_lower_bound": config.num_train_steps * t_step / 3600},
        "input": {"clips_per_s_per_host": need, "per_process_clips_per_s": input_rate, "source": input_source,
                  "processes_per_host": (math.ceil(need / input_rate) if input_rate else None)},
    }
    return result


def _precision_note(compute_bf16: bool, precision: str) -> str:
    if compute_bf16:
        return ("compute_dtype bfloat16: the blocks' convs take bfloat16 operands, one MXU pass each; "
                "parameters, flows and the loss stay float32")
    passes = PRECISION_PASSES[precision]
    if passes == 1:
        return ("float32 convs at JAX's default precision: one bfloat16 pass on the TPU (about bfloat16 accuracy); "
                "JAX_DEFAULT_MATMUL_PRECISION=highest (6 passes, float32 accuracy) or =high (3) asks for more")
    return f"float32 convs at precision {precision}: {passes} bfloat16 passes each on the TPU"


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def _duration(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _blocks_text(model: dict | None) -> str:
    """The step line's "N blocks (widths, scales), "; empty for a plan written before plans
    recorded the blocks (those are of the official nine)."""
    if not model:
        return ""
    return f"{len(model['widths'])} blocks (widths {model['widths']}, scales {model['scales']}), "


def format_hbm_report(report: dict, top: int = 10) -> list[str]:
    """The plan's lines for `hbm_report`: totals and the `top` sources by tiled bytes."""
    w, t = report["written_bytes"], report["tiled_bytes"]
    lines = [f"where the HBM goes ({report['kind']}): the step writes {w / 1e9:.3f} GB of buffers to HBM, "
             f"{t / 1e9:.3f} GB as tiled ({t / w if w else float('nan'):.1f}x); "
             f"{report['estimated_cycles'] / 1e6:.2f} M cycles estimated; largest sources:"]
    lines.append(f"  {'tiled MB':>10s} {'written MB':>10s} {'ratio':>6s} {'M cycles':>8s}  source (largest buffer)")
    for r in report["by_source"][:top]:
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] is not None else "-"
        lines.append(f"  {r['tiled_bytes'] / 1e6:10.1f} {r['written_bytes'] / 1e6:10.1f} {ratio:>6s} "
                     f"{r['estimated_cycles'] / 1e6:8.3f}  {r['source']} ({r['largest']})")
    return lines


def format_plan(p: dict, top: int = 10) -> str:
    t, s, m, r = p["topology"], p["step"], p["memory_per_chip"], p["roofline"]
    lines = [
        f"plan: {p['config'] or 'config'} on {t['cloud']} ({t['libtpu']}, {t['device_kind']}): {t['chips']} chips, "
        f"{t['hosts']} host(s) of {t['chips_per_host']}",
        f"step: global batch {s['global_batch']} ({s['per_chip_batch']} per chip) x {s['frames']} frames at "
        f"{s['size'][0]}x{s['size'][1]}, {s['update_mode']} ({s['updates_per_step']} update(s) per step), "
        f"{_blocks_text(s.get('model'))}{s['estimator']} routing, {s['compute_dtype']}, "
        f"{'Laplacian + VGG' if s['vgg'] else 'Laplacian'} loss" + (f", warp: {s['warp']}" if "warp" in s else "")
        + (f", layout: {s['layout']}" if "layout" in s else ""),
        f"precision: {p['precision']['note']}",
        f"memory per chip ({m['kind']}): parameters {_gib(m['parameters'])}, optimiser {_gib(m['optimizer'])}, "
        f"batch {_gib(m['batch'])}, temporaries {_gib(m['temporaries'])}; total {_gib(m['total'])} of "
        f"{_gib(m['hbm'])} HBM: {'fits' if m['fits'] else 'DOES NOT FIT'}",
        f"per chip and step ({p['per_chip']['kind']}): {p['per_chip']['flops'] / 1e9:.1f} GFLOP, "
        f"{p['per_chip']['hbm_bytes'] / 1e9:.1f} GB of HBM traffic",
        "collectives per step: " + (", ".join(
            f"{k} {v['ops']} op(s), {v['runs']} run(s), {v['bytes'] / 2**20:.1f} MiB" for k, v in p["collectives"].items())
            or "none"),
        f"step time >= {_duration(r['step_lower_bound_s'])} ({r['kind']}: the compute at "
        f"{r['peak_bf16_flops'] / 1e12:.0f} TFLOP/s x {p['precision']['bf16_passes']} pass(es) takes "
        f"{_duration(r['compute_s'])}, XLA's HBM traffic at {r['hbm_bytes_per_s'] / 1e9:.0f} GB/s "
        f"{_duration(r['memory_s'])}); all-reduce about {_duration(r['allreduce_estimate_s'])} over the "
        "inter-chip links (estimate)",
        f"schedule: {p['schedule']['steps']} steps ({p['schedule']['clips']} clips) >= "
        f"{p['schedule']['hours_lower_bound']:.2f} h (lower bound)",
    ]
    i = p["input"]
    if i["per_process_clips_per_s"]:
        lines.append(f"input: each host must deliver <= {i['clips_per_s_per_host']:.1f} clips/s; one input process "
                     f"gives {i['per_process_clips_per_s']:.2f} clips/s ({i['source']}): "
                     f"{i['processes_per_host']} input process(es) per host at most")
    else:
        lines.append(f"input: each host must deliver <= {i['clips_per_s_per_host']:.1f} clips/s "
                     "(pass --input-rate to size the input processes)")
    if "hbm_report" in p:  # plans written before the report have none
        lines += format_hbm_report(p["hbm_report"], top)
    lines.append(f"source of the chip figures: {r['source']}")
    return "\n".join(lines)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "python -m dmvfn_jax.planning.plan", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Any --config.KEY=VALUE overrides the config, as in train.py.")
    p.add_argument("--config", required=True, help="Python config file (configs/*.py)")
    p.add_argument("--topology", required=True, help="e.g. v5e:16x16 or v5e-256, v4-8, v5p-128, v6e-256")
    p.add_argument("--per-chip-batch", type=int, default=None,
                   help="global batch = N x chips, steps scaled to see the schedule's clips")
    p.add_argument("--vgg", action="store_true", help="include the VGG19 perceptual term (official recipe)")
    p.add_argument("--precision", default="default", help=f"matmul precision: {', '.join(PRECISION_PASSES)}")
    p.add_argument("--input-rate", type=float, default=None,
                   help=f"clips/s of one input process (default {INPUT_RATE}: bench/input_pipeline.py on a 2-core CPU)")
    p.add_argument("--json", default=None, help="also write the plan as JSON to this file")
    p.add_argument("--top", type=int, default=10, help="rows of the where-the-HBM-goes report (default 10)")
    return p


def _load_config(path: str, overrides: list[str]):
    from ml_collections import config_flags
    from absl import flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", path, "config file", flag_values=fv, lock_config=True)
    try:
        fv([sys.argv[0], f"--config={path}", *overrides])
    except flags.Error as e:
        raise InputError(str(e).splitlines()[0]) from None
    return fv.config


def main(argv=None, prog: str | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = [a for a in argv if a.startswith("--config.")]
    args = build_parser(prog).parse_args([a for a in argv if not a.startswith("--config.")])
    import jax

    jax.config.update("jax_platforms", "cpu")  # the TPU devices are compile-only; nothing runs on them
    from dmvfn_jax.errors import run_command

    def body():
        config_path = Path(args.config)
        if not config_path.is_file():
            raise InputError(f"{config_path}: no such config file")
        config = _load_config(str(config_path), overrides)
        rate, source = args.input_rate, "--input-rate"
        if rate is None:
            rate, source = INPUT_RATE, INPUT_RATE_SOURCE
        elif rate <= 0:
            raise InputError(f"--input-rate must be > 0, got {rate}")
        if args.top < 0:
            raise InputError(f"--top must be >= 0, got {args.top}")
        result = plan(config, args.topology, per_chip_batch=args.per_chip_batch, vgg=args.vgg,
                      precision=args.precision, input_rate=rate, input_source=source)
        print(format_plan(result, args.top), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        m = result["memory_per_chip"]
        if not m["fits"]:
            raise InputError(f"the step does not fit: {_gib(m['total'])} per chip against {_gib(m['hbm'])} of HBM "
                             f"on {result['topology']['cloud']}; lower the per-chip batch or use bfloat16")

    return run_command(prog or "plan", body)


if __name__ == "__main__":
    sys.exit(main())
