"""How many input processes one accelerator needs to train the official Cityscapes recipe.

    .venv/bin/python bench/input_pipeline.py [--out results.json]

run from the repository root. It measures, in one run:

1. input throughput: clips/s that the training input delivers at the official Cityscapes setting
   (30-frame 1024x512 PNG clips, 30 of 30 frames decoded, one draw of the augmentations,
   256x256 crop, BGR) in batches of 8 clips (one GPU's share of the official global batch 64
   over 8 GPUs), for each count of input worker processes in --workers (0: loading in the main
   process), over --batches batches after one warm-up batch (which absorbs the start of the
   workers), with the package's input (`TfdsSource.batches`, dmvfn_jax/data/pipeline.py, on
   Grain), --rounds times, taking the median;
2. the training step of the official recipe (update_per_triplet, AdamW, no VGG term, 256x256,
   float32) jitted on the local JAX device. A full official step is 8 clips of 30 frames, 28
   updates; on a CPU that takes minutes, so by default the step is measured on CPU with 3 frames
   (one update) and 1 clip, and the official step time is extrapolated as
   time per update x 28 x (8 / clips per step). On a GPU/TPU pass --step_frames 30 (the default
   batch there is 8 clips) to measure it without extrapolation, or give a time measured elsewhere
   with --step_time;
3. the input processes one accelerator needs:
       ceil((8 clips / official step time) / clips/s of one input process),
   where one process's rate is the best per-process rate of step 1 (clips/s / max(workers, 1)).

The input is the real Cityscapes clip in ../shared/data/real/cityscapes_aachen00 (2048x1024
JPEGs, symlinked into a temporary raw layout, prepared to 1024x512 PNG and built as the
`cityscapes` TFDS dataset), or, when that folder is absent (or with --synthetic),
--synthetic_clips synthetic 30-frame 1024x512 PNG clips built as `clip_folder`. Everything is
written under a temporary folder, or under --work_dir, where a finished build is reused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_CLIP = ROOT.parent / "shared" / "data" / "real" / "cityscapes_aachen00"
FRAMES, HEIGHT, WIDTH = 30, 512, 1024  # a prepared Cityscapes clip
CROP = 256
DEVICE_CLIPS = 8  # clips per GPU in the official recipe: global batch 64 over 8 GPUs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="0,1,2", help="input worker counts to measure (default 0,1,2)")
    p.add_argument("--batches", type=int, default=3, help="timed batches per worker count (default 3)")
    p.add_argument("--batch", type=int, default=DEVICE_CLIPS, help="clips per batch (default 8)")
    p.add_argument("--prefetch", type=int, default=2, help="batches loaded ahead with workers (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="measurements per worker count; median (default 3)")
    p.add_argument("--step_frames", type=int, default=3,
                   help="frames per clip in the measured step (3 = one update; 30 = the official step)")
    p.add_argument("--step_batch", type=int, default=None,
                   help="clips per device in the measured step (default 8 on GPU/TPU, 1 on CPU)")
    p.add_argument("--step_repeats", type=int, default=3, help="timed steps after the compiling one (default 3)")
    p.add_argument("--step_time", type=float, default=None,
                   help="official step time in seconds (8 clips x 30 frames on one accelerator), "
                        "e.g. measured on a GPU: skips the step measurement")
    p.add_argument("--real_dir", type=Path, default=REAL_CLIP, help=f"raw Cityscapes frames (default {REAL_CLIP})")
    p.add_argument("--synthetic", action="store_true", help="use synthetic clips even if --real_dir exists")
    p.add_argument("--synthetic_clips", type=int, default=8, help="synthetic clips to build (default 8)")
    p.add_argument("--work_dir", type=Path, default=None,
                   help="where the prepared frames and the TFDS build go, reused if finished (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    args = p.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if min(args.workers) < 0 or args.batches < 1 or args.batch < 1 or args.step_repeats < 1:
        p.error("--workers must be >= 0, --batches, --batch and --step_repeats >= 1")
    if not 3 <= args.step_frames <= FRAMES:
        p.error(f"--step_frames must be in 3..{FRAMES}")
    if args.step_time is not None and args.step_time <= 0:
        p.error("--step_time must be > 0")
    return args


def build_real(real_dir: Path, work: Path) -> tuple[str, Path]:
    """Links the raw frames into prepare_cityscapes' layout, prepares them to 1024x512 PNG clips."""
    from dmvfn_jax.data.prepare import prepare_cityscapes

    raw = work / "raw" / "train" / real_dir.name
    raw.mkdir(parents=True, exist_ok=True)
    for f in sorted(real_dir.iterdir()):
        if f.is_file() and not (raw / f.name).is_symlink():
            (raw / f.name).symlink_to(f.resolve())
    manual = work / "cityscapes"
    prepare_cityscapes(work / "raw", manual, split="train", workers=os.cpu_count() or 1, log=None, progress=False)
    return "cityscapes", manual


def build_synthetic(num_clips: int, work: Path) -> tuple[str, Path]:
    """`num_clips` synthetic 30-frame 1024x512 clips as folders of PNG frames."""
    from dmvfn_jax.data.synthetic import synthetic_video
    from dmvfn_jax.image_io import save_png

    manual = work / f"synthetic{num_clips}"
    for i in range(num_clips):
        clip = manual / "train" / f"{i:06d}"
        if clip.is_dir():
            continue
        tmp = clip.with_name(f".{clip.name}.tmp")  # hidden from the builder until complete
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for t, frame in enumerate(synthetic_video(i, FRAMES, HEIGHT, WIDTH)):
            save_png(tmp / f"{t:010d}.png", frame)
        tmp.rename(clip)
    return "clip_folder", manual


def prepare_input(args, work: Path) -> dict:
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    from dmvfn_jax.data.build import build

    tfds.disable_progress_bar()
    absl_logging.set_verbosity(absl_logging.WARNING)
    t0 = time.perf_counter()
    real = args.real_dir.is_dir() and not args.synthetic
    dataset, manual = build_real(args.real_dir, work) if real else build_synthetic(args.synthetic_clips, work)
    data_dir = work / f"tfds_{manual.name}"  # one build per input, so a --work_dir holds each
    summary = build(dataset, manual, data_dir)
    clips = summary["splits"]["train"]
    if real:
        what = f"real Cityscapes frames of {args.real_dir} (2048x1024 JPEG) prepared to 1024x512 PNG"
    else:
        why = "--synthetic" if args.synthetic else f"{args.real_dir} not found"
        what = f"synthetic 1024x512 PNG clips ({why})"
    return {"input": what, "real": real, "dataset": f"dmvfn_{dataset}", "data_dir": str(data_dir),
            "clips_in_dataset": clips, "prepare_build_s": time.perf_counter() - t0}


def measure_input(data: dict, args, workers: int) -> tuple[dict, np.ndarray]:
    """Clips/s of the training input's batches with `workers` processes; also returns the warm-up batch."""
    from dmvfn_jax.data.pipeline import TfdsSource

    source = TfdsSource(data["dataset"], data["data_dir"], "train", seed=0, num_frames=FRAMES, crop_h=CROP,
                        crop_w=CROP, global_batch=args.batch, channel_order="BGR", workers=workers,
                        prefetch=args.prefetch)
    batches = source.batches(0, args.batches + 1)
    # The clock stops when the last timed batch arrives: closing the input afterwards is timed
    # apart (Grain's workers finish the batches they have started; the generator's end would
    # run that close inside the timed loop).
    with contextlib.closing(batches):  # closing stops the workers
        t0 = time.perf_counter()
        first = next(batches)
        t1 = time.perf_counter()
        for _ in range(args.batches):
            b = next(batches)
            assert b.shape == first.shape == (args.batch, FRAMES, CROP, CROP, 3), b.shape
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    clips = args.batches * args.batch
    rate = clips / (t2 - t1)
    per_process = rate / max(workers, 1)
    return {"workers": workers, "processes": max(workers, 1), "warmup_batch_s": t1 - t0,
            "timed_s": t2 - t1, "close_s": t3 - t2, "clips": clips, "clips_per_s": rate,
            "clips_per_s_per_process": per_process, "s_per_clip_per_process": 1.0 / per_process}, first


def median_row(rows: list[dict]) -> dict:
    """The row of the median clips/s of several rounds, with every round's rate."""
    ordered = sorted(rows, key=lambda r: r["clips_per_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["rounds_clips_per_s"] = [r["clips_per_s"] for r in rows]
    return row


def measure_step(args, sample: np.ndarray) -> dict:
    """Time of the official recipe's jitted training step on jax.devices()[0]."""
    import jax

    from dmvfn_jax import parallel
    from dmvfn_jax.train import optim
    from dmvfn_jax.train import step as step_lib
    from dmvfn_jax.train.build import build_model
    from workloads import load_config  # bench/workloads.py

    config = load_config("cityscapes")
    assert config.update_mode == "update_per_triplet", config.update_mode
    device = jax.devices()[0]
    batch = args.step_batch or (1 if device.platform == "cpu" else DEVICE_CLIPS)
    frames = args.step_frames
    model = build_model(config)
    optimizer = optim.make_train_optimizer(config.weight_decay)
    schedule = optim.lr_schedule(config.num_train_steps, config.warmup_steps, config.base_lr, config.peak_lr)
    net, state = step_lib.init_state(model, optimizer, config.seed)
    del model
    step_fn = step_lib.make_train_step(net, optimizer, vgg=None, update_mode=config.update_mode,
                                       estimator=config.routing.estimator, temperature=config.routing.temperature)
    mesh = parallel.data_mesh([device])
    jitted, state = step_lib.shard_train_step(step_fn, mesh, state)
    clips = np.resize(sample[:, :frames], (batch, frames) + sample.shape[2:])  # real input clips, repeated if needed
    clips = parallel.global_batch(mesh, clips)
    lr = jax.jit(schedule, out_shardings=parallel.replicated(mesh))(0)

    t0 = time.perf_counter()
    state, metrics = jitted(state, clips, lr)
    jax.block_until_ready((state, metrics))
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.step_repeats):
        t0 = time.perf_counter()
        state, metrics = jitted(state, clips, lr)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    updates = frames - 2  # update_per_triplet: one update per triplet position
    per_update = step_s / updates
    kind = device.platform if device.device_kind == device.platform else f"{device.platform} ({device.device_kind})"
    return {
        "device": kind, "update_mode": config.update_mode,
        "compute_dtype": config.get("compute_dtype", "float32"), "clips": batch, "frames": frames,
        "updates_per_step": updates, "compile_and_first_s": first, "step_s": times, "median_step_s": step_s,
        "s_per_update": per_update,
        "official_step_s": per_update * (FRAMES - 2) * (DEVICE_CLIPS / batch),
        "extrapolated": frames != FRAMES or batch != DEVICE_CLIPS,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dmvfn_bench_")))
        else:
            work = args.work_dir.expanduser().resolve()
            work.mkdir(parents=True, exist_ok=True)
        data = prepare_input(args, work)
        print(f"input: {data['input']}; {data['clips_in_dataset']} clip(s) of {FRAMES} frames in "
              f"{data['dataset']} (the source cycles through them, reshuffled per epoch); "
              f"prepare + build {data['prepare_build_s']:.1f} s")
        print(f"machine: {os.cpu_count()} CPU cores\n")

        rounds: dict[int, list[dict]] = {}
        sample = None
        for _ in range(args.rounds):  # rounds interleaved, so that drifts of the machine hit every count alike
            for w in args.workers:
                row, first = measure_input(data, args, w)
                rounds.setdefault(w, []).append(row)
                if sample is None:
                    sample = first
        rows = [median_row(rounds[w]) for w in args.workers]
    print(f"1. training input: {FRAMES} frames, {CROP}x{CROP} crop, BGR, batch {args.batch}, prefetch "
          f"{args.prefetch}; {args.batches} timed batches after 1 warm-up; median of {args.rounds} round(s)")
    print(f"{'workers':>7} {'processes':>9} {'warm-up s':>9} {'timed s':>8} {'close s':>7} "
          f"{'clips/s':>8} {'clips/s/process':>15} {'s/clip/process':>14}")
    for r in rows:
        print(f"{r['workers']:>7} {r['processes']:>9} {r['warmup_batch_s']:>9.2f} "
              f"{r['timed_s']:>8.2f} {r['close_s']:>7.2f} {r['clips_per_s']:>8.2f} "
              f"{r['clips_per_s_per_process']:>15.2f} {r['s_per_clip_per_process']:>14.3f}")

    if args.step_time is not None:
        step = {"official_step_s": args.step_time, "extrapolated": False, "given": True}
        print(f"\n2. training step: given with --step_time: {args.step_time:.3f} s per official step")
    else:
        step = measure_step(args, sample)
        print(f"\n2. training step on {step['device']}: {step['update_mode']}, {step['compute_dtype']}, no VGG, "
              f"{step['clips']} clip(s) x {step['frames']} frames at {CROP}x{CROP} = {step['updates_per_step']} "
              f"update(s) per step")
        print(f"   compile + first step {step['compile_and_first_s']:.1f} s; steps "
              f"{', '.join(f'{t:.3f}' for t in step['step_s'])} s; median {step['median_step_s']:.3f} s "
              f"= {step['s_per_update']:.3f} s per update")
        how = (f"EXTRAPOLATED: {step['s_per_update']:.3f} s/update x {FRAMES - 2} x ({DEVICE_CLIPS} / {step['clips']})"
               if step["extrapolated"] else "measured")
        print(f"   official step ({DEVICE_CLIPS} clips x {FRAMES} frames, {FRAMES - 2} updates): "
              f"{step['official_step_s']:.3f} s ({how})")

    best = max(rows, key=lambda r: r["clips_per_s_per_process"])
    demand = DEVICE_CLIPS / step["official_step_s"]
    needed = math.ceil(demand / best["clips_per_s_per_process"])
    print(f"\n3. one accelerator consumes {DEVICE_CLIPS} / {step['official_step_s']:.3f} s = {demand:.3f} clips/s; "
          f"one input process delivers {best['clips_per_s_per_process']:.2f} clips/s "
          f"(best per-process rate, workers={best['workers']})")
    print(f"   input processes needed per accelerator: ceil({demand:.3f} / {best['clips_per_s_per_process']:.2f}) "
          f"= {needed}{' (from an extrapolated step time)' if step['extrapolated'] else ''}")
    elapsed = time.perf_counter() - started
    print(f"\ntotal run time {elapsed:.0f} s")

    if args.out:
        result = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "cpu_count": os.cpu_count(),
            "data": data, "input": {"frames": FRAMES, "crop": CROP, "channel_order": "BGR", "batch": args.batch,
                                    "prefetch": args.prefetch, "timed_batches": args.batches, "rounds": args.rounds,
                                    "rows": rows},
            "step": step, "consumed_clips_per_s": demand, "best_per_process": best,
            "needed_input_processes": needed, "run_time_s": elapsed,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
