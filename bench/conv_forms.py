"""The whole network with each formulation of its 17-channel convs, side by side in one run.

    python bench/conv_forms.py [--rounds 5] [--sizes 256x448,512x1024] [--skip-train]

Variants: `DMVFN(conv_form=...)` set to each form of `dmvfn_jax.models.mvfb.FORMS` ("plain": one
conv over the 17 channels, as the official code). The model's default (None) is `mvfb.choose_form`
of the backend and size, printed first: this run is what the CPU choice rests on. Cases: batch-1
inference with all blocks at each size (256x448 and 512x1024 by default) and with threshold routing
at the last, and one training step (8x256x256, random official-format weights, the official
optimiser, as `bench/run.py` times it). Programs are compiled first, then timed in interleaved
rounds, so a slow patch of this noisy machine hits every variant alike; median (minimum) ms per
variant.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dmvfn_jax.models import mvfb
from timing import interleaved_times  # bench/timing.py
from workloads import random_dmvfn, train_thunk  # bench/workloads.py

VARIANTS = mvfb.FORMS
SIZES = "256x448,512x1024"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=8, help="of the training step")
    p.add_argument("--sizes", default=SIZES, help="HxW list for inference (all blocks; the last size also routed)")
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args()
    sizes = [tuple(map(int, hw.split("x"))) for hw in args.sizes.split(",")]
    inference = [(f"{h}x{w}", h, w, "all") for h, w in sizes]
    inference.append((inference[-1][0], *sizes[-1], "threshold"))
    rng = np.random.default_rng(0)
    frames = {(h, w): [jnp.asarray(rng.random((1, h, w, 3), dtype=np.float32)) for _ in range(2)]
              for h, w in sizes}
    choice = {f"1x{h}x{w}": mvfb.choose_form(jax.default_backend(), 1, h, w) for h, w in sizes}
    if not args.skip_train:
        choice[f"{args.batch}x256x256"] = mvfb.choose_form(jax.default_backend(), args.batch, 256, 256)
    print(f"device {jax.devices()[0].device_kind}; the model's choice on this backend: {choice}", flush=True)

    cases = {}  # (case, variant) -> a thunk that runs the compiled program once
    for form in VARIANTS:
        t = time.perf_counter()
        model = random_dmvfn(conv_form=form)  # the same random weights in every form
        graphdef, params = nnx.split(model)
        for size, h, w, routing in inference:
            a, b = frames[(h, w)]
            run = jax.jit(lambda p, x, y, r=routing, g=graphdef: nnx.merge(g, p).predict(x, y, r).prediction)
            compiled = run.lower(params, a, b).compile()
            thunk = lambda c=compiled, p=params, a=a, b=b: jax.block_until_ready(c(p, a, b))  # noqa: E731
            thunk()
            cases[(f"inference 1x{size}, {routing}", form)] = thunk
        if not args.skip_train:
            train_once = train_thunk(model, args.batch, 256)
            train_once()
            cases[(f"training step {args.batch}x256x256", form)] = train_once
        print(f"compiled {form} in {time.perf_counter() - t:.0f} s", flush=True)

    times = interleaved_times(cases, args.rounds)

    print(f"\n{args.rounds} interleaved rounds; ms median (min)")
    print("| case | " + " | ".join(VARIANTS) + " |\n" + "| --- " * (len(VARIANTS) + 1) + "|")
    for case in dict.fromkeys(c for c, _ in cases):
        cells = [f"{1e3 * statistics.median(times[(case, f)]):.0f} ({1e3 * min(times[(case, f)]):.0f})"
                 for f in VARIANTS]
        print(f"| {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
