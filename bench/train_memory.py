"""Where the training step's memory goes on a CPU, JAX against PyTorch, in one run.

    python bench/train_memory.py [--batch 8] [--size 256]

Each implementation runs in its own subprocess and reports its resident set (RSS) after the
imports, after building the model and optimiser, after compiling (JAX) and at its peak over
three training steps. For JAX it also reports XLA's memory analysis of the compiled step: the
temporary buffer it preallocates for all intermediate values, and the arguments and outputs.
The training step is the one `bench/run.py` times (random official-format weights, 3-frame
clips, the Laplacian loss, AdamW); the PyTorch side is the oracle of the parity tests
(`dmvfn_jax.parity`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_now() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def rss_peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def jax_worker(batch: int, size: int) -> dict:
    out = {}
    import jax

    from workloads import random_dmvfn, train_step  # bench/workloads.py

    out["imports"] = rss_now()
    jitted, state, clips = train_step(random_dmvfn(), batch, size)
    out["model"] = rss_now()
    compiled = jitted.lower(state, clips).compile()
    out["compiled"] = rss_now()
    analysis = compiled.memory_analysis()
    out["xla_temp"] = analysis.temp_size_in_bytes / 2**30
    out["xla_arguments"] = analysis.argument_size_in_bytes / 2**30
    out["xla_outputs"] = analysis.output_size_in_bytes / 2**30
    for _ in range(3):
        state, m = jitted(state, clips)
        jax.block_until_ready(m["total"])
    out["peak"] = rss_peak()
    return out


def torch_worker(batch: int, size: int) -> dict:
    out = {}
    import numpy as np
    import torch

    from dmvfn_jax.convert.dmvfn_torch import random_official_state
    from dmvfn_jax.parity import torch_dmvfn as tdm
    from dmvfn_jax.parity import torch_losses as tl

    torch.set_num_threads(os.cpu_count() or 1)
    out["imports"] = rss_now()
    model = tdm.TorchDMVFN()
    model.load_state_dict({k.removeprefix("module."): torch.from_numpy(np.asarray(v))
                           for k, v in random_official_state(0).items()})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
    clips = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, 3, 3, size, size), dtype=np.uint8))
    out["model"] = rss_now()
    for _ in range(3):
        f = clips.float() / 255.0
        img0, img1, gt = f[:, 0], f[:, 1], f[:, 2]
        v = model.routing_probs(img0, img1)
        g = v + (torch.bernoulli(v) - v).detach()
        loss = tl.dmvfn_loss(model.forward_train(img0, img1, g), gt)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    out["peak"] = rss_peak()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "jax":
        print(json.dumps(jax_worker(args.batch, args.size)))
        return 0
    if args.worker == "torch":
        print(json.dumps(torch_worker(args.batch, args.size)))
        return 0
    env = {**os.environ, "DMVFN_JAX_CACHE": "off"}
    res = {}

    def worker(impl):
        r = subprocess.run([sys.executable, __file__, "--worker", impl, "--batch", str(args.batch), "--size",
                            str(args.size)], capture_output=True, text=True, env=env, cwd=REPO)
        if r.returncode:
            raise SystemExit(f"{impl} worker failed:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    for impl in ("jax", "torch"):
        res[impl] = worker(impl)
    print(f"training step, batch {args.batch} at {args.size}x{args.size}; GiB")
    print(f"{'':28s} {'JAX':>6s} {'PyTorch':>8s}")
    for key, label in (("imports", "RSS after the imports"), ("model", "RSS with model, optimiser"),
                       ("compiled", "RSS after compiling"), ("peak", "peak RSS over 3 steps")):
        j, t = res["jax"].get(key), res["torch"].get(key)
        print(f"{label:28s} {j:6.2f} {(f'{t:8.2f}' if t is not None else '       -')}")
    j = res["jax"]
    print(f"XLA's compiled step: temporary buffer {j['xla_temp']:.2f}, arguments {j['xla_arguments']:.2f}, "
          f"outputs {j['xla_outputs']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
