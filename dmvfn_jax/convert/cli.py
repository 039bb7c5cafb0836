"""Command line of `convert_weights.py`."""

from __future__ import annotations

import argparse
import sys

from dmvfn_jax.convert import conversions
from dmvfn_jax.errors import run_command

EXAMPLES = """examples:
  python convert_weights.py dmvfn --input dmvfn_city.pkl --output checkpoints/dmvfn_city
  python convert_weights.py dmvfn --to-torch --input checkpoints/dmvfn_city --output dmvfn_city_back.pkl
  python convert_weights.py make-random --output dmvfn_random.pkl --seed 0
  python convert_weights.py vgg19 --input vgg19-dcbee2f5.pth --output checkpoints/vgg19
  python convert_weights.py lpips --alexnet alexnet-owt-7be5be79.pth --output checkpoints/lpips
"""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "convert_weights.py",
        description="Convert PyTorch checkpoints (official DMVFN, torchvision VGG19, LPIPS AlexNet) to dmvfn-jax and back.",
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
    v = sub.add_parser(
        "vgg19", help="torchvision VGG19 weights (vgg19-dcbee2f5.pth) -> checkpoint for the training loss"
    )
    v.add_argument("--input", required=True, help="torchvision VGG19 state dict (.pth)")
    v.add_argument("--output", required=True, help="checkpoint directory (features up to relu5_1)")
    v.add_argument("--overwrite", action="store_true", help="replace an existing output")
    lp = sub.add_parser(
        "lpips", help="torchvision AlexNet + the lpips package's linear layers -> LPIPS v0.1 checkpoint (eval.py)"
    )
    lp.add_argument("--alexnet", required=True, help="torchvision AlexNet state dict (alexnet-owt-7be5be79.pth)")
    lp.add_argument("--linear", default=None,
                    help="lpips/weights/v0.1/alex.pth (default: the one inside the installed lpips package)")
    lp.add_argument("--output", required=True, help="checkpoint directory")
    lp.add_argument("--overwrite", action="store_true", help="replace an existing output")
    r = sub.add_parser("make-random", help="write a random-weight state dict in the official format")
    r.add_argument("--output", required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--overwrite", action="store_true")
    return p


def main(argv=None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)

    def body():
        if args.what == "make-random":
            out = conversions.write_random_official(args.output, args.seed, args.overwrite)
            print(f"wrote random official-format DMVFN state dict to {out}")
        elif args.what == "lpips":
            out = conversions.convert_lpips(args.alexnet, args.output, args.linear, args.overwrite)
            print(f"wrote LPIPS (AlexNet, v0.1) checkpoint to {out}")
        elif args.what == "vgg19":
            out = conversions.convert_vgg19(args.input, args.output, args.overwrite)
            print(f"wrote VGG19 features checkpoint to {out} (features[0:29], up to relu5_1)")
        elif args.to_torch:
            out = conversions.export_dmvfn_to_torch(args.input, args.output, args.overwrite)
            print(f"wrote official-format state dict to {out}")
        else:
            out = conversions.convert_dmvfn(args.input, args.output, args.overwrite, args.channel_order)
            print(f"wrote dmvfn-jax checkpoint to {out} (channel order {args.channel_order})")

    return run_command(prog or "convert_weights.py", body)


if __name__ == "__main__":
    sys.exit(main())
