"""The commands, as `[project.scripts]` installs them (`dmvfn-predict`, `dmvfn-train`, ...) and as the
top-level scripts (`train.py`, `eval.py`, `convert_weights.py`) call them.

Each checks that the optional part of the install it needs is there before importing anything
from it, so that a missing extra is one line naming it (`dmvfn_jax.extras`), then runs the
command's own `main`. The `python -m dmvfn_jax.<module>` forms run the same `main`s.
"""

from __future__ import annotations

import importlib

from dmvfn_jax import extras
from dmvfn_jax.errors import report_error


def _run(prog: str, extra: str | None, purpose: str, module: str, function: str = "main"):
    """`module.function(prog=prog)` once `extra` is installed; `prog` names the command in its usage
    and error lines (`dmvfn-eval: error: ...` for the console command, `eval.py: error: ...` for the script)."""
    if extra is not None:
        try:
            extras.require(extra, purpose)
        except extras.MissingExtra as e:
            report_error(prog, str(e))
            return 1
    return getattr(importlib.import_module(module), function)(prog=prog)


def predict(prog: str = "dmvfn-predict") -> int:
    return _run(prog, None, "", "dmvfn_jax.predict.command")


def train(prog: str = "dmvfn-train") -> int:
    return _run(prog, "train", "training", "dmvfn_jax.train.cli", "run")


def evaluate(prog: str = "dmvfn-eval") -> int:
    return _run(prog, "data", "evaluation (it reads TFDS builds)", "dmvfn_jax.evaluation.run")


def convert(prog: str = "dmvfn-convert") -> int:
    return _run(prog, "torch", "converting PyTorch checkpoints", "dmvfn_jax.convert.cli")


def build(prog: str = "dmvfn-build") -> int:
    return _run(prog, "data", "building TFDS datasets", "dmvfn_jax.data.build")


def prepare(prog: str = "dmvfn-prepare") -> int:
    return _run(prog, None, "", "dmvfn_jax.data.prepare")


def export(prog: str = "dmvfn-export") -> int:
    return _run(prog, None, "", "dmvfn_jax.deploy.export")


def plan(prog: str = "dmvfn-plan") -> int:
    return _run(prog, "train", "planning a training run", "dmvfn_jax.planning.plan")
