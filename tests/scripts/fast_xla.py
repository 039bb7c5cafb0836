"""LLVM's cheap settings for XLA's CPU backend, the one spelling the suite uses.

Programs compile about 38% faster and run 1.5-2.4x slower (BENCHMARKS.md, Decisions);
numbers move by about 1e-7 relative (LLVM's code differs, the HLO passes do not). The helper
scripts whose cost is compiling and that compare programs compiled under the same settings
(one device against eight, one process against two, the collectives of a compiled program) use
them; `DMVFN_JAX_TEST_XLA=fast` turns them on for the whole suite (tests/conftest.py).
"""

import os

FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def xla_flags(*extra: str, fast: bool = True) -> str:
    """`XLA_FLAGS` of this process's environment with the cheap settings taken out, then `extra`
    and (with `fast`) the cheap settings appended once: the one place the suite builds it."""
    flags = os.environ.get("XLA_FLAGS", "").replace(FAST_XLA, "").split()
    return " ".join(flags + [f for f in extra if f] + (FAST_XLA.split() if fast else []))
