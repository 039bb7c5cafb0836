"""The demo trained with routing options side by side: t+1 PSNR (threshold routing and all blocks)
and how the routing depends on the input (the demo's routing report on its held-out pairs: moving,
still, shifted).

    .venv/bin/python bench/decisions/routing_cost.py --root runs/routing_cost --weights 0 0.05 0.2
    .venv/bin/python bench/decisions/routing_cost.py --root runs/routing_opts \
        --runs official: free:routing.rescale=False,routing.cost_weight=0.05,data.still_fraction=0.25

`--weights`: each weight W trains `configs/demo.py` with `--config.routing.cost_weight=W` into
ROOT/cost_W. `--runs NAME:KEY=VALUE,...`: each trains it with those config overrides into
ROOT/NAME. A finished run is not trained again. One run after another; then the table. About 5
minutes a run on a 2-core CPU.
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
    ap.add_argument("--weights", type=float, nargs="*", default=[])
    ap.add_argument("--runs", nargs="*", default=[], metavar="NAME:KEY=VALUE,...")
    args = ap.parse_args(argv)
    runs = [(f"cost_{w:g}", [f"routing.cost_weight={w}"]) for w in args.weights]
    for spec in args.runs:
        name, _, sets = spec.partition(":")
        if not name or "/" in name:
            ap.error(f"--runs {spec!r}: NAME:KEY=VALUE,... with a NAME for the run's folder")
        runs.append((name, [s for s in sets.split(",") if s]))
    if not runs:
        ap.error("give --weights or --runs")
    rows = []
    for name, sets in runs:
        workdir = args.root / name
        cmd = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs" / "demo.py"),
               "--workdir", str(workdir), *[f"--config.{s}" for s in sets]]
        print(f"{name} ({', '.join(sets) or 'the demo config'}): {workdir}", flush=True)
        if not (workdir / "results.json").exists():
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows.append((name, *t1_and_report(json.loads((workdir / "results.json").read_text()))))
    width = max(len(r[0]) for r in rows)
    print(f"{'run':>{width}s} {'PSNR t+1':>9s} {'all blocks':>10s} {'copy-last':>9s} {'patterns':>8s} {'blocks':>7s} "
          f"{'still':>6s} {'moving':>6s} {'shifted':>7s}  most common pattern")
    for name, ours, every, copy, r in rows:
        k = r["by_kind"]
        print(f"{name:>{width}s} {ours:9.2f} {every:10.2f} {copy:9.2f} {r['distinct_patterns']:8d} {r['blocks']['mean']:7.2f} "
              f"{k['still']['mean_blocks']:6.2f} {k['moving']['mean_blocks']:6.2f} {k['shifted']['mean_blocks']:7.2f}  "
              f"{r['most_common_pattern']}")
    return 0


def t1_and_report(results: dict) -> tuple:
    """(t+1 PSNR routed, all blocks, copy-last, routing report) of a run's results.json: eval.py's
    keys, or those of a run evaluated before the demo went through eval.py's evaluation (3aae53f)."""
    if "psnr" in results:
        p = results["psnr"]
        return p["DMVFN (threshold)"]["t+1"], p["DMVFN (all)"]["t+1"], p["copy last frame"]["t+1"], results["routing"]
    r = results["results"]
    return (*(r[v]["psnr"]["per_step"][0] for v in ("dmvfn", "dmvfn_all_blocks", "copy_last")),
            results["routing_report"])


if __name__ == "__main__":
    sys.exit(main())
