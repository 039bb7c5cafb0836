"""The timing helper the bench scripts share."""

import statistics
import time

import jax


def median_ms(f, *args, repeats: int = 5, warmup: int = 1) -> float:
    """Median milliseconds of `f(*args)` (results waited for) over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)
