"""`python -m dmvfn_jax.predict`: the predict command (`command.py`)."""

import sys

from dmvfn_jax.predict.command import main

sys.exit(main())
