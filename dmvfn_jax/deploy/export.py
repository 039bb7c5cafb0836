"""Export the next-frame predictor as a StableHLO or ONNX artifact that runs without dmvfn_jax.

    python -m dmvfn_jax.deploy.export --checkpoint DIR --size WxH --output FILE
                               [--format stablehlo|onnx] [--routing threshold|all]
                               [--platforms cpu,cuda,tpu] [--precision highest|default] [--overwrite]

FILE is `jax.export.Exported.serialize()` of the prediction of frame t+1 from (prev, cur), with
the weights inside as constants: `jax.export.deserialize(open(FILE, "rb").read()).call(prev, cur)`
runs it with nothing but jax installed. FILE.json beside it records the input convention (the
checkpoint's channel order, float32 in [0, 1], NHWC, batch first) and how the program was made.

- inputs prev, cur: float32 (B, H, W, 3), H x W fixed by `--size` (WIDTHxHEIGHT, as `eval.py
  --size`), B any batch >= 1 (one artifact for every batch), channels in the checkpoint's order
  (BGR for the official weights), values in [0, 1]; output: the predicted frame, the same.
- `--routing`: `threshold` (default: block i runs when its routing probability is >= 0.5, per
  sample, as `Predictor`) or `all` (every block). The Bernoulli `sample` routing is not exported.
- `--platforms`: the backends the artifact carries code for (default cpu,cuda,tpu): one program
  (conv form and batch mode fixed, not chosen per backend) lowered for each; the tests run the
  CPU lowering only.
- `--precision`: of the convs and matmuls: `highest` (default, float32 on every backend) or
  `default` (the backend's default: TF32 on recent GPUs, bfloat16 passes on TPU; faster there).
- `--format onnx`: FILE is an ONNX model (opset 21, `dmvfn_jax.deploy.onnx_graph`: NCHW between one
  transpose at the entry and one at the exit, one ONNX operator per op of the model; the `onnx`
  extra: `pip install 'dmvfn-jax[onnx]'`), weights inside, inputs `prev`, `cur`, output `next`,
  the same convention and a dynamic batch dimension `b`; onnxruntime runs it. `--platforms` and
  `--precision` are StableHLO options (ONNX convolutions are float32 wherever they run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from dmvfn_jax.deploy import onnx_graph
from dmvfn_jax.errors import InputError, run_command
from dmvfn_jax.models import ops

FORMATS = ("stablehlo", "onnx")
ROUTINGS = ("threshold", "all")
PRECISIONS = ("highest", "default")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
# The artifact may run on any backend, so the per-backend choices `DMVFN` makes at trace time are
# fixed here: the convs over the blocks' 17 input channels as one conv ("plain", what GPU and TPU
# run; the CPU form "shared12" only pays from 2^17 pixels per call, mvfb.CPU_FORM_MIN_PIXELS), and
# the batch in one pass (what GPU and TPU run; `lax.map` over the samples, the CPU choice for
# batches > 1, would be a loop on an accelerator). Neither changes the values beyond float rounding.
CONV_FORM = "plain"
BATCH_MODE = "batched"
# The same for the warp: traced for no platform in particular (`ops.compiling_for(WARP_TARGET)`),
# so XLA's map_coordinates, which every backend runs, not the TPU's Pallas kernel; DMVFN_WARP set
# when exporting still forces its form, and FILE.json records the one traced (`warp_form`).
WARP_TARGET = "any"
METADATA_FORMAT = "dmvfn-jax-export"
METADATA_VERSION = 1
ONNX_OPSET = onnx_graph.OPSET


def metadata_path(output: str | Path) -> Path:
    """The JSON sidecar of an artifact: FILE.json."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def next_frame_fn(model, routing: str):
    """`(prev, cur) -> prediction` of `model` with `routing`, the conv form and batch mode fixed
    (CONV_FORM, BATCH_MODE): the function both formats trace. The parameters are closed over."""
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
    graphdef, state = nnx.split(model)

    def dmvfn_next_frame(prev, cur):
        net = nnx.merge(graphdef, state)
        return net.predict(prev, cur, routing, sequential=BATCH_MODE == "sequential", conv_form=CONV_FORM).prediction

    return dmvfn_next_frame


def export_predictor(model, height: int, width: int, routing: str = "threshold",
                     platforms=DEFAULT_PLATFORMS, precision: str = "highest") -> jax.export.Exported:
    """`jax.export` of `model`'s prediction of the next frame at height x width, any batch.

    The exported function takes (prev, cur), float32 (b, height, width, 3) in [0, 1] in the
    model's channel order, and returns the prediction, the same shape; `b` is symbolic. The
    parameters are closed over, so they are constants inside the artifact. `model` is not changed.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dmvfn_next_frame = next_frame_fn(model, routing)
    frame = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {height}, {width}, 3"), jnp.float32)
    # the precision is read while tracing and written into every conv and matmul of the module
    with jax.default_matmul_precision(precision), ops.compiling_for(WARP_TARGET):
        return jax.export.export(jax.jit(dmvfn_next_frame), platforms=tuple(platforms))(frame, frame)


def warp_form(height: int, width: int) -> str:
    """The warp's form an export of this size traces (`dmvfn.warp_form` for `WARP_TARGET`)."""
    from dmvfn_jax.models import dmvfn

    return dmvfn.warp_form(WARP_TARGET, height, width)


def block_layout(height: int, width: int) -> str:
    """The blocks' layout an export of this size traces (`grid.choose_layout` for `WARP_TARGET`:
    pixels, which every platform runs; the TPU's cells are chosen on a TPU only)."""
    from dmvfn_jax.models import dmvfn

    return dmvfn.layout_form(WARP_TARGET, height, width)


def _require_onnx():
    from dmvfn_jax.extras import require

    require("onnx", "ONNX export")  # one line naming the extra, as every command's


def export_onnx(model, height: int, width: int, routing: str = "threshold", warp: str = "gather"):
    """An `onnx.ModelProto` of `model`'s prediction of the next frame at height x width
    (`onnx_graph.predictor_graph`): inputs `prev`, `cur`, output `next`, float32 (b, height,
    width, 3) with `b` a dynamic dimension, weights as initializers; `warp`: `onnx_graph.WARPS`.
    Needs the `onnx` extra (InputError naming it otherwise)."""
    _require_onnx()
    return onnx_graph.predictor_graph(model, height, width, routing, warp)


def _frame_metadata(shape, channel_order: str) -> dict:
    return {"shape": list(shape), "dtype": "float32", "layout": "NHWC", "range": [0.0, 1.0],
            "channel_order": channel_order}


def artifact_metadata(exported: jax.export.Exported, *, channel_order: str, routing: str, precision: str,
                      checkpoint: str, checkpoint_metadata: dict, blob: bytes) -> dict:
    """What FILE.json records: the input convention, and how the artifact was made."""
    spec = [str(d) if not isinstance(d, int) else d for d in exported.in_avals[0].shape]
    return {
        **_common_metadata(spec, channel_order, routing, blob),
        "serialization": "jax.export.Exported.serialize",
        "load": "jax.export.deserialize(bytes).call(prev, cur)",
        "matmul_precision": precision,
        "warp": warp_form(*exported.in_avals[0].shape[1:3]),
        "block_layout": block_layout(*exported.in_avals[0].shape[1:3]),
        "platforms": list(exported.platforms),
        "calling_convention_version": exported.calling_convention_version,
        "jax_version": jax.__version__,
        "checkpoint": checkpoint,
        "checkpoint_metadata": checkpoint_metadata,
    }


def onnx_metadata(height: int, width: int, *, channel_order: str, routing: str, checkpoint: str,
                  checkpoint_metadata: dict, blob: bytes) -> dict:
    """FILE.json of an ONNX artifact: the same convention, and how it was made."""
    import onnx

    return {
        **_common_metadata(["b", height, width, 3], channel_order, routing, blob),
        "serialization": f"onnx.ModelProto, opset {ONNX_OPSET}, weights as initializers",
        "load": "onnxruntime.InferenceSession(FILE).run(None, {'prev': prev, 'cur': cur})[0]",
        "matmul_precision": "float32",
        "warp": "gather: bilinear, border (elementwise ops and GatherElements)",
        "block_layout": "pixels",  # the graph's convs are NHWC (`onnx_graph`)
        "onnx_opset": ONNX_OPSET,
        "onnx_graph": "dmvfn_jax.deploy.onnx_graph.predictor_graph",
        "dmvfn_jax_version": _dist_version("dmvfn-jax"),
        "onnx_version": onnx.__version__,
        "jax_version": jax.__version__,
        "checkpoint": checkpoint,
        "checkpoint_metadata": checkpoint_metadata,
    }


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _common_metadata(shape, channel_order: str, routing: str, blob: bytes) -> dict:
    frame = _frame_metadata(shape, channel_order)
    return {
        "format": METADATA_FORMAT,
        "format_version": METADATA_VERSION,
        "artifact_sha256": hashlib.sha256(blob).hexdigest(),
        "inputs": [{"name": "prev", **frame}, {"name": "cur", **frame}],
        "output": {"name": "next", **frame},
        "channel_order": channel_order,
        "routing": routing,
        "conv_form": CONV_FORM,
        "batch_mode": BATCH_MODE,
    }


def describe(meta: dict) -> list[str]:
    """The input convention in a few lines, as the command prints it."""
    shape = "(" + ", ".join(str(d) for d in meta["inputs"][0]["shape"]) + ")"
    order = meta["channel_order"]
    return [
        f"inputs: prev, cur: float32 {shape} NHWC, b any batch >= 1, values in [0, 1], {order} channel order",
        f"output: the frame after cur, float32 {shape}, {order}, in [0, 1]",
        f"routing {meta['routing']}, conv form {meta['conv_form']}, batch mode {meta['batch_mode']}, "
        + (f"ONNX opset {meta['onnx_opset']}, float32 convs" if "onnx_opset" in meta else
           f"{meta['matmul_precision']} precision, platforms {', '.join(meta['platforms'])}"),
    ]


def _parse_platforms(text: str) -> tuple[str, ...]:
    names = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    unknown = [p for p in names if p not in KNOWN_PLATFORMS]
    if not names or unknown:
        raise InputError(f"--platforms must be a comma-separated list of {', '.join(KNOWN_PLATFORMS)}; got {text!r}")
    return tuple(dict.fromkeys(names))


def export_checkpoint(checkpoint, output, size: str, routing: str = "threshold", platforms: str | None = None,
                      precision: str | None = None, overwrite: bool = False, log=print,
                      format: str = "stablehlo") -> tuple[Path, Path]:
    """Loads `checkpoint`, exports its predictor at `size` (WIDTHxHEIGHT) as `format`, writes FILE
    and FILE.json. `platforms` and `precision` (StableHLO only) default to cpu,cuda,tpu and highest."""
    from dmvfn_jax.files import atomic_file
    from dmvfn_jax.image_io import parse_size
    from dmvfn_jax.checkpoint import load_dmvfn

    if format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {format!r}")
    width, height = parse_size(size)
    if format == "onnx":
        given = [f"--{n}" for n, v in (("platforms", platforms), ("precision", precision)) if v is not None]
        if given:
            raise InputError(f"{' and '.join(given)}: StableHLO options, not used by --format onnx")
        _require_onnx()  # before loading anything
    else:
        names = _parse_platforms(platforms or ",".join(DEFAULT_PLATFORMS))
        precision = precision or "highest"
    output, sidecar = Path(output), metadata_path(output)
    for path in (output, sidecar):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    model, ckpt_meta = load_dmvfn(checkpoint)
    log(f"loaded {checkpoint} (channel order {ckpt_meta['channel_order']})")
    common = dict(channel_order=ckpt_meta["channel_order"], routing=routing, checkpoint=str(checkpoint),
                  checkpoint_metadata=ckpt_meta)
    if format == "onnx":
        blob = export_onnx(model, height, width, routing).SerializeToString()
        meta = onnx_metadata(height, width, blob=blob, **common)
        how = f"ONNX opset {ONNX_OPSET}, NCHW"
    else:
        exported = export_predictor(model, height, width, routing, names, precision)
        blob = bytes(exported.serialize())
        meta = artifact_metadata(exported, precision=precision, blob=blob, **common)
        how = "StableHLO through jax.export"
    with atomic_file(output) as tmp:
        tmp.write_bytes(blob)
    with atomic_file(sidecar) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    log(f"wrote {output} ({len(blob) / 1e6:.1f} MB, {how}, {width}x{height})")
    log(f"wrote {sidecar}")
    for line in describe(meta):
        log(line)
    return output, sidecar


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m dmvfn_jax.deploy.export",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (from convert_weights.py or training)")
    p.add_argument("--format", default="stablehlo", choices=FORMATS,
                   help="stablehlo (default) or onnx (needs the onnx extra)")
    p.add_argument("--size", required=True, metavar="WxH", help="frame size the artifact takes, e.g. 448x256")
    p.add_argument("--routing", default="threshold", choices=ROUTINGS)
    p.add_argument("--output", required=True, help="artifact file; FILE.json is written beside it")
    p.add_argument("--platforms", default=None,
                   help=f"StableHLO: backends to export for, of {', '.join(KNOWN_PLATFORMS)} "
                        f"(default {','.join(DEFAULT_PLATFORMS)})")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="StableHLO: conv and matmul precision written into the artifact (default highest)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing FILE and FILE.json")
    return p


def main(argv=None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)

    def body():
        export_checkpoint(args.checkpoint, args.output, args.size, args.routing, args.platforms,
                          args.precision, args.overwrite, format=args.format)

    return run_command(prog or "export", body)


if __name__ == "__main__":
    sys.exit(main())
