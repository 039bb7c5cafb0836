"""Predict the next frame(s) of two frames, or of a video, with a dmvfn-jax checkpoint.

    python -m dmvfn_jax.predict --checkpoint DIR (--frames A.png B.png | --video FILE [--start K])
                                --output OUT [--steps N] [--routing all|threshold|sample] [--seed S]
                                [--fps F]

Input, one of:
- `--frames A.png B.png`: two image files (t-1, t), or a folder (its last two frames by name);
  a single video file given to `--frames` is read as with `--video`.
- `--video FILE`: a video file (.mp4, .avi, .mov, .mkv, .webm, ...), decoded with OpenCV, whose
  PyPI wheel bundles FFmpeg (`pip install 'dmvfn-jax[video]'`; no system ffmpeg needed). The
  context is frames K and K+1 (0-based) with `--start K`, else the video's last two frames.

OUT:
- ends in `.npy`: the float32 predictions, shape (steps, H, W, 3), RGB in [0, 1];
- ends in `.gif` or `.mp4`: an animation (MP4: `mp4v`, written with OpenCV) of the two inputs
  followed by the predictions, at `--fps` frames per second (default 4);
- ends in `.png`: the prediction (with `--steps > 1`: NAME_01.png ... and NAME.gif beside it);
- anything else: a folder with pred_01.png ... (and rollout.gif for `--steps > 1`).

`--steps N > 1` shows a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from dmvfn_jax.errors import report_error, run_command
from dmvfn_jax.progress import ProgressBar
from dmvfn_jax.image_io import (FrameError, is_video, load_image, load_video_frames, resolve_frames, save_gif, save_npy,
                                save_png)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m dmvfn_jax.predict",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (from convert_weights.py or training)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--frames", nargs="+", help="two frames, or a folder of frames (or one video file)")
    src.add_argument("--video", help="a video file; the context is its last two frames, or --start K")
    p.add_argument("--start", type=int, default=None,
                   help="with a video: use frames K and K+1 (0-based) as the context (default: the last two)")
    p.add_argument("--output", required=True, help="output file (.png, .gif, .mp4, .npy) or folder")
    p.add_argument("--steps", type=int, default=1, help="frames to predict autoregressively (default 1)")
    p.add_argument("--routing", default="threshold", choices=("all", "threshold", "sample"))
    p.add_argument("--seed", type=int, default=0, help="seed for --routing sample")
    p.add_argument("--fps", type=float, default=4.0, help="frames per second of .gif / .mp4 outputs (default 4)")
    return p


def write_outputs(out: Path, inputs: list[np.ndarray], preds: np.ndarray, fps: float = 4.0) -> list[Path]:
    """Writes predictions (steps, H, W, 3) in the format the output path asks for."""
    steps = preds.shape[0]
    suffix = out.suffix.lower()
    written = []
    if suffix == ".npy":
        written.append(save_npy(out, preds.astype(np.float32)))
    elif suffix == ".gif":
        written.append(save_gif(out, list(inputs) + list(preds), fps=fps))
    elif suffix == ".mp4":
        from dmvfn_jax.image_io import write_mp4

        written.append(write_mp4(out, list(inputs) + list(preds), fps=fps))
    elif suffix == ".png":
        if steps == 1:
            written.append(save_png(out, preds[0]))
        else:
            for k, frame in enumerate(preds, 1):
                written.append(save_png(out.with_name(f"{out.stem}_{k:02d}.png"), frame))
            written.append(save_gif(out.with_suffix(".gif"), list(inputs) + list(preds)))
    else:
        out.mkdir(parents=True, exist_ok=True)
        for k, frame in enumerate(preds, 1):
            written.append(save_png(out / f"pred_{k:02d}.png", frame))
        if steps > 1:
            written.append(save_gif(out / "rollout.gif", list(inputs) + list(preds)))
    return written


def read_inputs(args) -> tuple[list[np.ndarray], str]:
    """The two context frames (uint8 RGB) and a line saying where they came from."""
    video = args.video
    if video is None and len(args.frames) == 1 and is_video(args.frames[0]):
        video = args.frames[0]
    if video is not None:
        frames, idx = load_video_frames(video, args.start, 2)
        return frames, f"frames: {video} frames {idx[0]}, {idx[1]} ({frames[0].shape[1]}x{frames[0].shape[0]})"
    if args.start is not None:
        raise FrameError("--start K chooses the context frames of a video; it needs --video FILE")
    files = resolve_frames(args.frames, 2)
    frames = [load_image(f) for f in files]
    if frames[0].shape != frames[1].shape:
        raise FrameError(
            f"{files[0]} is {frames[0].shape[1]}x{frames[0].shape[0]} but {files[1]} is "
            f"{frames[1].shape[1]}x{frames[1].shape[0]}; both frames must have the same size"
        )
    return frames, f"frames: {files[0]} , {files[1]} ({frames[0].shape[1]}x{frames[0].shape[0]})"


def main(argv=None, prog: str | None = None) -> int:
    """`prog`: the command's name in its usage and error lines (the console command's; default the
    `python -m` form)."""
    args = build_parser(prog).parse_args(argv)
    name = prog or "predict"
    from dmvfn_jax.compile_cache import enable_compilation_cache

    enable_compilation_cache()  # a second run starts fast; DMVFN_JAX_CACHE=off disables
    if args.steps < 1:
        report_error(name, "--steps must be >= 1")
        return 2
    if not args.fps > 0:
        report_error(name, "--fps must be > 0")
        return 2

    def body():
        frames, where = read_inputs(args)
        from dmvfn_jax.predict.predictor import Predictor

        t0 = time.perf_counter()
        predictor = Predictor.from_checkpoint(args.checkpoint)
        print(f"loaded {args.checkpoint} (channel order {predictor.channel_order}) in {time.perf_counter() - t0:.1f}s")
        print(where)
        t0 = time.perf_counter()
        bar = ProgressBar(args.steps, "frames predicted", log=None) if args.steps > 1 else None
        if bar is not None:
            bar.start()
        try:
            preds = predictor.rollout(frames, args.steps, routing=args.routing, seed=args.seed,
                                      on_step=(lambda k: bar.advance(1)) if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        print(f"predicted {args.steps} frame(s) with routing={args.routing} in {time.perf_counter() - t0:.1f}s")
        for path in write_outputs(Path(args.output), frames, preds, fps=args.fps):
            print(f"wrote {path}")

    return run_command(name, body)


if __name__ == "__main__":
    sys.exit(main())
