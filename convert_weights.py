"""Convert official PyTorch weights to dmvfn-jax checkpoints (and back). See --help.

Thin entry point, also installed as `dmvfn-convert`; the command is `dmvfn_jax.convert.cli.main`.
"""

import sys

from dmvfn_jax.cli import convert

if __name__ == "__main__":
    sys.exit(convert("convert_weights.py"))
