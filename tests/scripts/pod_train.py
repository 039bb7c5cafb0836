"""Run as a script: `train.py --distributed` as one process of two on this machine (CPU, gloo
collectives, a localhost coordinator), the suite's small model, with an optional fault delivered to
this process just before one step: the pod faults of tests/test_pod_faults.py.

    python tests/scripts/pod_train.py PROCESS_ID PORT WORKDIR FAULT STEP [TRAIN.PY FLAGS...]

FAULT is "none", "kill" (SIGKILL: the process is lost), "stop" (SIGSTOP: the process hangs, its
sockets open, so the others' collectives wait instead of failing) or "term" (SIGTERM: a preemption
notice to this process alone), sent to itself as it feeds step STEP (counted from 0 in this launch).
Every step is paced to at least PACE seconds: JAX's preemption notifier looks for SIGTERM once a
second, and the small model's steps take milliseconds.
"""

import os
import signal
import sys
import time
from pathlib import Path

from fast_xla import xla_flags  # tests/scripts, this script's folder
from small_model import SMALL_MODEL_FLAGS

pid, port, workdir, fault, at = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
os.environ["XLA_FLAGS"] = xla_flags("--xla_force_host_platform_device_count=1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dmvfn_jax import parallel  # noqa: E402
from dmvfn_jax.train import cli  # noqa: E402

PACE = 0.1

if pid != "0":
    # JAX writes the persistent compilation cache from process 0 only, and on CPU a cache key holds
    # the process's own topology, so process 1 never reads process 0's entries: it compiled every
    # program in every launch of the pod-fault tests (about 10 s of CPU a launch, which process 0
    # waited for at the first step). Here process 1 stores its own entries, read by its next launches.
    import jax
    from jax._src import compilation_cache, compiler

    def _cache_write(cache_key, compile_time_secs, module_name, backend, executable, host_callbacks):
        if not host_callbacks and compile_time_secs >= jax.config.jax_persistent_cache_min_compile_time_secs:
            compilation_cache.put_executable_and_time(cache_key, module_name, executable, backend,
                                                      int(compile_time_secs))

    assert callable(compiler._cache_write), "jax._src.compiler._cache_write is gone: see above"
    compiler._cache_write = _cache_write
feed, fed = parallel.global_batch, [0]


def global_batch(*args, **kwargs):  # the loop calls it once per step, before the step
    if fed[0] == at and fault != "none":
        os.kill(os.getpid(), {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "term": signal.SIGTERM}[fault])
    fed[0] += 1
    time.sleep(PACE)
    return feed(*args, **kwargs)


parallel.global_batch = global_batch

sys.argv = ["train.py", "--config", str(REPO / "configs" / "demo.py"), "--workdir", workdir, "--distributed",
            "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", pid,
            *SMALL_MODEL_FLAGS, "--config.eval.num_clips=0", "--config.image_every=0", *sys.argv[6:]]
cli.run()
