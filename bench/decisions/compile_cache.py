"""Time to the first prediction in a fresh process, without and with the persistent compilation cache.

    python bench/decisions/compile_cache.py [--size 256x448] [--fresh-model]

Writes a random-weight checkpoint to a temporary folder, then starts three processes that each
load it and predict one frame: cache off, cache on and empty (cold), cache on and filled (warm).
Prints the seconds from process start to the first prediction for each (BENCHMARKS.md).
`--fresh-model` times building a randomly initialised DMVFN instead (as `train.py` does for a new
run: about 90 small programs, one per parameter shape), from the start of the build to its
parameters being ready.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, time
t0 = float(sys.argv[1])
from dmvfn_jax.compile_cache import enable_compilation_cache
enable_compilation_cache(sys.argv[2])
import numpy as np
from dmvfn_jax.predict.predictor import Predictor
h, w = (int(v) for v in sys.argv[4].split("x"))
p = Predictor.from_checkpoint(sys.argv[3])
x = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
p.predict(x, x)
print(time.time() - t0)
"""

FRESH = """
import sys, time
from dmvfn_jax.compile_cache import enable_compilation_cache
enable_compilation_cache(sys.argv[2])
import jax
from flax import nnx
from dmvfn_jax.models import DMVFN
t0 = time.time()
jax.block_until_ready(nnx.state(DMVFN(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))))
print(time.time() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="256x448")
    ap.add_argument("--fresh-model", action="store_true", help="time building a fresh model instead")
    args = ap.parse_args()
    from dmvfn_jax.convert import convert_dmvfn
    from dmvfn_jax.convert.conversions import write_random_official

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = convert_dmvfn(write_random_official(tmp / "random.pkl", 0), tmp / "ckpt")
        results = {}
        for name, cache in (("cache off", "off"), ("cache cold", str(tmp / "xla")), ("cache warm", str(tmp / "xla"))):
            child = FRESH if args.fresh_model else CHILD
            out = subprocess.run([sys.executable, "-c", child, str(time.time()), cache, str(ckpt), args.size],
                                 capture_output=True, text=True, check=True)
            results[name] = float(out.stdout.strip().splitlines()[-1])
            what = "to build a fresh model" if args.fresh_model else f"to the first {args.size} prediction"
            print(f"{name:11s} {results[name]:6.2f} s {what}", flush=True)


if __name__ == "__main__":
    main()
