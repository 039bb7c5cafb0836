"""The evaluation's autoregressive rollout inside `jit`: unrolled (a Python loop) against one `lax.scan`.

    python bench/decisions/eval_scan.py [--size 256x256] [--horizons 1,5] [--models small,nine]

A jitted program like the evaluation step's (`dmvfn_jax.evaluation.step`): the model's threshold-
routed prediction rolled out for `horizon` steps from two frames, each prediction scored by PSNR,
SSIM and MS-SSIM against a frame of the clip, through `models.rollout` with `scan=False` (the loop
traced `horizon` times, each prediction scored as it comes) or `scan=True` (one traced step, the
predictions stacked and scored at once, as the evaluation step does). Per model and horizon: the XLA compile
time of each, a call's median time, and the largest difference of the scores. Decision 35 in
BENCHMARKS.md. The nine's weights are random (rbg key); `small` is the tests' two-block model.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for timing.py (BENCHMARKS.md, "Running")

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dmvfn_jax.evaluation import metrics
from dmvfn_jax.models import DMVFN
from dmvfn_jax.models.dmvfn import rollout
from timing import median_ms  # bench/timing.py

MODELS = {"small": {"widths": (16, 16), "scales": (2, 1)}, "nine": {}}  # small: tests/scripts/small_model.py


def program(graphdef, horizon: int, scan: bool):
    scores = (metrics.psnr, metrics.ssim, metrics.ms_ssim)

    def fn(params, clips):
        model = nnx.merge(graphdef, params)
        frames = clips.astype(jnp.float32) / 255.0

        def predict(a, b, k):
            return model.predict(a, b, "threshold").prediction

        if scan:  # the evaluation step's form: one traced step, then every prediction scored at once
            preds = rollout(lambda a, b, k: (lambda p: (p, p))(predict(a, b, k)), frames[:, 0], frames[:, 1], horizon,
                            scan=True)  # (horizon, B, H, W, 3)
            x = preds.reshape((-1,) + preds.shape[2:])
            y = jnp.moveaxis(frames[:, 2:], 1, 0).reshape(x.shape)
            return jnp.stack([f(x, y).reshape(horizon, -1).sum(1) for f in scores], axis=1)
        outs = rollout(predict, frames[:, 0], frames[:, 1], horizon)  # traced `horizon` times
        return jnp.stack([jnp.stack([f(o, frames[:, 2 + k]).sum() for f in scores]) for k, o in enumerate(outs)])

    return jax.jit(fn)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256x256", help="HxW")
    ap.add_argument("--horizons", default="1,5")
    ap.add_argument("--models", default="small,nine")
    args = ap.parse_args(argv)
    h, w = map(int, args.size.split("x"))
    print(f"device: {jax.devices()[0].device_kind}; one clip at {h}x{w}; XLA_FLAGS as set in the environment")
    print("| model | horizon | compile: unrolled s | compile: scan s | call: unrolled ms | call: scan ms | max score diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models.split(","):
        graphdef, params = nnx.split(DMVFN(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), **MODELS[name]))
        for horizon in map(int, args.horizons.split(",")):
            clips = np.random.default_rng(0).integers(0, 256, (1, 2 + horizon, h, w, 3), dtype=np.uint8)
            row = {}
            for scan in (False, True):
                t = time.perf_counter()
                compiled = program(graphdef, horizon, scan).lower(params, clips).compile()
                seconds = time.perf_counter() - t
                row[scan] = (seconds, median_ms(compiled, params, clips), np.asarray(compiled(params, clips)))
            diff = float(np.max(np.abs(row[True][2] - row[False][2])))
            print(f"| {name} | {horizon} | {row[False][0]:.1f} | {row[True][0]:.1f} | {row[False][1]:.0f} | "
                  f"{row[True][1]:.0f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
