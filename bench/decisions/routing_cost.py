"""The demo trained with the routing's compute-cost term at several weights, side by side: t+1 PSNR
(threshold routing and all blocks) and how the routing depends on the input (the demo's routing
report on its held-out pairs: moving, still, shifted).

    .venv/bin/python bench/decisions/routing_cost.py --root runs/routing_cost --weights 0 0.05 0.2

Each weight trains `configs/demo.py` with `--config.routing.cost_weight=W` into ROOT/cost_W (a
finished run is only evaluated again), one after another; then the table. About 3 minutes a run on
a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.05, 0.2])
    args = ap.parse_args(argv)
    rows = []
    for w in args.weights:
        workdir = args.root / f"cost_{w:g}"
        cmd = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs" / "demo.py"),
               "--workdir", str(workdir), f"--config.routing.cost_weight={w}"]
        print(f"cost_weight {w:g}: {workdir}", flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = json.loads((workdir / "results.json").read_text())
        psnr, r = results["psnr"], results["routing"]
        rows.append((w, psnr["DMVFN (threshold)"]["t+1"], psnr["DMVFN (all)"]["t+1"], psnr["copy last frame"]["t+1"], r))
    print(f"{'cost_weight':>11s} {'PSNR t+1':>9s} {'all blocks':>10s} {'copy-last':>9s} {'patterns':>8s} {'blocks':>7s} "
          f"{'still':>6s} {'moving':>6s} {'shifted':>7s}  most common pattern")
    for w, ours, every, copy, r in rows:
        k = r["by_kind"]
        print(f"{w:11g} {ours:9.2f} {every:10.2f} {copy:9.2f} {r['distinct_patterns']:8d} {r['blocks']['mean']:7.2f} "
              f"{k['still']['mean_blocks']:6.2f} {k['moving']['mean_blocks']:6.2f} {k['shifted']['mean_blocks']:7.2f}  "
              f"{r['most_common_pattern']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
