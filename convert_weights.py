"""Convert official PyTorch weights to dmvfn-jax checkpoints (and back). See --help."""

import sys

from dmvfn_jax.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
