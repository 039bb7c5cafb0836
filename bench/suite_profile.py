"""Where the test suite's CPU time goes: per test, the processes it ran, their CPU time, and JAX's
compile, trace and compilation-cache-read seconds.

    python bench/suite_profile.py --out DIR [-- PYTEST ARGS]    # run pytest with the hook, then summarise
    python bench/suite_profile.py --summary DIR [--top 40]       # summarise an earlier run

Every Python process of the run (the pytest workers and every command a test starts) loads
`bench/suite_hook/sitecustomize.py` through PYTHONPATH and writes one JSON record at exit; a
process killed by a signal (the tests' SIGKILLs) writes none, and a test that starts its commands
with an environment of its own without PYTHONPATH is not seen. The in-process rows are the
workers' JAX events while that test was current (their CPU time is in the workers' rows); the
`sub` rows are the commands the test started (their CPU time is theirs). Without pytest
arguments it runs `make test`'s selection (the Makefile's XDIST workers over `tests`) with a fresh cache.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOOK = Path(__file__).resolve().parent / "suite_hook"
COMPILE, TRACE, CACHE = "backend_compile_duration", "jaxpr_trace_duration", "cache_retrieval_time_sec"


def make_test_args() -> list[str]:
    """pytest's arguments as `make test` gives them: the Makefile's `XDIST := ...` over `tests`."""
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("XDIST") and ":=" in line:
            return ["-q", *line.split(":=", 1)[1].split(), "-p", "no:cacheprovider", "tests"]
    raise SystemExit(f"{REPO / 'Makefile'}: no `XDIST := ...` line to take make test's arguments from")


def summarise(folder: Path, top: int) -> None:
    rows = collections.defaultdict(collections.Counter)
    total = collections.Counter()
    for f in glob.glob(str(folder / "*.json")):
        r = json.loads(Path(f).read_text())
        started_by = r["test"].split(" ")[0]
        who = f"sub {started_by}" if started_by else "worker " + " ".join(r["argv"][:2])
        rows[who]["processes"] += 1
        rows[who]["cpu"] += r["cpu_s"]
        total["processes"] += 1
        total["cpu"] += r["cpu_s"]
        for test, events in r["events"].items():
            key = who if started_by else (test or who)
            for name, (n, secs) in events.items():
                short = name.rsplit("/", 1)[-1]
                rows[key][short] += secs
                total[short] += secs
                if short == COMPILE:
                    rows[key]["compiles"] += n
                    total["compiles"] += n
    print(f"{'procs':>5} {'cpu s':>7} {'compile s':>9} {'compiles':>8} {'trace s':>7} {'cache read s':>12}  test")
    order = sorted(rows.items(), key=lambda kv: -max(kv[1]["cpu"], kv[1][COMPILE]))
    for key, c in order[:top] + [("TOTAL", total)]:
        print(f"{c['processes']:5d} {c['cpu']:7.1f} {c[COMPILE]:9.1f} {c['compiles']:8d} {c[TRACE]:7.1f} "
              f"{c[CACHE]:12.1f}  {key}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for the records of a new run (created)")
    p.add_argument("--summary", type=Path, help="summarise the records in this folder")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments")
    args = p.parse_args(argv)
    if args.summary:
        summarise(args.summary, args.top)
        return 0
    if not args.out:
        p.error("give --out DIR (a new run) or --summary DIR")
    if args.out.exists():
        p.error(f"--out {args.out} exists: give a new folder (its records would mix with an earlier run's)")
    args.out.mkdir(parents=True)
    pytest_args = args.pytest_args or make_test_args()
    with tempfile.TemporaryDirectory(prefix="suite_profile_cache_") as cache:
        env = {**os.environ, "SUITE_PROFILE_OUT": str(args.out.resolve()), "DMVFN_JAX_TEST_CACHE": cache,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(HOOK), os.environ.get("PYTHONPATH")]))}
        rc = subprocess.run([sys.executable, "-m", "pytest", *pytest_args], cwd=REPO, env=env).returncode
    summarise(args.out, args.top)
    return rc


if __name__ == "__main__":
    sys.exit(main())
