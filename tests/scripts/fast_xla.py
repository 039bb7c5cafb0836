"""The XLA CPU settings of the suite, the one spelling it uses.

`SUITE_XLA`, the suite's default (tests/conftest.py sets it, and the commands the tests start
inherit it): LLVM at optimisation level 1 instead of 2. The nine's training step compiles
5-25% faster (the small model's within noise), the steps run within noise to a fifth slower, and
the nine's threefry initialisers three times as fast
(`bench/decisions/compile_level.py`; BENCHMARKS.md, Decisions). `DMVFN_JAX_TEST_XLA=default` runs
the suite at XLA's own settings.

`FAST_XLA`, LLVM's cheap settings: programs compile about 38% faster and run 1.5-2.4x slower
(BENCHMARKS.md, Decisions); numbers move by about 1e-7 relative (LLVM's code differs, the HLO
passes do not). The helper scripts whose cost is compiling and that compare programs compiled
under the same settings (one device against eight, one process against two, the collectives of a
compiled program) use them; `DMVFN_JAX_TEST_XLA=fast` turns them on for the whole suite.
"""

import os

SUITE_XLA = "--xla_backend_optimization_level=1"
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
LEVELS = {"suite": SUITE_XLA, "fast": FAST_XLA, "default": ""}  # the values of DMVFN_JAX_TEST_XLA


def xla_flags(*extra: str, level: str = "fast") -> str:
    """`XLA_FLAGS` of this process's environment with the suite's and the cheap settings taken out,
    then `extra`, then the settings of `level`: "suite", "fast", "default" (XLA's own) or "inherit"
    (whichever of them this process runs at): the one place the suite builds it."""
    env = os.environ.get("XLA_FLAGS", "").split()
    if level == "inherit":
        level = "fast" if FAST_XLA.split()[-1] in env else "suite" if SUITE_XLA in env else "default"
    ours = {f for v in LEVELS.values() for f in v.split()}
    return " ".join([f for f in env if f not in ours] + [f for f in extra if f] + LEVELS[level].split())
