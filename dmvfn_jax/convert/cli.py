"""Command line of `convert_weights.py`."""

from __future__ import annotations

import argparse
import sys

from dmvfn_jax.checkpoint import CheckpointError
from dmvfn_jax.convert import api
from dmvfn_jax.convert.dmvfn_torch import ConversionError

EXAMPLES = """examples:
  python convert_weights.py dmvfn --input dmvfn_city.pkl --output checkpoints/dmvfn_city
  python convert_weights.py dmvfn --to-torch --input checkpoints/dmvfn_city --output dmvfn_city_back.pkl
  python convert_weights.py make-random --output dmvfn_random.pkl --seed 0
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="convert_weights.py",
        description="Convert official PyTorch checkpoints to dmvfn-jax checkpoints and back.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("dmvfn", help="official DMVFN state dict (dmvfn_city.pkl, ...) <-> orbax checkpoint")
    d.add_argument("--input", required=True, help="official .pkl (or, with --to-torch, a checkpoint directory)")
    d.add_argument("--output", required=True, help="checkpoint directory (or, with --to-torch, a .pkl file)")
    d.add_argument("--to-torch", action="store_true", help="write an official-format state dict from a checkpoint")
    d.add_argument(
        "--channel-order",
        default="BGR",
        choices=("BGR", "RGB"),
        help="channel order the weights were trained on (official releases: BGR)",
    )
    d.add_argument("--overwrite", action="store_true", help="replace an existing output")
    r = sub.add_parser("make-random", help="write a random-weight state dict in the official format")
    r.add_argument("--output", required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--overwrite", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.what == "make-random":
            out = api.write_random_official(args.output, args.seed, args.overwrite)
            print(f"wrote random official-format DMVFN state dict to {out}")
        elif args.to_torch:
            out = api.export_dmvfn_to_torch(args.input, args.output, args.overwrite)
            print(f"wrote official-format state dict to {out}")
        else:
            out = api.convert_dmvfn(args.input, args.output, args.overwrite, args.channel_order)
            print(f"wrote dmvfn-jax checkpoint to {out} (channel order {args.channel_order})")
    except (ConversionError, CheckpointError, FileExistsError) as e:
        print(f"convert_weights.py: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # unwritable output, a file where a folder should go, ...
        print(f"convert_weights.py: error: {e.filename or args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
