"""bfloat16 against float32 compute: prediction PSNR on real frames, and time, on the local device.

    python bench/decisions/bf16.py [--checkpoint DIR] [--size 256x448]

The network's convs run in bfloat16 (`DMVFN(dtype=jnp.bfloat16)`; parameters, flows, warps and
the merge stay float32) or in float32, with the same weights: a checkpoint, or random weights in
the official format. Inputs: consecutive frame pairs of the real Vimeo, KITTI and Cityscapes
clips (../shared/data/real), resized; each prediction is scored against the true next frame.
The target (BENCHMARKS.md): mean PSNR within 0.05 dB of float32. On a CPU bfloat16 is emulated,
so only the PSNR column means anything there; the time is for GPUs and TPUs.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for timing.py (BENCHMARKS.md, "Running")

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dmvfn_jax import checkpoint as ckpt
from dmvfn_jax.data.resize import resize_linear
from dmvfn_jax.image_io import load_image
from dmvfn_jax.models import DMVFN
from timing import median_ms  # bench/timing.py

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"  # ../shared beside the repository


def triplets(width: int, height: int) -> np.ndarray:
    """(N, 3, H, W, 3) float32 in [0, 1]: three consecutive frames of each real clip."""
    out = []
    for folder, pattern in (("vimeo_00001_0002", "im*.png"), ("kitti_0023", "*.png"),
                            ("cityscapes_aachen00", "*.jpg"), ("sam2_bedroom", "*.jpg")):
        files = sorted((REAL / folder).glob(pattern))
        for start in (0, 3):
            out.append([resize_linear(load_image(f), width, height) for f in files[start : start + 3]])
    return np.asarray(out, np.float32) / 255.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="a dmvfn-jax checkpoint (default: random official weights)")
    ap.add_argument("--size", default="256x448", help="HxW")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    if args.checkpoint:
        params, meta = ckpt.load_checkpoint(args.checkpoint)
        flip = meta.get("channel_order") == "BGR"
    else:
        from dmvfn_jax.convert.dmvfn_torch import random_official_state, torch_to_jax

        shapes = ckpt.flat_shapes(ckpt.abstract_params(lambda: DMVFN(rngs=nnx.Rngs(0))))
        params, flip = torch_to_jax(random_official_state(0), shapes), True
    clips = triplets(w, h)
    if flip:
        clips = clips[..., ::-1]
    a, b, gt = (jnp.asarray(clips[:, i]) for i in range(3))
    print(f"device {jax.devices()[0].device_kind}; {len(clips)} real triplets at {w}x{h}; "
          f"weights: {args.checkpoint or 'random (official format)'}")
    results = {}
    for name, dtype in (("float32", None), ("bfloat16", jnp.bfloat16)):
        model = ckpt.build_with_params(lambda dtype=dtype: DMVFN(rngs=nnx.Rngs(0), dtype=dtype), params, "weights")
        graphdef, state = nnx.split(model)
        f = jax.jit(lambda s, a, b: nnx.merge(graphdef, s).infer(a, b, None, sequential=False).prediction)
        pred = np.asarray(f(state, a, b), np.float64)
        psnr = -10 * np.log10(np.mean((pred - np.asarray(gt, np.float64)) ** 2, axis=(1, 2, 3)))
        results[name] = (psnr, pred, median_ms(f, state, a, b, repeats=3))
    p32, p16 = results["float32"][0], results["bfloat16"][0]
    diff = np.abs(results["float32"][1] - results["bfloat16"][1]).max()
    print(f"mean PSNR float32 {p32.mean():.3f} dB, bfloat16 {p16.mean():.3f} dB: difference {p16.mean() - p32.mean():+.4f} dB "
          f"(largest per triplet {np.abs(p16 - p32).max():.4f} dB); max pixel difference {diff:.4f}")
    print(f"time for the batch: float32 {results['float32'][2]:.0f} ms, bfloat16 {results['bfloat16'][2]:.0f} ms")


if __name__ == "__main__":
    main()
