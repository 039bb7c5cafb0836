"""Where the TPU's bytes go once the warp is a kernel: the nine's convs one by one, and the whole
forward written channels-first (planes), each compiled for one v5e chip and for this CPU.

    .venv/bin/python bench/decisions/layout_tpu.py --convs     # every distinct conv of the nine at --size
    .venv/bin/python bench/decisions/layout_tpu.py --planes    # the nine's forward: NHWC (the model) vs NCHW
    .venv/bin/python bench/decisions/layout_tpu.py --probe     # one 128-channel conv at batch 2 and 16
    .venv/bin/python bench/decisions/layout_tpu.py --check     # the NCHW forward's values against the model's
    .venv/bin/python bench/decisions/layout_tpu.py --bf16-store  # the forward with every conv unit's output in bfloat16

Every figure is a compiler's estimate on libtpu's compile-only devices (nothing runs): "bytes" is
`cost_analysis()["bytes accessed"]`, which sums every instruction's operands and results, on-chip
(`S(1)`) ones included; "cycles" is the sum of the TPU compiler's `estimated_cycles` over the
program's instructions outside fusions (`dmvfn_jax.hlo.buffers`), and "copies" their share in
instructions that only move or convert data (copies, pads, transposes, converts, slices and
fusions of only those, which the compiler puts around a conv). The NCHW forward is an experiment written here (the same values as
`DMVFN.infer`, checked by `--check` in interpret mode), not a form the model has.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from dmvfn_jax import hlo, ops, plan, tpu, tpu_warp  # noqa: E402
from dmvfn_jax.models.dmvfn import DMVFN, SCALES, WIDTHS  # noqa: E402

TOPOLOGY = "v5e:2x2"
NCHW = ("NCHW", "HWIO", "NCHW")
_MOVES = {"copy", "copy-start", "copy-done", "pad", "transpose", "convert", "slice", "bitcast", "broadcast",
          "concatenate", "reshape"}


def _moves(b: hlo.Buffer) -> bool:
    """An instruction that only moves or converts data: one of _MOVES, or a fusion of them only
    (the TPU compiler names a fusion by its ops: `copy_bitcast_fusion`)."""
    if b.opcode != "fusion":
        return b.opcode in _MOVES
    parts = b.name.split(".")[0].split("_")[:-1]
    return bool(parts) and set(parts) <= _MOVES


def _figures(compiled) -> dict:
    cost = plan._cost(compiled)
    found = hlo.buffers(compiled.as_text())
    cycles = sum(b.estimated_cycles * b.runs for b in found)
    moves = sum(b.estimated_cycles * b.runs for b in found if _moves(b))
    return {"bytes": float(cost.get("bytes accessed", 0.0)), "cycles": cycles, "moves": moves}


def _cpu(fn, args) -> dict:
    return _figures(jax.jit(lambda *a: fn(*a)).lower(*args).compile())  # a new function: traced anew


def _tpu(fn, args) -> dict:
    replicated = tpu.one_chip(TOPOLOGY)
    with ops.compiling_for("tpu"):  # the warp's form for a TPU, traced anew
        return _figures(jax.jit(lambda *a: fn(*a), in_shardings=replicated, out_shardings=replicated)
                        .lower(*args).compile())


def _both(fn, args) -> tuple[dict, dict]:
    return _cpu(fn, args), _tpu(fn, args)


def convs(size: int, batch: int) -> None:
    """Each distinct conv of the nine (NHWC, float32 in and out, as alone in a program)."""
    def conv(stride):
        return lambda x, k: jax.lax.conv_general_dilated(x, k, (stride, stride), ((1, 1), (1, 1)),
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))

    rows: dict[tuple, int] = {}
    for nf, s in zip(WIDTHS, SCALES):
        h = size // s
        for spec in (("conv0[0]", h, 17, nf // 2, 2), ("conv0[1]", h // 2, nf // 2, nf, 2),
                     ("convblock", h // 4, nf, nf, 1), ("conv_sq", h // 4, nf, nf // 4, 1),
                     ("conv1", size, 17, 8, 2), ("convblock1", size // 2, 8, 8, 1),
                     ("lastconv (3x3 of the sub-pixel form)", size // 2, nf // 4 + 8, 20, 1)):
            rows[spec] = rows.get(spec, 0) + (3 if spec[0] == "convblock" else 1)
    print(f"the nine's convs at {batch}x{size}x{size}, each alone (compiler estimates; bytes: all memory levels)")
    print(f"{'conv':38s} {'in HxW':>7s} {'ch':>8s} {'s':>2s} {'n':>3s} {'CPU MB':>8s} {'TPU MB':>8s} {'TPU/CPU':>8s} "
          f"{'n x TPU MB':>10s} {'TPU cycles':>10s} {'moves':>6s}")
    total_cpu = total_tpu = 0.0
    for (name, h, ci, co, s), n in rows.items():
        args = [jax.ShapeDtypeStruct((batch, h, h, ci), jnp.float32), jax.ShapeDtypeStruct((3, 3, ci, co), jnp.float32)]
        cpu, on_tpu = _both(conv(s), args)
        total_cpu += n * cpu["bytes"]
        total_tpu += n * on_tpu["bytes"]
        print(f"{name:38s} {h:7d} {f'{ci}->{co}':>8s} {s:2d} {n:3d} {cpu['bytes'] / 1e6:8.1f} {on_tpu['bytes'] / 1e6:8.1f} "
              f"{on_tpu['bytes'] / cpu['bytes']:7.1f}x {n * on_tpu['bytes'] / 1e6:10.1f} {on_tpu['cycles']:10d} "
              f"{on_tpu['moves'] / max(on_tpu['cycles'], 1):6.0%}", flush=True)
    print(f"all {sum(rows.values())} convs: CPU {total_cpu / 1e9:.3f} GB, TPU {total_tpu / 1e9:.3f} GB "
          f"({total_tpu / total_cpu:.1f}x)")


def probe() -> None:
    """One lane-dense conv (3x3, 128 -> 128, 64x64, float32) at batch 2 and 16: the moves are per conv."""
    conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),  # noqa: E731
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    print("3x3 conv 128 -> 128 at 64x64, float32, alone (compiler estimates)")
    print(f"{'batch':>5s} {'CPU MB':>8s} {'TPU MB':>8s} {'TPU/CPU':>8s} {'TPU cycles':>10s} {'moves':>6s}")
    for batch in (2, 16):
        args = [jax.ShapeDtypeStruct((batch, 64, 64, 128), jnp.float32), jax.ShapeDtypeStruct((3, 3, 128, 128), jnp.float32)]
        cpu, on_tpu = _both(conv, args)
        print(f"{batch:5d} {cpu['bytes'] / 1e6:8.1f} {on_tpu['bytes'] / 1e6:8.1f} {on_tpu['bytes'] / cpu['bytes']:7.1f}x "
              f"{on_tpu['cycles']:10d} {on_tpu['moves'] / max(on_tpu['cycles'], 1):6.0%}", flush=True)


# -- the nine's forward written channels-first -----------------------------------------------

def _unit(unit, x):
    conv = unit.conv
    stride = conv.strides if isinstance(conv.strides, int) else conv.strides[0]
    y = jax.lax.conv_general_dilated(x, conv.kernel[...], (stride, stride), ((1, 1), (1, 1)), dimension_numbers=NCHW)
    y = y + conv.bias[...][None, :, None, None]
    return jnp.where(y >= 0, y, unit.prelu.slope[...][None, :, None, None] * y)


def _last(m, x):  # ConvTranspose2d(4, 2, 1): a stride-1 conv over the input dilated by 2
    y = jax.lax.conv_general_dilated(x, m.kernel[...][::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                     dimension_numbers=NCHW)
    return y + m.bias[...][None, :, None, None]


def _resize(x, factor):
    f = int(factor if factor >= 1 else 1 / factor)
    if f == 1:
        return x
    axis = ops._upsample_axis if factor > 1 else ops._downsample_axis
    return axis(axis(x, 2, f), 3, f)


def _warp(planes, flow, interpret):
    _, _, h, w = planes.shape
    x = jnp.clip(jnp.arange(w, dtype=flow.dtype)[None, :] + flow[:, 0], 0, w - 1)
    y = jnp.clip(jnp.arange(h, dtype=flow.dtype)[:, None] + flow[:, 1], 0, h - 1)
    x0, y0 = jnp.floor(x), jnp.floor(y)
    x0i, y0i = x0.astype(jnp.int32), y0.astype(jnp.int32)
    v = tpu_warp.corners(planes, y0i, jnp.minimum(y0i + 1, h - 1), x0i, jnp.minimum(x0i + 1, w - 1), interpret)
    return ops.bilinear(v[:, 0], v[:, 1], v[:, 2], v[:, 3], (x - x0)[:, None], (y - y0)[:, None])


def forward_planes(model: DMVFN, img0, img1, interpret: bool = False):
    """`model.infer(img0, img1).prediction` (every block on, sizes multiples of 16) with every
    tensor channels-first: (B, C, H, W)."""
    p0, p1 = jnp.transpose(img0, (0, 3, 1, 2)), jnp.transpose(img1, (0, 3, 1, 2))
    b, _, h, w = p0.shape
    flow, mask, w0, w1 = jnp.zeros((b, 4, h, w)), jnp.zeros((b, 1, h, w)), p0, p1
    for block, s in zip(model.blocks, model.scales):
        x13 = jnp.concatenate([p0, p1, w0, w1, mask], 1)
        a = _unit(block.conv0[0], jnp.concatenate([_resize(x13, 1 / s), _resize(flow, 1 / s) * (1 / s)], 1))
        a = _unit(block.conv0[1], a)
        c = a
        for unit in block.convblock:
            c = _unit(unit, c)
        a = _resize(_unit(block.conv_sq, c + a), s * 2)
        c = _unit(block.convblock1, _unit(block.conv1, jnp.concatenate([x13, flow], 1)))
        out = _last(block.lastconv, jnp.concatenate([a, c], 1))
        flow, mask = flow + out[:, 0:4], mask + out[:, 4:5]
        w0, w1 = _warp(p0, flow[:, 0:2], interpret), _warp(p1, flow[:, 2:4], interpret)
    m = jax.nn.sigmoid(mask)
    pred = jnp.clip(m * w0 + (1 - m) * w1, 0.0, 1.0)
    return jnp.transpose(pred, (0, 2, 3, 1))


def planes(size: int, batch: int) -> None:
    graphdef, state = nnx.split(nnx.eval_shape(lambda: DMVFN(rngs=nnx.Rngs(0), conv_form="plain")))
    frames = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    forms = {"NHWC (the model)": lambda p, a, c: nnx.merge(graphdef, p).infer(a, c, None, sequential=False).prediction,
             "NCHW (planes)": lambda p, a, c: forward_planes(nnx.merge(graphdef, p), a, c)}
    print(f"the nine's forward, {batch} pairs at {size}x{size} (compiler estimates; the warp kernel's share "
          "declared; the CPU column is the model's program for both: the kernel runs on a CPU only interpreted)")
    print(f"{'form':18s} {'CPU GB':>8s} {'TPU GB':>8s} {'TPU/CPU':>8s} {'TPU Mcycles':>11s} {'moves':>6s}")
    cpu = _cpu(forms["NHWC (the model)"], (state, frames, frames))
    for name, fn in forms.items():
        on_tpu = _tpu(fn, (state, frames, frames))
        print(f"{name:18s} {cpu['bytes'] / 1e9:8.3f} {on_tpu['bytes'] / 1e9:8.3f} {on_tpu['bytes'] / cpu['bytes']:7.1f}x "
              f"{on_tpu['cycles'] / 1e6:11.2f} {on_tpu['moves'] / max(on_tpu['cycles'], 1):6.0%}", flush=True)


class _StoredBF16(nnx.Module):
    """A conv unit whose output is stored in bfloat16 (an experiment: what the HBM traffic would
    lose if every conv-and-PReLU output were bfloat16 in memory; the consumers promote it back)."""

    def __init__(self, unit):
        self.unit = unit

    def __call__(self, x):
        return self.unit(x).astype(jnp.bfloat16)


def _store_units_bf16(model: DMVFN) -> int:
    """Replaces every MVFB conv unit of `model` (in place) by `_StoredBF16`; returns how many."""
    n = 0
    for block in model.blocks:
        for name in ("conv0", "convblock"):
            units = getattr(block, name)
            for i in range(len(units)):
                units[i] = _StoredBF16(units[i])
                n += 1
        for name in ("conv_sq", "conv1", "convblock1"):
            setattr(block, name, _StoredBF16(getattr(block, name)))
            n += 1
    return n


def bf16_store(size: int, batch: int) -> None:
    graphdef, state = nnx.split(nnx.eval_shape(lambda: DMVFN(rngs=nnx.Rngs(0), conv_form="plain")))
    frames = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)

    def stored(p, a, c):
        model = nnx.merge(graphdef, p)
        n = _store_units_bf16(model)
        if n != 9 * 8:
            raise RuntimeError(f"expected 72 conv units in the nine's blocks, replaced {n}: has MVFB changed?")
        return model.infer(a, c, None, sequential=False).prediction

    forms = {"float32 (the model)": lambda p, a, c: nnx.merge(graphdef, p).infer(a, c, None, sequential=False).prediction,
             "units stored bf16": stored}
    print(f"the nine's forward, {batch} pairs at {size}x{size} (compiler estimates; the warp kernel's share declared)")
    print(f"{'form':20s} {'CPU GB':>8s} {'TPU GB':>8s} {'TPU/CPU':>8s} {'TPU / CPU float32':>17s} {'TPU Mcycles':>11s} {'moves':>6s}")
    base = None
    for name, fn in forms.items():
        cpu, on_tpu = _both(fn, (state, frames, frames))
        base = base or cpu
        print(f"{name:20s} {cpu['bytes'] / 1e9:8.3f} {on_tpu['bytes'] / 1e9:8.3f} {on_tpu['bytes'] / cpu['bytes']:7.1f}x "
              f"{on_tpu['bytes'] / base['bytes']:16.1f}x {on_tpu['cycles'] / 1e6:11.2f} "
              f"{on_tpu['moves'] / max(on_tpu['cycles'], 1):6.0%}", flush=True)


def check() -> None:
    """The planes forward against the model's, every block on, 2 pairs at 64x64, interpret mode."""
    model = DMVFN(rngs=nnx.Rngs(0), conv_form="plain")
    rng = np.random.default_rng(0)
    a, c = (jnp.asarray(rng.random((2, 64, 64, 3)), jnp.float32) for _ in range(2))
    with jax.default_matmul_precision("highest"):
        want = model.infer(a, c, None, sequential=False).prediction
        got = forward_planes(model, a, c, interpret=True)
    print(f"planes against the model: max |difference| {float(jnp.max(jnp.abs(want - got))):.2e}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--convs", action="store_true")
    ap.add_argument("--planes", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--bf16-store", action="store_true")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args(argv)
    if args.check:
        check()
    if args.probe:
        probe()
    if args.convs:
        convs(args.size, args.batch)
    if args.planes:
        planes(args.size, args.batch)
    if args.bf16_store:
        bf16_store(args.size, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
