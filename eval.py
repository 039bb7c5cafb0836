"""Evaluate a DMVFN checkpoint with the official protocols: `python eval.py --help`.

Thin entry point, also installed as `dmvfn-eval`; the command is `dmvfn_jax.evaluation.run.main`.
"""

import sys

from dmvfn_jax.cli import evaluate

if __name__ == "__main__":
    sys.exit(evaluate("eval.py"))
