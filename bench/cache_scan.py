"""Cost of a compilation-cache write as the cache folder fills, with a size limit (as the test suite sets).

    python bench/cache_scan.py [--entries 0,5000,20000] [--ops 40]

With `jax_compilation_cache_max_size` set (tests/conftest.py sets 1 TiB to get JAX's per-entry
file lock), JAX's LRU cache lists and stats every entry of the folder, and reads its access-time
file, on every write. For each folder size, a fresh process enables the cache on a copy of a folder
holding that many dummy entries and runs `--ops` small eager computations of new shapes (three
programs each: arange, multiply, sum, each compiled as an op outside `jit` in a test is), once
storing every compilation (`min_compile_seconds` 0, the package's default) and once storing only
those of at least 1 s (none of these). Prints seconds.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, time
import jax
from dmvfn_jax.compile_cache import enable_compilation_cache
enable_compilation_cache(sys.argv[1], min_compile_seconds=float(sys.argv[3]))
jax.config.update("jax_compilation_cache_max_size", 2**40)
import jax.numpy as jnp
t0 = time.perf_counter()
for i in range(int(sys.argv[2])):
    (jnp.arange(i + 5, dtype=jnp.float32) * 2.0).sum().block_until_ready()  # a new shape: a new program
print(time.perf_counter() - t0)
"""


def dummy_folder(root: Path, n: int) -> Path:
    folder = root / f"base_{n}"
    folder.mkdir()
    stamp = time.time_ns().to_bytes(8, "little")
    for i in range(n):
        (folder / f"dummy{i:07d}-cache").write_bytes(b"x" * 1000)
        (folder / f"dummy{i:07d}-atime").write_bytes(stamp)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", default="0,5000,20000", help="dummy entries in the folder, comma-separated")
    ap.add_argument("--ops", type=int, default=40, help="distinct eager ops per process")
    args = ap.parse_args()
    print("| entries in the folder | store every compilation, s | store compilations of 1 s or more, s |")
    print("| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in (int(v) for v in args.entries.split(",")):
            base = dummy_folder(root, n)
            times = []
            for threshold in ("0", "1.0"):
                folder = root / f"run_{n}_{threshold}"
                shutil.copytree(base, folder)
                out = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(args.ops), threshold],
                                     capture_output=True, text=True, check=True).stdout
                times.append(float(out.strip().splitlines()[-1]))
                shutil.rmtree(folder)
            shutil.rmtree(base)
            print(f"| {n} | {times[0]:.1f} | {times[1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
