"""What XLA's CPU code-generation flags cost and save on the test suite's programs.

Most of the suite's time is compiling, not running: a test trains the demo model for a handful of
steps, and the step takes ~40 s to compile and ~0.3 s to run. `--xla_backend_optimization_level`
sets LLVM's optimisation of the generated code and `--xla_llvm_disable_expensive_passes` drops
LLVM's costliest passes (the HLO passes are the same either way). For each set of flags, in a
fresh process with the compilation cache off, this times the demo config's training step
(lower + compile, then the median of 5 steps) and an all-blocks prediction (64x64, or `--predict-size`), and prints
the loss and the parameters after 3 steps, so flags that change the numbers show up.

    python bench/compile_flags.py [--flags default "--xla_backend_optimization_level=0" ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/bench")
import jax, jax.numpy as jnp, numpy as np
from timing import median_ms
from configs import demo
from dmvfn_jax import parallel
from dmvfn_jax.data.synthetic import synthetic_clips
from dmvfn_jax.train import build, optim, step as step_lib

out = {}
config = demo.get_config()
model = build.build_model(config)
f = jax.jit(lambda a, b: model.infer(a, b).prediction)  # first: the training step donates the model's arrays
H, W = map(int, sys.argv[2].split("x"))
x = jnp.asarray(synthetic_clips(1, 1, 2, H, W).astype(np.float32) / 255)
t = time.perf_counter()
infer = f.lower(x[:, 0], x[:, 1]).compile()
out["infer_compile_s"] = time.perf_counter() - t
out["infer_ms"] = median_ms(infer, x[:, 0], x[:, 1])
opt = optim.make_train_optimizer(config.weight_decay)
graphdef, state = step_lib.init_state(model, opt, config.seed)
fn = step_lib.make_train_step(graphdef, opt, update_mode=config.update_mode)
mesh = parallel.data_mesh(jax.devices()[:1])
jitted, state = step_lib.shard_train_step(fn, mesh, state)
clips = parallel.global_batch(mesh, synthetic_clips(0, config.batch_size, 3, 64, 64))
lr = jnp.float32(1e-3)
t = time.perf_counter()
compiled = jitted.lower(state, clips, lr).compile()
out["train_compile_s"] = time.perf_counter() - t
losses = []
for _ in range(3):
    state, m = compiled(state, clips, lr)
    losses.append(float(m["total"]))
out["losses"] = losses
out["param_sum"] = float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree.leaves(state.params)))
box = [state]

def once():
    box[0], m = compiled(box[0], clips, lr)
    return m["total"]

out["train_step_ms"] = median_ms(once)
print(json.dumps(out))
"""


def run(flag_set: str, size: str) -> dict:
    env = {**os.environ, "DMVFN_JAX_CACHE": "off", "JAX_ENABLE_COMPILATION_CACHE": "false"}
    flags = env.get("XLA_FLAGS", "")
    if flag_set != "default":
        flags = f"{flags} {flag_set}".strip()
    env["XLA_FLAGS"] = flags
    r = subprocess.run([sys.executable, "-c", CHILD, str(REPO), size], capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode:
        raise SystemExit(f"{flag_set}: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flags", nargs="+", default=[
        "default", "--xla_backend_optimization_level=0", "--xla_backend_optimization_level=1",
        "--xla_llvm_disable_expensive_passes=true",
        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"])
    p.add_argument("--predict-size", default="64x64", help="HxW of the all-blocks prediction")
    args = p.parse_args()
    rows = {flag_set: run(flag_set, args.predict_size) for flag_set in args.flags}
    print(f"| XLA_FLAGS | step compile s | step ms | {args.predict_size} prediction compile s | prediction ms | losses of 3 steps | sum of abs(params) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for flag_set, r in rows.items():
        print(f"| {flag_set} | {r['train_compile_s']:.1f} | {r['train_step_ms']:.0f} | {r['infer_compile_s']:.1f} | "
              f"{r['infer_ms']:.1f} | {' '.join(f'{v:.9g}' for v in r['losses'])} | {r['param_sum']:.9g} |")


if __name__ == "__main__":
    main()
