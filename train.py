"""Train DMVFN: `python train.py --config configs/demo.py --workdir runs/demo [--config.batch_size=8]`.

Thin entry point (also installed as `dmvfn-train`); the command is `dmvfn_jax.train.cli`, the work
`dmvfn_jax.train.loop.train_and_evaluate(config, workdir)`. Run it again with the same --workdir
to resume from the latest checkpoint.
"""

import sys

from dmvfn_jax.cli import train

if __name__ == "__main__":
    sys.exit(train("train.py"))
