"""The XLA CPU settings of the test suite (tests/scripts/fast_xla.py) side by side: XLA's own (LLVM
level 2), the suite's (level 1) and LLVM's cheap settings (level 0 without the expensive passes).

    .venv/bin/python bench/decisions/compile_level.py
    .venv/bin/python bench/decisions/compile_level.py --pytest tests/test_model_parity.py tests/test_export.py

Per setting, a fresh process each (no compilation cache): the compile time of the demo config's
training step (one update of 4 clips of 3 frames at 64x64) of the suite's small model and of the
official nine, the median time of 10 steps (from the same state), and the time to build the nine with `nnx.Rngs(0)` (31
threefry initialisers compiled one by one, as docs/predict.md's example does). `--pytest FILES`
times `pytest -n 2` on those test files under each `DMVFN_JAX_TEST_XLA` setting instead, one
setting after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {  # the spellings of tests/scripts/fast_xla.py
    "default": "",
    "suite": "--xla_backend_optimization_level=1",
    "fast": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
}

CHILD = r"""
import json, sys, time
import jax, numpy as np
from flax import nnx
sys.path.insert(0, {bench!r})
from timing import median_ms
from workloads import load_config
from dmvfn_jax.data.sources import heldout_synthetic
from dmvfn_jax.models import DMVFN
from dmvfn_jax.train import build, step as S
from dmvfn_jax.train.optim import make_train_optimizer

out = {{}}
t = time.perf_counter(); jax.block_until_ready(nnx.state(DMVFN(rngs=nnx.Rngs(0)))); out["init_nine_s"] = time.perf_counter() - t
for name, blocks in (("small", dict(widths=(16, 16), scales=(2, 1))), ("nine", {{}})):
    c = load_config("demo")
    for k, v in blocks.items():
        c.model[k] = v
    opt = make_train_optimizer()
    net, state = S.init_state(build.build_model(c), opt, 0)
    step = jax.jit(S.make_train_step(net, opt, update_mode="per_batch"))
    clips, lr = heldout_synthetic(0, 4, 3, 64, 64), np.float32(1e-4)
    t = time.perf_counter(); compiled = step.lower(state, clips, lr).compile(); out[name + "_compile_s"] = time.perf_counter() - t
    out[name + "_step_ms"] = median_ms(compiled, state, clips, lr, repeats=10)  # bench/timing.py
    out[name + "_loss"] = float(compiled(state, clips, lr)[1]["total"])
print(json.dumps(out))
"""


def measure(flags: str) -> dict:
    env = {**os.environ, "XLA_FLAGS": flags, "DMVFN_JAX_CACHE": "off"}
    r = subprocess.run([sys.executable, "-c", CHILD.format(bench=str(REPO / "bench"))], env=env, cwd=REPO, capture_output=True,
                       text=True, check=False)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--pytest", nargs="+", metavar="FILE", help="time these test files under each setting")
    ap.add_argument("--out", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)
    results = {}
    for name in args.settings:
        print(f"{name}: {SETTINGS[name] or 'XLA_FLAGS empty'}", flush=True)
        if args.pytest:
            env = {**os.environ, "DMVFN_JAX_TEST_XLA": name}
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist",
                                "loadscope", *args.pytest], env=env, cwd=REPO, capture_output=True, text=True)
            results[name] = {"pytest_s": time.perf_counter() - t, "summary": r.stdout.strip().splitlines()[-1]}
            print(f"  pytest: {results[name]['pytest_s']:.0f} s ({results[name]['summary']})", flush=True)
        else:
            results[name] = measure(SETTINGS[name])
            print("  " + "  ".join(f"{k} {v:.4g}" for k, v in results[name].items()), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
