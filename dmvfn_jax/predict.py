"""Predict the next frame(s) of two frames with a dmvfn-jax checkpoint.

    python -m dmvfn_jax.predict --checkpoint DIR --frames A.png B.png --output OUT [--steps N]
                                [--routing all|threshold|sample] [--seed S]

`--frames` takes two image files, or a folder (its last two frames by name). OUT:
- ends in `.npy`: the float32 predictions, shape (steps, H, W, 3), RGB in [0, 1];
- ends in `.gif`: an animation of the two inputs followed by the predictions;
- ends in `.png`: the prediction (with `--steps > 1`: NAME_01.png ... and NAME.gif beside it);
- anything else: a folder with pred_01.png ... (and rollout.gif for `--steps > 1`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from dmvfn_jax.errors import run_command
from dmvfn_jax.image_io import FrameError, load_image, resolve_frames, save_gif, save_npy, save_png


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dmvfn_jax.predict",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (from convert_weights.py or training)")
    p.add_argument("--frames", required=True, nargs="+", help="two frames, or a folder of frames")
    p.add_argument("--output", required=True, help="output file (.png, .gif, .npy) or folder")
    p.add_argument("--steps", type=int, default=1, help="frames to predict autoregressively (default 1)")
    p.add_argument("--routing", default="threshold", choices=("all", "threshold", "sample"))
    p.add_argument("--seed", type=int, default=0, help="seed for --routing sample")
    return p


def write_outputs(out: Path, inputs: list[np.ndarray], preds: np.ndarray) -> list[Path]:
    """Writes predictions (steps, H, W, 3) in the format the output path asks for."""
    steps = preds.shape[0]
    suffix = out.suffix.lower()
    written = []
    if suffix == ".npy":
        written.append(save_npy(out, preds.astype(np.float32)))
    elif suffix == ".gif":
        written.append(save_gif(out, list(inputs) + list(preds)))
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps < 1:
        print("predict: error: --steps must be >= 1", file=sys.stderr)
        return 2

    def body():
        files = resolve_frames(args.frames, 2)
        frames = [load_image(f) for f in files]
        if frames[0].shape != frames[1].shape:
            raise FrameError(
                f"{files[0]} is {frames[0].shape[1]}x{frames[0].shape[0]} but {files[1]} is "
                f"{frames[1].shape[1]}x{frames[1].shape[0]}; both frames must have the same size"
            )
        from dmvfn_jax.predictor import Predictor

        t0 = time.perf_counter()
        predictor = Predictor.from_checkpoint(args.checkpoint)
        print(f"loaded {args.checkpoint} (channel order {predictor.channel_order}) in {time.perf_counter() - t0:.1f}s")
        print(f"frames: {files[0]} , {files[1]} ({frames[0].shape[1]}x{frames[0].shape[0]})")
        t0 = time.perf_counter()
        preds = predictor.rollout(frames, args.steps, routing=args.routing, seed=args.seed)
        print(f"predicted {args.steps} frame(s) with routing={args.routing} in {time.perf_counter() - t0:.1f}s")
        for path in write_outputs(Path(args.output), frames, preds):
            print(f"wrote {path}")

    return run_command("predict", body)


if __name__ == "__main__":
    sys.exit(main())
