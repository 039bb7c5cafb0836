"""Where the time of one jitted training step goes, op by op, from a `jax.profiler` trace.

    python bench/profile_step.py [--batch 8] [--size 256] [--top 25]

Traces one training step (the one `bench/run.py` times: random official-format weights, 3-frame
clips, the Laplacian loss, AdamW) and prints XLA's ops by total time, grouped by kind and then
one by one, each with its output shape (a 3x3 conv's kernel gradient shows as
(in, 3, 3, out)). On a CPU the ops of
both threads are summed, so the total exceeds the step's wall time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import tempfile
import time

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"

import jax  # noqa: E402
from jax.profiler import ProfileData  # noqa: E402

from workloads import random_dmvfn, train_step  # noqa: E402  (bench/workloads.py)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    jitted, state, clips = train_step(random_dmvfn(), args.batch, args.size)
    hlo = jitted.lower(state, clips).compile().as_text()
    for _ in range(2):
        state, m = jitted(state, clips)
        jax.block_until_ready(m["total"])
    with tempfile.TemporaryDirectory() as trace_dir:
        t = time.perf_counter()
        with jax.profiler.trace(trace_dir):
            state, m = jitted(state, clips)
            jax.block_until_ready(m["total"])
        wall = time.perf_counter() - t
        profile = ProfileData.from_file(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0])
    per_op, per_kind = collections.Counter(), collections.Counter()
    for plane in profile.planes:
        for line in plane.lines:
            if "XLA" not in line.name or "Client" in line.name:
                continue
            for ev in line.events:
                if ev.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
                    continue
                per_op[ev.name] += ev.duration_ns / 1e6
                per_kind[re.sub(r"\.\d+$", "", ev.name)] += ev.duration_ns / 1e6
    print(f"one training step, batch {args.batch} at {args.size}x{args.size}, {jax.devices()[0].device_kind}: "
          f"{1e3 * wall:.0f} ms wall (traced); ops {sum(per_op.values()):.0f} ms in all")
    print("\nby kind (ms):")
    for name, ms in per_kind.most_common(args.top):
        print(f"  {ms:8.1f}  {name}")
    print("\nby op (ms):")
    for name, ms in per_op.most_common(args.top):
        found = re.search(rf"^\s*%{re.escape(name)} = (\S+) ", hlo, re.M)
        print(f"  {ms:8.1f}  {name}  {found.group(1) if found else ''}")


if __name__ == "__main__":
    main()
