"""Makes the README's picture: one prediction of a checkpoint on real frames, taken apart.

    python docs/make_readme_picture.py --checkpoint runs/demo/model \\
        --frames ../shared/data/real/vimeo_00001_0002 --start 0 --output docs/demo_prediction.png

Frames START and START+1 of the folder (sorted by name) are the inputs and frame START+2 the
ground truth; they are resized to `--width` pixels wide before prediction. The picture is
`visualize.prediction_strip` (inputs, prediction, truth, error, both voxel flows, fusion mask,
blocks that ran, flow key), saved as a dithered 256-colour PNG to stay small (~110 KB). The PSNR of the prediction
and of copy-last-frame are printed, for the caption.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dmvfn_jax import visualize as viz
from dmvfn_jax.errors import InputError, run_command
from dmvfn_jax.image_io import list_frames, load_image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a.astype(np.float64) - b) ** 2)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--frames", required=True, help="a folder of frames")
    p.add_argument("--start", type=int, default=0, help="index of frame t-1 (default 0)")
    p.add_argument("--width", type=int, default=224, help="frames are resized to this width (default 224)")
    p.add_argument("--routing", default="threshold", choices=("all", "threshold", "sample"))
    p.add_argument("--output", required=True, help="the PNG to write")
    args = p.parse_args(argv)

    def body():
        from dmvfn_jax.files import atomic_file
        from dmvfn_jax.predict.predictor import Predictor

        files = list_frames(args.frames)[args.start:args.start + 3]
        if len(files) < 3:
            raise InputError(f"{args.frames}: needs 3 frames from index {args.start}, has {len(files)}")
        frames = []
        for f in files:
            img = Image.fromarray(load_image(f))
            h = max(1, round(img.height * args.width / img.width))
            frames.append(np.asarray(img.resize((args.width, h), Image.BILINEAR), np.float32) / 255.0)
        prev, cur, truth = frames
        res = Predictor.from_checkpoint(args.checkpoint).predict_full(prev, cur, routing=args.routing)
        pred, flow, mask, gates = (np.asarray(x[0]) for x in res)
        pic = viz.prediction_strip(prev, cur, pred, flow, mask, gates, target=truth)
        im = Image.fromarray(pic)
        palette = im.quantize(256, method=Image.Quantize.FASTOCTREE)
        with atomic_file(args.output) as tmp:  # 256 colours, dithered: a third of the size, gradients intact
            im.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(tmp, format="PNG", optimize=True)
        size = Path(args.output).stat().st_size
        print(f"frames {files[0].name}, {files[1].name} -> {files[2].name} at {prev.shape[1]}x{prev.shape[0]}; "
              f"blocks {[i for i, g in enumerate(gates) if g > 0]}")
        print(f"PSNR t+1: DMVFN {psnr(pred, truth):.2f} dB, copy last frame {psnr(cur, truth):.2f} dB")
        print(f"wrote {args.output} ({pic.shape[1]}x{pic.shape[0]}, {size / 1024:.0f} KB)")

    return run_command("make_readme_picture", body)


if __name__ == "__main__":
    sys.exit(main())
