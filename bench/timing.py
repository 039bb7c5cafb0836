"""The timers every bench script uses: repeated calls of one function, and interleaved rounds of
several. Each call's result is waited for (`jax.block_until_ready`) when JAX is loaded; a PyTorch
process (`bench/run.py`'s PyTorch side, whose memory is measured) never imports it from here."""

import statistics
import sys
import time


def _wait(result):
    if "jax" in sys.modules:
        sys.modules["jax"].block_until_ready(result)


def times_s(f, *args, repeats: int = 5, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of `f(*args)`, after `warmup` calls."""
    for _ in range(warmup):
        _wait(f(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        _wait(f(*args))
        times.append(time.perf_counter() - t)
    return times


def median_ms(f, *args, repeats: int = 5, warmup: int = 1) -> float:
    """Median milliseconds of `f(*args)` over `repeats` calls after `warmup` calls."""
    return 1e3 * statistics.median(times_s(f, *args, repeats=repeats, warmup=warmup))


def interleaved_times(cases: dict, rounds: int) -> dict:
    """Seconds per call of each thunk in `cases`, over `rounds` rounds that call every thunk
    once in turn, so that a slow patch of the machine hits every case alike."""
    times = {key: [] for key in cases}
    for r in range(rounds):
        for key, thunk in cases.items():
            t = time.perf_counter()
            _wait(thunk())
            times[key].append(time.perf_counter() - t)
        print(f"round {r + 1}/{rounds} done", flush=True)
    return times
