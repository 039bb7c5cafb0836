"""The BENCHMARKS.md TPU table: `python -m dmvfn_jax.planning.plan` for the official Cityscapes recipe on
several slices, in float32 and bfloat16, one subprocess per plan.

    .venv/bin/python bench/tpu_plan.py [--topologies v4-8,v5e-8,...] [--dtypes float32,bfloat16] [--out FILE]
    .venv/bin/python bench/tpu_plan.py --table bench/tpu_plan.json
    .venv/bin/python bench/tpu_plan.py --assemble DIR [DIR ...] --out FILE   # rows from saved plan JSONs
    .venv/bin/python bench/tpu_plan.py --merge NEW.json [NEW.json ...] --out FILE  # NEW's rows replace FILE's

The recipe: configs/cityscapes.py with 8 clips of 30 frames at 256x256 per chip (the official 8
per GPU; `--per-chip-batch 8`, the schedule scaled to the same 300 epochs), update per triplet
(28 updates a step), Bernoulli routing, the Laplacian + VGG19 loss (`--vgg`). Needs libtpu
(`make plan-deps`); no TPU. Every figure is a compiler figure or a lower bound: see the table's
notes.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGIES = ("v4-8", "v5e-8", "v5e-256", "v5p-128", "v6e-256")
DTYPES = ("float32", "bfloat16")


def run_plan(topology: str, dtype: str, work: Path) -> dict:
    out = work / f"{topology}_{dtype}.json"
    cmd = [sys.executable, "-m", "dmvfn_jax.planning.plan", "--config", "configs/cityscapes.py", "--topology", topology,
           "--per-chip-batch", "8", "--vgg", f"--config.compute_dtype={dtype}", "--json", str(out)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0 and not out.exists():
        return {"topology": topology, "dtype": dtype, "error": (r.stderr.strip().splitlines() or ["?"])[-1],
                "plan_s": elapsed}
    plan = json.loads(out.read_text())
    return {"topology": topology, "dtype": dtype, "plan": plan, "stdout": r.stdout, "plan_s": elapsed}


def official_clips() -> int:
    """Clips the official Cityscapes schedule trains on: configs/cityscapes.py's steps x batch."""
    from workloads import load_config  # bench/workloads.py

    c = load_config("cityscapes")
    return c.num_train_steps * c.batch_size


def table(rows: list[dict]) -> str:
    """The markdown table; the schedule column is ceil(official clips / global batch) steps at the
    step bound (what `--per-chip-batch` plans, recomputed so that every row uses the same rule); the
    warp column is the form the plan compiled (`step.warp`; "-" for plans made before it was
    recorded: XLA's gathers) with the blocks' layout where recorded (`step.layout`: "cells" on a TPU
    since 2026-12-07, pixels before), and the date the row's run (`--merge`)."""
    clips = official_clips()
    head = ("| planned | warp, layout | slice | dtype | chips (hosts) | HBM per chip: total / capacity (compiler) | fits | "
            "collectives per step "
            "(compiler) | TFLOP per chip-step (compiler) | step time, lower bound | official schedule, lower bound "
            "| input processes per host, at most |")
    lines = [head, "|" + "|".join([" --- "] * 12) + "|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row.get('date', '')} | | {row['topology']} | {row['dtype']} | | {row['error']} | no "
                         "| | | | | |")
            continue
        p = row["plan"]
        t, m, r = p["topology"], p["memory_per_chip"], p["roofline"]
        coll = ", ".join(f"{v['runs']} {k} ({v['bytes'] / v['runs'] / 2**20:.1f} MiB each)"
                         for k, v in p["collectives"].items())
        procs = p["input"]["processes_per_host"]
        lines.append(
            f"| {row.get('date', '')} | {p['step'].get('warp', '-')}"
            f"{', ' + p['step']['layout'] if 'layout' in p['step'] else ''} | {t['cloud']} ({t['libtpu']}) | {row['dtype']} | "
            f"{t['chips']} ({t['hosts']}) | "
            f"{m['total'] / 2**30:.2f} / {m['hbm'] / 2**30:.2f} GiB | {'yes' if m['fits'] else '**no**'} | {coll} | "
            f"{p['per_chip']['flops'] / 1e12:.2f} | {r['step_lower_bound_s']:.2f} s "
            f"({'compute' if r['compute_s'] >= r['memory_s'] else 'HBM'}) | "
            f"{math.ceil(clips / p['step']['global_batch'])} steps: "
            f"{math.ceil(clips / p['step']['global_batch']) * r['step_lower_bound_s'] / 3600:.2f} h | "
            f"{procs if procs is not None else '?'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topologies", default=",".join(TOPOLOGIES))
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    ap.add_argument("--table", type=Path, default=None, help="print the table of a saved --out file and exit")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="--out files of later runs: their rows replace --out's rows of the same slice and dtype "
                         "(each row keeps the date of its run; where-the-HBM-goes reports cut to their top 20)")
    ap.add_argument("--assemble", type=Path, nargs="+", default=None,
                    help="folders of TOPOLOGY_DTYPE.json plans (from an interrupted run): write --out from them")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())["rows"]))
        return 0
    if args.merge:
        if args.out is None:
            ap.error("--merge needs --out (the file whose rows the new ones replace)")
        merged = merge(json.loads(args.out.read_text()), [json.loads(p.read_text()) for p in args.merge])
        print(table(merged["rows"]))
        args.out.write_text(json.dumps(merged, indent=2) + "\n")
        return 0
    if args.assemble:
        found = {p.stem: p for d in args.assemble for p in d.glob("*_*.json")}
        rows = [{"topology": t, "dtype": d, "plan": json.loads(found[f"{t}_{d}"].read_text())}
                for t in args.topologies.split(",") for d in args.dtypes.split(",") if f"{t}_{d}" in found]
        print(table(rows))
        if args.out:
            args.out.write_text(json.dumps({"command": "bench/tpu_plan.py (assembled from its plan files)",
                                            "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for topology in args.topologies.split(","):
            for dtype in args.dtypes.split(","):
                row = run_plan(topology, dtype, Path(work))
                rows.append(row)
                print(f"{topology} {dtype}: {row.get('error') or 'planned'} in {row['plan_s']:.0f} s", flush=True)
                if "stdout" in row:
                    print(row["stdout"], flush=True)
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(["bench/tpu_plan.py", *(argv or sys.argv[1:])]),
                                        "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
    return 0


def merge(base: dict, later: list[dict], top: int = 20) -> dict:
    """`base`'s rows with those of the `later` runs in place of the same (topology, dtype), each row
    stamped with its run's date and its plan's where-the-HBM-goes report cut to `top` sources."""
    def stamp(row, date):
        row = {"date": row.get("date", date), **row}
        report = row.get("plan", {}).get("hbm_report")
        if report and len(report["by_source"]) > top:
            report["by_source"] = report["by_source"][:top]
            report["cut_to"] = top
        return row

    rows = [stamp(r, base.get("date", "")) for r in base["rows"]]
    for run in later:
        for new in run["rows"]:
            new = stamp(new, run.get("date", ""))
            new.pop("stdout", None)
            keys = [i for i, r in enumerate(rows) if (r["topology"], r["dtype"]) == (new["topology"], new["dtype"])]
            if keys:
                rows[keys[0]] = new
            else:
                rows.append(new)
    return {"command": "bench/tpu_plan.py (rows of several runs, each with its date)", "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
