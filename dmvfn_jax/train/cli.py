"""The training command (`train.py`, `dmvfn-train`): absl flags and a config file, then
`dmvfn_jax.train.loop.train_and_evaluate(config, workdir)`.

    python train.py --config configs/demo.py --workdir runs/demo [--config.batch_size=8]

Run it again with the same --workdir to resume from the latest checkpoint.
"""

import logging
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Python config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and the final model go.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for --distributed launches "
                    "that JAX cannot auto-detect (auto-detected: Cloud TPU, SLURM, Open MPI).")
flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator_address.")
flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator_address.")
# The coordination settings of a multi-process run (README, "Several hosts"). JAX's defaults are
# 300, 100 and 300 s: a pod's hosts may start minutes apart (images, libtpu), so initialisation
# waits 600; a lost process is found by the watchdog (train/pod.py) in --peer_timeout seconds, long
# before JAX's heartbeat timeout would abort the survivors.
flags.DEFINE_integer("initialization_timeout", 600, "--distributed: seconds every process waits for the others "
                     "to connect at start.")
flags.DEFINE_integer("heartbeat_timeout", 100, "--distributed: seconds without heartbeats after which JAX's "
                     "coordination service declares a process dead (and aborts the others).")
flags.DEFINE_integer("shutdown_timeout", 300, "--distributed: seconds a finished process waits at exit for the "
                     "others (process 0 exports and evaluates the model after the last step).")
flags.DEFINE_integer("peer_timeout", 30, "--distributed: seconds without a beat from another process after which "
                     "this one stops with one line and exit status 75 (a lost process); under --heartbeat_timeout.")
flags.mark_flags_as_required(["config", "workdir"])
_PROG = ["train.py"]  # how errors name the command (`run` sets it)


def main(argv):
    del argv
    import jax

    from dmvfn_jax.compile_cache import enable_compilation_cache

    enable_compilation_cache()  # $DMVFN_JAX_CACHE, default ~/.cache/dmvfn_jax/xla; "off" disables

    from dmvfn_jax.errors import InputError, quiet_orbax_noise, report_error
    from dmvfn_jax.train import pod

    watchdog = None
    if FLAGS.distributed:
        if not 0 < FLAGS.peer_timeout < FLAGS.heartbeat_timeout:
            report_error(_PROG[0], f"--peer_timeout ({FLAGS.peer_timeout}) must be positive and under "
                         f"--heartbeat_timeout ({FLAGS.heartbeat_timeout})")
            return 1
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU-only runs; no effect on GPU/TPU
        pod.initialize(_PROG[0], FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                       FLAGS.initialization_timeout, heartbeat_timeout_seconds=FLAGS.heartbeat_timeout,
                       shutdown_timeout_seconds=FLAGS.shutdown_timeout)
        if jax.process_count() > 1:
            watchdog = pod.Watchdog(FLAGS.peer_timeout, _stop_lost).start()
    from dmvfn_jax.train.loop import TrainingDiverged, train_and_evaluate

    quiet_orbax_noise()
    try:
        summary = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except pod.PeerLost as e:  # which process: the one whose beats stopped
        silent = watchdog.silent_peers()  # PeerLost: a run of several processes, so --distributed's watchdog
        if silent == []:  # every other process still beats: the failure is this process's own
            raise e.__cause__ from None
        who = ("process 0 (the coordination service) is lost" if silent is None else
               f"process {', '.join(map(str, silent))} {'is' if len(silent) == 1 else 'are'} lost")
        _stop_lost(f"{who}: {e}")
    except (InputError, TrainingDiverged) as e:
        report_error(_PROG[0], str(e))
        return 1
    except OSError as e:  # an unwritable workdir, a folder where a file should go, ...
        report_error(_PROG[0], f"{e.filename or FLAGS.workdir}: {e.strerror or e}")
        return 1
    if watchdog is not None:
        watchdog.done()
    return 0 if summary["status"] in ("completed", "preempted") else 1


def _stop_lost(what: str) -> None:
    """A process of the run is lost: this one prints its line and exits (`pod.exit_now`)."""
    from dmvfn_jax.train import pod

    pod.exit_now(_PROG[0], pod.lost_line(what, Path(FLAGS.workdir)))


def run(prog: str = "train.py") -> None:
    """Parses sys.argv with absl and exits with the command's status; errors begin with `prog`."""
    _PROG[0] = prog
    # the flags are defined here, not in the script that runs: make them the script's own, so
    # that `--help` lists them (absl lists the flags of the main module, named by sys.argv[0])
    for name in ("config", "workdir", "distributed", "coordinator_address", "num_processes", "process_id",
                 "initialization_timeout", "heartbeat_timeout", "shutdown_timeout", "peer_timeout"):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    # absl prints Python's INFO records, and JAX logs at INFO each backend it tried and did not
    # find ("Unable to initialize backend 'tpu'" on every machine without one): not an error, so
    # not the first line of a run. Warnings and errors of JAX's backends still show.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    app.run(lambda argv: sys.exit(main(argv)))
