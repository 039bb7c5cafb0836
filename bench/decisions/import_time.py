"""How long `import jax` takes in a fresh process, with the installed ml_dtypes and with others side
by side (BENCHMARKS.md, Decisions: ml_dtypes below 0.7). Every command (train.py, eval.py, predict,
the tests' helper processes) pays it once.

    python bench/decisions/import_time.py [--runs 7] [DIR ...]

Each DIR holds another ml_dtypes, put in front of the installed one on PYTHONPATH, e.g.
`pip install --no-deps --target /tmp/mld07 ml_dtypes==0.7.0`. The variants take turns, run after
run, so that a slower period of the machine falls on all of them.
"""

import argparse
import os
import statistics
import subprocess
import sys

PROBE = ("import time; t = time.perf_counter(); import jax, ml_dtypes; "
         "print(ml_dtypes.__version__, time.perf_counter() - t)")


def one_import(path: str | None) -> tuple[str, float]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    # cwd /: `-c` puts the working folder first on sys.path, and / holds no package to shadow ml_dtypes
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True, cwd="/")
    version, seconds = out.stdout.split()
    return version, float(seconds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("dirs", nargs="*", help="folders each holding another ml_dtypes")
    args = parser.parse_args(argv)
    variants = [None, *args.dirs]
    times: dict = {v: [] for v in variants}
    versions = {}
    for _ in range(args.runs):
        for v in variants:
            versions[v], seconds = one_import(v)
            times[v].append(seconds)
    for v in variants:
        t = times[v]
        print(f"ml_dtypes {versions[v]:8s} ({v or 'installed'}): import jax median {statistics.median(t):.2f} s, "
              f"min {min(t):.2f} s over {len(t)} runs")


if __name__ == "__main__":
    main()
