"""`eval.py`: the official DMVFN evaluation protocols on TFDS builds, sharded over the local devices.

    python eval.py --checkpoint DIR --dataset cityscapes|kitti|davis|vimeo --data_dir TFDS_DIR
                   [--mode clean|official] [--lpips LPIPS_DIR] [--metrics psnr,ssim,ms_ssim,lpips]
                   [--batch-size N] [--output DIR] [--save-predictions N] [--save-images N] [--max-clips N]
    python eval.py --checkpoint DIR --dataset clip_folder --data_dir TFDS_DIR --context 2,3 --horizon 5
                   [--size WxH] [--skip-bad]

Every clip of the split is predicted autoregressively from its two context frames (each
prediction becomes the newer input) and every prediction is scored against its ground truth;
`t+k` is the running mean of steps 1..k, as the paper reports. Three rows: the model with its
routing, the model with all 9 blocks (no routing), and copy-last-frame. The report also gives
the routing statistics: blocks per prediction, each block's rate, and the GFLOPs per frame the
routed model spends against the all-blocks cost (XLA's cost analysis of the network at the
evaluated size), and how the routing depends on the input (`routing_report.py`: threshold
gates on each clip's context pair, the same frame twice and the frame moved 6 px; in a run of
several processes, process 0's clips; `results.json`'s `routing_report`). Output: a console table, `results.json`, `results.csv`, with
`--save-predictions N` the predicted PNGs of the first N clips, and with `--save-images N`
(or `--save_images N`) pictures of the first N clips: per step `images/<clip>/t+K.png` (the two
inputs, the routed prediction, the truth, the error map, both voxel flows as colours, the fusion
mask and the blocks that ran) and `images/<clip>/rollout.gif` (predictions beside the truth).

Clips are evaluated per frame size, one compile per size; the report and `results.json` give
every size with its clip count, scores and GFLOPs per frame (`sizes`; `frame_size` only when
there is one). `--size WxH` resizes every frame first (as `prepare` resizes), making one size.
Before any compute, every clip's length and size are checked from the build's metadata: clips
shorter than the protocol reads, or (with MS-SSIM) too small for it, stop the run with one line
naming them all, or with `--skip-bad` are skipped and listed in `results.json` (`skipped`).

`--mode clean` (default): metrics on RGB, deterministic threshold routing, per-sample gates.
`--mode official`: the official scripts' quirks: BGR fed to the metrics, Bernoulli routing
seeded with 1234 (JAX's PRNG: not the same draws as PyTorch's), batch element 0's gates decide
for the batch, `img0` returned when no block runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from dmvfn_jax import channels, parallel
from dmvfn_jax.errors import InputError, run_command
from dmvfn_jax.evaluation import metrics as metric_lib
from dmvfn_jax.evaluation.flops import flop_costs
from dmvfn_jax.evaluation.protocols import DATASETS, MODES, Mode, Protocol, make_protocol
from dmvfn_jax.evaluation.routing_report import format_routing_report, probe, routing_report
from dmvfn_jax.evaluation.routing_report import gates_fn as routing_gates_fn
from dmvfn_jax.evaluation.report import format_table, save_outputs, sizes_text, summarize, write_csv, write_text
from dmvfn_jax.evaluation.step import sharded_eval_step
from dmvfn_jax.image_io import parse_size
from dmvfn_jax.progress import ProgressBar
from dmvfn_jax.checkpoint import load_dmvfn

log = logging.getLogger("dmvfn_jax.eval")

METRICS = ("psnr", "ssim", "ms_ssim", "lpips")


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How `evaluate` runs a protocol: `eval.py`'s flags, with its defaults.

    `mode`: "clean" or "official" (module docstring). `split`, `context` (two frame indices),
    `horizon`: the protocol's, for the official datasets their own by default. `metrics`: names
    from `METRICS` (default PSNR, SSIM, MS-SSIM, and LPIPS when `lpips` names its converted
    weights). `batch_size`: clips per batch, a multiple of the devices (default: one per device).
    `output`: a folder for results.json and results.csv; with it, `save_predictions=N` writes the
    predicted PNGs of the first N clips and `save_images=N` their pictures. `max_clips`: the first
    N clips only. `size=(width, height)`: every frame resized first, so that all clips are one
    size. `skip_bad`: clips the protocol cannot use are skipped and listed instead of stopping the
    run. `progress`: a progress bar on stderr.
    """

    mode: str = "clean"
    split: str | None = None
    context: tuple[int, int] | None = None
    horizon: int | None = None
    metrics: Sequence[str] | None = None
    lpips: str | os.PathLike | None = None
    batch_size: int | None = None
    output: str | os.PathLike | None = None
    save_predictions: int = 0
    save_images: int = 0
    max_clips: int | None = None
    size: tuple[int, int] | None = None
    skip_bad: bool = False
    progress: bool = True


def evaluate(checkpoint, dataset: str, data_dir, options: EvalOptions | None = None, **overrides) -> dict:
    """Runs one protocol and returns (and, with `options.output`, writes) the results dict.

    `options` (default `EvalOptions()`), with any of its fields overridden by keyword:
    `evaluate(ckpt, "vimeo", data_dir, metrics=["psnr"])`.
    Clips are evaluated per frame size (one compile per size; `results["sizes"]` reports each
    with its clip count, scores and compute). Clips the protocol cannot use (fewer frames than it
    reads, or sides too small for MS-SSIM) stop the run before any compute with one error naming
    them all, or with `skip_bad` are skipped and listed in `results["skipped"]`.
    """
    from dmvfn_jax.data.pipeline import EvalClips

    o = dataclasses.replace(options or EvalOptions(), **overrides)
    if o.mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {o.mode!r}")
    the_mode = MODES[o.mode]
    protocol = make_protocol(dataset, o.split, o.context, o.horizon)
    names = list(o.metrics) if o.metrics else (["psnr", "ssim", "ms_ssim"] + (["lpips"] if o.lpips else []))
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    lpips_model = None
    if "lpips" in names:
        if not o.lpips:
            raise InputError(
                "LPIPS needs its weights: convert them once with `python convert_weights.py lpips --alexnet "
                "alexnet-owt-7be5be79.pth --output checkpoints/lpips` and pass --lpips checkpoints/lpips "
                "(or leave lpips out of --metrics)"
            )
        from dmvfn_jax.evaluation.lpips import load_lpips

        lpips_model = load_lpips(o.lpips)
    model, meta = load_dmvfn(checkpoint)
    if the_mode.name == "official" and meta["channel_order"] != "BGR":
        raise InputError(
            f"{checkpoint}: trained on {meta['channel_order']} frames, but --mode official feeds the network "
            "BGR frames as the official scripts do; use --mode clean for this checkpoint"
        )
    clips = EvalClips(protocol.tfds_name, data_dir, protocol.split, protocol.frames_needed, channel_order="RGB",
                      max_clips=o.max_clips, size=o.size)
    usable, skipped = usable_clips(clips, protocol, names, o.skip_bad)  # from the build's metadata: no decoding
    n_skipped = sum(len(v) for v in skipped.values())
    if not usable:
        raise InputError(f"{protocol.tfds_name}/{protocol.split}: no clip left to evaluate ({n_skipped} skipped)")
    log.info("%s: %d clips of %s/%s%s; %s; mode %s", protocol.name, len(usable), protocol.tfds_name, protocol.split,
             f" ({n_skipped} skipped)" if n_skipped else "", protocol.describe(), the_mode.describe())
    scored = evaluate_clips(model, meta["channel_order"], clips, usable, protocol, the_mode, names,
                            lpips_model=lpips_model, batch_size=o.batch_size, progress=o.progress,
                            output=None if o.output is None else Path(o.output),
                            save_predictions=o.save_predictions, save_images=o.save_images)
    results = {
        "dataset": dataset,
        "tfds_name": protocol.tfds_name,
        "split": protocol.split,
        "clips": scored["clips"],
        # one size: that size; several: null, and each is in "sizes" with its own figures
        "frame_size": scored["sizes"][0]["size"] if len(scored["sizes"]) == 1 else None,
        "resized_to": None if o.size is None else [int(o.size[0]), int(o.size[1])],
        "skipped": skipped,
        "checkpoint": str(checkpoint),
        "checkpoint_channel_order": meta["channel_order"],
        **{k: v for k, v in scored.items() if k != "clips"},
    }
    results["table"] = format_table(results)
    if o.output is not None and jax.process_index() == 0:
        out_dir = Path(o.output)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
        write_csv(results, out_dir / "results.csv")
    return results


def evaluate_clips(model, channel_order: str, clips, usable: Sequence[int], protocol: Protocol, mode: Mode,
                   names: Sequence[str], *, lpips_model=None, batch_size: int | None = None,
                   output: Path | None = None, save_predictions: int = 0, save_images: int = 0,
                   progress: bool = True) -> dict:
    """Scores the clips `usable` of `clips` (`data.pipeline.EvalClips` or `ArrayClips`: RGB uint8
    clips, batched per frame size) under `protocol` and `mode`, sharded over the local devices:
    each clip predicted autoregressively by the model with its routing, with every block, and
    copied from its last frame (`step.py`), the sums all-reduced per batch. `channel_order`: the
    order the network takes its frames in. The predictions and pictures of the first clips go to
    `output` (`report.save_outputs`).

    Returns `clips`, `sizes` (per frame size: clips, scores, GFLOPs per frame), `protocol`,
    `mode`, `metrics`, `results` (per variant and metric `per_step` and `running_mean`), `routing`
    (block rates), `gflops_per_frame` (None with several sizes), and `routing_report` (how the
    routing depends on the input: threshold gates on each clip's context pair, the same frame
    twice and the frame moved; in a run of several processes, process 0's clips).
    """
    groups = clips.by_size(usable)
    mesh = parallel.data_mesh()
    n_dev = jax.device_count()
    batch_size = n_dev if batch_size is None else int(batch_size)
    if batch_size < 1 or batch_size % n_dev:
        raise InputError(f"--batch-size {batch_size} must be a positive multiple of the {n_dev} devices")
    graphdef, params = nnx.split(model)
    params = parallel.replicate(params, mesh)
    lpips_graphdef, lpips_params = (None, None)
    if lpips_model is not None:
        lpips_graphdef, lpips_params = nnx.split(lpips_model)
        lpips_params = parallel.replicate(lpips_params, mesh)
    jitted = {}

    def step_fn(with_preds: bool):
        if with_preds not in jitted:
            jitted[with_preds] = sharded_eval_step(mesh, graphdef, lpips_graphdef, protocol, mode, names,
                                                   channel_order, with_preds)
        return jitted[with_preds]

    log.info("clips by size: %s", sizes_text({hw: len(m) for hw, m in groups.items()}))
    base_key = jax.random.key(mode.seed)
    n_saved = max(save_predictions, save_images) if output is not None else 0
    bar = ProgressBar(len(usable), "clips", enabled=progress, log=None)
    bar.start()
    per_size, b = [], 0
    smallest = None
    # how the routing depends on the input: threshold gates on each clip's context pair, the same
    # frame twice and the frame moved (`routing_report.probe_pairs`), this process's clips
    gates_fn = routing_gates_fn(graphdef)
    probes: list[tuple] = []
    c0, c1 = protocol.context
    for (height, width), members in groups.items():
        flops = flop_costs(model, height, width)
        smallest = smallest or (width, height, flops["all_blocks"])
        ratio = (f" ({flops['all_blocks'] / smallest[2]:.1f}x the compute per frame of {smallest[0]}x{smallest[1]})"
                 if len(groups) > 1 and (width, height) != smallest[:2] else "")
        log.info("%dx%d: %d clip(s), %.1f GFLOPs per frame with all blocks%s; compiling for this size",
                 width, height, len(members), flops["all_blocks"], ratio)
        totals = None
        for k, (batch, mask, idx) in enumerate(clips.batches(batch_size, jax.process_index(), jax.process_count(),
                                                             members)):
            # from the whole batch's clips, not this process's rows: every process runs the same program
            whole = members[k * batch_size:(k + 1) * batch_size]
            want_preds = bool(n_saved) and any(i < n_saved for i in whole)
            g_clips, g_mask = parallel.global_batch(mesh, batch), parallel.global_batch(mesh, mask)
            sums, preds = step_fn(want_preds)(params, lpips_params, g_clips, g_mask, jax.random.fold_in(base_key, b))
            kept = batch[mask.astype(bool)]
            if len(kept):
                frames = np.stack([kept[:, c0], kept[:, c1]], axis=1).astype(np.float32) / 255.0
                gates, pairs = probe(gates_fn, params, channels.reorder(frames, channel_order))
                probes.append((gates, pairs.motion, pairs.kinds))
            sums = jax.tree.map(lambda a: a.astype(np.float64), parallel.host_copy(sums))
            totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
            if want_preds:
                save_outputs(output, clips, batch, preds, idx, save_predictions, save_images, protocol)
            bar.advance(int(mask.sum()) * jax.process_count())
            b += 1
        per_size.append({"size": [int(width), int(height)], "totals": totals, "flops": flops})
    bar.close()

    overall = jax.tree.map(lambda *a: sum(a), *[g["totals"] for g in per_size])
    summary = summarize(overall, names, protocol.horizon, per_size[0]["flops"] if len(per_size) == 1 else None)
    sizes = []
    for g in per_size:
        one = summarize(g["totals"], names, protocol.horizon, g["flops"])
        sizes.append({"size": g["size"], **one})
    results = {
        "clips": summary["clips"],
        "sizes": sizes,
        "protocol": {"context": list(protocol.context), "horizon": protocol.horizon, "description": protocol.describe()},
        "mode": {"name": mode.name, "description": mode.describe()},
        "metrics": list(names),
        "results": summary["results"],
        "routing": summary["routing"],
        # GFLOPs per frame at the evaluated size; with several sizes null (see "sizes")
        "gflops_per_frame": summary["gflops_per_frame"],
    }
    if probes:
        results["routing_report"] = routing_report(np.concatenate([p[0] for p in probes]),
                                                   np.concatenate([p[1] for p in probes]),
                                                   [k for p in probes for k in p[2]])
        what = "pairs of this process's clips" if jax.process_count() > 1 else "pairs of the clips"
        log.info("%s", format_routing_report(results["routing_report"], f"{what} (moving, still, shifted)"))
    return results


def usable_clips(clips, protocol: Protocol, names, skip_bad: bool) -> tuple[list[int], dict]:
    """The clips the protocol can score, from the build's clip table (no frame decoded): a clip
    with fewer frames than the protocol reads, or (with MS-SSIM) a side too small for it, stops
    the run with one line naming every such clip, or with `skip_bad` is left out and listed."""
    where = f"{protocol.tfds_name}/{protocol.split}"
    short = {c.id for c in clips.too_short()}
    small_sizes = set()
    if "ms_ssim" in names:
        small_sizes = {hw for hw in clips.by_size() if min(hw) <= metric_lib.ms_ssim_min_side()}
    too_short, too_small, usable = [], [], []
    for i, info in enumerate(clips.index):
        if info.id in short:
            too_short.append({"id": info.id, "frames": info.num_frames})
        elif clips.frame_size(i) in small_sizes:
            h, w = clips.frame_size(i)
            too_small.append({"id": info.id, "size": [w, h]})
        else:
            usable.append(i)
    if not skip_bad:
        if too_short:
            listed = ", ".join(f"{c['id']} ({c['frames']} frames)" for c in too_short)
            raise InputError(
                f"{where}: {len(too_short)} clip(s) have fewer than the {protocol.frames_needed} frames the protocol "
                f"reads ({protocol.describe()}): {listed}; pass --skip-bad to skip them"
            )
        if too_small:
            listed = ", ".join(f"{c['id']} ({c['size'][0]}x{c['size'][1]})" for c in too_small)
            raise InputError(
                f"{where}: MS-SSIM needs both sides > {metric_lib.ms_ssim_min_side()} pixels; {len(too_small)} clip(s) are smaller: {listed}; "
                "pass --skip-bad to skip them, --size to resize, or leave ms_ssim out of --metrics"
            )
    for what, items in (("too short for the protocol", too_short), ("too small for MS-SSIM", too_small)):
        if items:
            log.warning("skipping %d clip(s) %s: %s", len(items), what, ", ".join(c["id"] for c in items))
    return usable, {"too_short": too_short, "too_small_for_ms_ssim": too_small}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "eval.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="DMVFN checkpoint directory (converted or trained)")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--data_dir", "--data-dir", required=True, help="the TFDS data_dir of the build")
    p.add_argument("--split", default=None, help="default: the protocol's (test)")
    p.add_argument("--mode", default="clean", choices=tuple(MODES))
    p.add_argument("--context", default=None, help="generic datasets: two context frame indices, e.g. 2,3")
    p.add_argument("--horizon", type=int, default=None, help="generic datasets: predictions per clip")
    p.add_argument("--metrics", default=None, help=f"comma list of {', '.join(METRICS)} (default: all available)")
    p.add_argument("--lpips", default=None, help="LPIPS checkpoint from `convert_weights.py lpips`")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: one per device)")
    p.add_argument("--max-clips", type=int, default=None, help="evaluate only the first N clips")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="resize every frame to WIDTHxHEIGHT first (default: each clip at its own size)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip (and count) clips too short for the protocol or too small for MS-SSIM, "
                        "instead of stopping")
    p.add_argument("--output", default=None, help="folder for results.json / results.csv / predictions/")
    p.add_argument("--save-predictions", type=int, default=0, help="write the predicted PNGs of the first N clips")
    p.add_argument("--save-images", "--save_images", type=int, default=0, dest="save_images",
                   help="write pictures (inputs, prediction, truth, error, flows, mask, blocks) of the first N clips")
    return p


def main(argv=None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    from dmvfn_jax.compile_cache import enable_compilation_cache

    enable_compilation_cache()  # a second run starts fast; DMVFN_JAX_CACHE=off disables
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("dmvfn_jax").setLevel(logging.INFO)

    def body():
        from dmvfn_jax.extras import require

        require("data", "evaluation (it reads TFDS builds)")
        context = None if args.context is None else tuple(int(c) for c in args.context.split(","))
        metrics = None if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
        if args.save_predictions and not args.output:
            raise InputError("--save-predictions needs --output")
        if args.save_images and not args.output:
            raise InputError("--save-images needs --output")
        size = None if args.size is None else parse_size(args.size)
        options = EvalOptions(mode=args.mode, split=args.split, context=context, horizon=args.horizon,
                              metrics=metrics, lpips=args.lpips, batch_size=args.batch_size, output=args.output,
                              save_predictions=args.save_predictions, save_images=args.save_images,
                              max_clips=args.max_clips, size=size, skip_bad=args.skip_bad)
        results = evaluate(args.checkpoint, args.dataset, args.data_dir, options)
        sizes = sizes_text({(h, w): e["clips"] for e in results["sizes"] for w, h in [e["size"]]})
        print(f"{results['dataset']} ({results['tfds_name']}/{results['split']}, {results['clips']} clips at "
              f"{sizes}); {results['protocol']['description']}")
        print(f"mode {results['mode']['description']}")
        print(results["table"])
        if args.output:
            print(f"results: {Path(args.output) / 'results.json'}, {Path(args.output) / 'results.csv'}")

    return run_command(prog or "eval.py", body)
