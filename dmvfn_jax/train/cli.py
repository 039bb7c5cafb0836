"""The training command (`train.py`, `dmvfn-train`): absl flags and a config file, then
`dmvfn_jax.train.loop.train_and_evaluate(config, workdir)`.

    python train.py --config configs/demo.py --workdir runs/demo [--config.batch_size=8]

Run it again with the same --workdir to resume from the latest checkpoint.
"""

import sys

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
flags.mark_flags_as_required(["config", "workdir"])
_PROG = ["train.py"]  # how errors name the command (`run` sets it)


def main(argv):
    del argv
    import jax

    from dmvfn_jax.compile_cache import enable_compilation_cache

    enable_compilation_cache()  # $DMVFN_JAX_CACHE, default ~/.cache/dmvfn_jax/xla; "off" disables

    if FLAGS.distributed:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU-only runs; no effect on GPU/TPU
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    from dmvfn_jax.errors import InputError, quiet_orbax_noise, report_error
    from dmvfn_jax.train.loop import TrainingDiverged, train_and_evaluate

    quiet_orbax_noise()
    try:
        summary = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (InputError, TrainingDiverged) as e:
        report_error(_PROG[0], str(e))
        return 1
    except OSError as e:  # an unwritable workdir, a folder where a file should go, ...
        report_error(_PROG[0], f"{e.filename or FLAGS.workdir}: {e.strerror or e}")
        return 1
    return 0 if summary["status"] in ("completed", "preempted") else 1


def run(prog: str = "train.py") -> None:
    """Parses sys.argv with absl and exits with the command's status; errors begin with `prog`."""
    _PROG[0] = prog
    # the flags are defined here, not in the script that runs: make them the script's own, so
    # that `--help` lists them (absl lists the flags of the main module, named by sys.argv[0])
    for name in ("config", "workdir", "distributed", "coordinator_address", "num_processes", "process_id"):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    app.run(lambda argv: sys.exit(main(argv)))
