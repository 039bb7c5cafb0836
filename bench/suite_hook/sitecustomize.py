"""Loaded by every Python process started with this folder on PYTHONPATH (`bench/suite_profile.py`):
when SUITE_PROFILE_OUT names a folder, the process writes there at exit its CPU time, its wall
time, the pytest test it ran for (PYTEST_CURRENT_TEST, which the commands a test starts inherit)
and JAX's compile, trace and cache-read durations, attributed to the test that was current
when each happened. Standard library only; JAX is hooked once something else imported it."""

import atexit
import importlib.abc
import importlib.util
import json
import os
import resource
import sys
import time

_OUT = os.environ.get("SUITE_PROFILE_OUT")
_T0 = time.time()
_events: dict = {}
_KEEP = ("compile", "cache", "trace")


def _listen(name, secs, **_):
    if any(k in name for k in _KEEP):
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        entry = _events.setdefault(test, {}).setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += secs


class _HookJax(importlib.abc.MetaPathFinder):
    """Registers `_listen` as soon as JAX's monitoring module is imported (by whatever imports
    jax), and costs nothing in a process that never imports it."""

    def find_spec(self, name, path, target=None):
        if name != "jax._src.monitoring":
            return None
        sys.meta_path.remove(self)  # the real finders find it; this one steps aside for good
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.register_event_duration_secs_listener(_listen)

        spec.loader.exec_module = exec_module
        return spec


def _dump():
    r = resource.getrusage(resource.RUSAGE_SELF)
    record = {"argv": sys.argv[:6], "test": os.environ.get("PYTEST_CURRENT_TEST", ""),
              "wall_s": time.time() - _T0, "cpu_s": r.ru_utime + r.ru_stime, "events": _events}
    with open(os.path.join(_OUT, f"{os.getpid()}.json"), "w") as f:
        json.dump(record, f)


if _OUT:
    sys.meta_path.insert(0, _HookJax())
    atexit.register(_dump)
