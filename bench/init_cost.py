"""What drawing a DMVFN's random weights costs in a fresh process: `DMVFN(rngs=nnx.Rngs(0))`
(JAX's default threefry key) against an `rbg` key (as train.py draws them), for the official nine
and the test suite's small model, cache off, one fresh process per case.

    python bench/init_cost.py

Eagerly, every parameter shape's initialiser compiles a program of its own on first use; the
threefry ones compile slowly on XLA's CPU backend.
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests" / "scripts")]  # workloads.py; the suite's small model

from small_model import SMALL_MODEL  # noqa: E402  (what it measures is the test suite's model)
from workloads import run_fresh  # noqa: E402

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import jax
from flax import nnx
from dmvfn_jax.models import DMVFN
key, blocks = sys.argv[2], {k: tuple(v) for k, v in json.loads(sys.argv[3]).items()}
t = time.perf_counter()
rngs = nnx.Rngs(0) if key == "threefry" else nnx.Rngs(jax.random.key(0, impl="rbg"))
m = DMVFN(rngs=rngs, **blocks)
jax.block_until_ready(nnx.state(m))
first = time.perf_counter() - t
t = time.perf_counter()
jax.block_until_ready(nnx.state(DMVFN(rngs=rngs, **blocks)))
print(json.dumps({"first_s": first, "second_s": time.perf_counter() - t}))
"""


def main() -> None:
    print("| model | key | first model s | second model s |")
    print("| --- | --- | --- | --- |")
    small = f"small ({', '.join(map(str, SMALL_MODEL['widths']))} at {', '.join(map(str, SMALL_MODEL['scales']))})"
    for model, blocks in (("official", {}), (small, SMALL_MODEL)):
        for key in ("threefry", "rbg"):
            r = run_fresh(CHILD, key, json.dumps(blocks))
            print(f"| {model} | {key} | {r['first_s']:.1f} | {r['second_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
