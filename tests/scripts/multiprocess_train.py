"""Run as a script: a tiny training run of the suite's small model (small_model.py) as one process
of `num_processes` (CPU, gloo collectives).

    python tests/scripts/multiprocess_train.py PROCESS_ID NUM_PROCESSES PORT WORKDIR LOCAL_DEVICES
"""

import os
import sys
from pathlib import Path

from fast_xla import xla_flags  # tests/scripts, this script's folder

pid, nproc, port, workdir, local_devices = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
# LLVM's cheap settings: three steps, mostly compiling, in every process of both layouts (the
# compared runs are compiled under the same settings).
os.environ["XLA_FLAGS"] = xla_flags(f"--xla_force_host_platform_device_count={local_devices}")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if nproc > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)

from configs import demo  # noqa: E402
from dmvfn_jax.train.loop import train_and_evaluate  # noqa: E402
from small_model import SMALL_MODEL  # noqa: E402  (tests/scripts)

c = demo.get_config()
c.model.widths, c.model.scales = SMALL_MODEL["widths"], SMALL_MODEL["scales"]  # what is checked is the processes
c.num_train_steps, c.warmup_steps, c.log_every, c.image_every = 3, 1, 1, 0
c.checkpoint_every = 2
c.eval.num_clips = 0
summary = train_and_evaluate(c, workdir)
assert jax.device_count() == 2, jax.devices()
print(f"process {jax.process_index()}/{jax.process_count()} done: step {summary['step']}", flush=True)
