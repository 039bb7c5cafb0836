"""Attempts 10-14 and 17 of BENCHMARKS.md, undone and redone one at a time, in one run.

    python bench/decisions/train_parts.py [--rounds 5] [--batch 8] [--variants 5 6] [--training-only]

Each variant switches on one more change than the one before:

  0. before: the transposed conv over a dilated input, the routing module's full conv before
     its mean, XLA's own gradient for the stride-2 convs, the pyramid's zero-inserted upsample;
  1. + the sub-pixel transposed conv (`ops.conv_transpose_subpixel`);
  2. + the routing module's window sums (`routing.mean_of_conv3x3`);
  3. + the sub-pixel input gradient of the stride-2 convs (`ops.conv3x3_stride2`);
  4. + the pyramid's zero-free upsample (`losses._upsample`);
  5. + the blocks' resizes as slices and adds (`ops.resize_by`);
  6. + the pyramid's axes as matrix products (attempt 17): the package as it is.

For each variant it compiles one training step (8x256x256, random official-format weights, the
official optimiser, as `bench/run.py` times it) and inference at 1x512x1024 with all blocks and
with threshold routing (`--training-only`: the step alone). Then it times them in interleaved rounds (variant 0, 1, ..., 5, then
again), so a slow patch of the machine hits every variant alike, and prints the median and
the minimum per variant. The old code paths are swapped in by replacing the package's functions
while each variant is traced; the compiled programs keep what they were traced with.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: timing.py, workloads.py

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dmvfn_jax import losses, ops
from dmvfn_jax.models import routing as routing_lib
from timing import interleaved_times  # bench/timing.py
from workloads import random_dmvfn, train_thunk  # bench/workloads.py

NAMES = ("0 before", "1 + sub-pixel transposed conv", "2 + routing window sums", "3 + stride-2 input gradient",
         "4 + zero-free upsample", "5 + resizes as slices", "6 + pyramid as matrix products (now)")


# -- the old code paths -----------------------------------------------------------------------
def _conv_transpose_dilated_only(x, kernel, bias, stride, padding):
    return ops.conv_transpose_dilated(x, kernel, stride, padding) + bias.astype(x.dtype)


def _mean_of_conv_explicit(x, kernel, bias):
    y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean(y + bias.astype(x.dtype), axis=(1, 2))


def _stride2_xla_gradient(x, kernel, precision=None):
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=precision)


def _full_blur(x, gain=1.0):
    """The pyramid's blur at every pixel (separable shifted adds with reflect padding): what
    `losses._blur_half` and `losses._upsample` computed before attempt 13."""
    _, h, w, _ = x.shape
    taps = [float(t) / 16.0 for t in losses._TAPS]
    padded = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    rows = sum(t * padded[:, k : k + h] for k, t in enumerate(taps))
    out = sum(t * rows[:, :, k : k + w] for k, t in enumerate(taps))
    return out * gain if gain != 1.0 else out


def _upsample_zero_inserted(x):
    b, h, w, c = x.shape
    return _full_blur(jnp.zeros((b, 2 * h, 2 * w, c), x.dtype).at[:, ::2, ::2, :].set(x), gain=4.0)


def _blur_then_subsample(x):
    return _full_blur(x)[:, ::2, ::2]


def _resize_by_interpolation_matrices(x, factor):
    _, h, w, _ = x.shape
    return ops.resize_bilinear(x, round(h * factor), round(w * factor))


# (module, attribute, old implementation), in the order the changes were made; variant k keeps
# the first k changes and undoes the rest.
CHANGES = (
    ((ops, "conv_transpose", _conv_transpose_dilated_only),),
    ((routing_lib, "mean_of_conv3x3", _mean_of_conv_explicit),),
    ((ops, "conv3x3_stride2", _stride2_xla_gradient),),
    ((losses, "_upsample", _upsample_zero_inserted), (losses, "_blur_half", _blur_then_subsample)),
    ((ops, "resize_by", _resize_by_interpolation_matrices),),
    ((losses, "MATRIX_MAX", 0),),  # before attempt 17 no axis ran as a matrix product
)


def traced_with(k: int, fn):
    """Calls `fn()` with changes k, k+1, ... undone, and restores the package afterwards."""
    saved = [(m, a, getattr(m, a)) for change in CHANGES[k:] for m, a, _ in change]
    try:
        for change in CHANGES[k:]:
            for m, a, old in change:
                setattr(m, a, old)
        return fn()
    finally:
        for m, a, cur in saved:
            setattr(m, a, cur)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--variants", type=int, nargs="+", choices=range(len(NAMES)), default=list(range(len(NAMES))))
    p.add_argument("--training-only", action="store_true", help="the training step only, no inference")
    args = p.parse_args()
    model = random_dmvfn()
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.random((1, 512, 1024, 3), dtype=np.float32)) for _ in range(2))
    graphdef, params = nnx.split(model)

    cases = {}  # (case, variant) -> a thunk that runs the compiled program once
    for k in args.variants:
        def compile_all(k=k):
            out = {f"training step {args.batch}x256x256": train_thunk(model, args.batch, 256)}
            for routing in () if args.training_only else ("all", "threshold"):
                run = jax.jit(lambda p, x, y, r=routing: nnx.merge(graphdef, p).predict(x, y, r).prediction)
                compiled = run.lower(params, a, b).compile()
                out[f"inference 1x512x1024, {routing}"] = lambda c=compiled: jax.block_until_ready(c(params, a, b))
            return out

        t = time.perf_counter()
        for case, thunk in traced_with(k, compile_all).items():
            thunk()  # warm-up
            cases[(case, k)] = thunk
        print(f"compiled variant {NAMES[k]} in {time.perf_counter() - t:.0f} s", flush=True)

    times = interleaved_times(cases, args.rounds)

    print(f"\ndevice {jax.devices()[0].device_kind}; {args.rounds} interleaved rounds; ms median (min)")
    for case in dict.fromkeys(c for c, _ in cases):
        print(case)
        for k in args.variants:
            name, ts = NAMES[k], times[(case, k)]
            print(f"  {name:38s} {1e3 * statistics.median(ts):8.0f} ({1e3 * min(ts):.0f})")


if __name__ == "__main__":
    main()
