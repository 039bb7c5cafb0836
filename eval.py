"""Evaluate a DMVFN checkpoint with the official protocols: `python eval.py --help`."""

import sys

from dmvfn_jax.evaluation.run import main

if __name__ == "__main__":
    sys.exit(main())
