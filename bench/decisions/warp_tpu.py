"""How the TPU compiler counts a backward warp: forms of the warp and of a gather, swept over sizes.

    python bench/decisions/warp_tpu.py [--sizes 64 128 256] [--probe]

For each size (2 frames of 3 channels, square), each form of the warp is compiled for this CPU
and for one v5e chip (libtpu's compile-only devices; nothing runs), forward and with its
gradient, and printed with the bytes each compiler's cost analysis counts, the TPU/CPU ratio,
the TPU program's HBM buffers as written and as tiled (`dmvfn_jax.planning.hlo.buffers`) and its while
loops. All figures are compiler estimates.

Forms:
- `map_coordinates`, `gather`: `ops.warp_map_coordinates` and `ops.warp_gather`, the two forms
  the model can use (both exact for any flow);
- `pallas`: `ops.warp_pallas`, the Pallas TPU kernel the model uses on a TPU (`dmvfn_jax.models.tpu_warp`);
  its TPU bytes and FLOPs are what the kernel declares (its `pl.CostEstimate`), and its CPU
  column is `warp_gather`'s program (the same values; the kernel runs on a CPU only in
  interpret mode);
- `band`: an experiment, not a form the model can use: every 8 output rows read a window of
  `--band-rows` source rows (a dynamic slice), and the four corners are picked from it by one-hot
  matrix products (columns: over the full width; rows: over the window). Exact only where every
  output row's source rows lie in its window (small vertical flow), so it would need a fallback.

`--probe` prints the compiler's count for gathers of 65,536 slices of several shapes from a
256x256 float32 array: a slice of one scalar counts about one (8, 128) tile (4 KiB); slices that
fill lanes count near their size; and slices the TPU compiler turns into a while loop (a loop
body is counted once) come out far below their size, so a low count there is not a cheap
program. Check `loops` before trusting a row.
"""

from __future__ import annotations

import argparse
import re
import sys

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")

import jax.numpy as jnp  # noqa: E402

from dmvfn_jax.models import ops  # noqa: E402
from dmvfn_jax.planning import hlo, plan, tpu  # noqa: E402

HIGHEST = jax.lax.Precision.HIGHEST


def band_warp(img: jax.Array, flow: jax.Array, rows: int = 8, window: int = 24) -> jax.Array:
    """`ops.warp_gather`'s values where each band of `rows` output rows takes its source rows from
    a window of `window` rows starting at the band's lowest source row (see the module doc)."""
    b, h, w, c = img.shape
    wx, wy, x0i, x1i, y0i, y1i = ops.corner_indices(img, flow)
    bands = h // rows
    per_band = lambda a: a.reshape(b, bands, rows * w)  # noqa: E731
    start = jnp.clip(jnp.min(per_band(y0i), axis=-1), 0, h - window)  # (b, bands)
    windows = jax.vmap(jax.vmap(lambda im, s: jax.lax.dynamic_slice_in_dim(im, s, window, 0), (None, 0)))(img, start)

    def pick(xi, yi):
        one_x = (per_band(xi)[..., None] == jnp.arange(w)).astype(img.dtype)  # (b, bands, P, w)
        columns = jnp.einsum("bnpj,bnkjc->bnpkc", one_x, windows, precision=HIGHEST)
        one_y = ((per_band(yi) - start[..., None])[..., None] == jnp.arange(window)).astype(img.dtype)
        return jnp.einsum("bnpk,bnpkc->bnpc", one_y, columns, precision=HIGHEST).reshape(b, h, w, c)

    return ops.bilinear(pick(x0i, y0i), pick(x1i, y0i), pick(x0i, y1i), pick(x1i, y1i), wx[..., None], wy[..., None])


FORMS = {"map_coordinates": ops.warp_map_coordinates, "gather": ops.warp_gather, "pallas": ops.warp_pallas,
         "band": band_warp}


def figures(fn, *args, cpu_fn=None) -> tuple[dict, dict]:
    """`cpu_fn` (default `fn`) compiled for the CPU and `fn` for one v5e chip: bytes accessed, FLOPs,
    HBM buffers, while loops."""
    out = []
    replicated = tpu.one_chip()
    for jitted in (jax.jit(cpu_fn or fn), jax.jit(fn, in_shardings=replicated, out_shardings=replicated)):
        compiled = jitted.lower(*args).compile()
        text = compiled.as_text()
        written, tiled = hlo.padding_totals(hlo.buffers(text))
        cost = plan.compiled_cost(compiled)
        out.append({"bytes": float(cost.get("bytes accessed", 0.0)), "flops": float(cost.get("flops", 0.0)),
                    "written": written, "tiled": tiled, "loops": len(re.findall(r"\swhile\(", text))})
    return out[0], out[1]


def probe() -> None:
    n = 65536
    print(f"gathers of {n} slices from f32[256,256] (compiler estimates)")
    print(f"{'slice':>10s} {'CPU MB':>9s} {'TPU MB':>9s} {'TPU B/slice':>11s} {'loops':>5s}")
    for shape in [(1, 1), (1, 2), (2, 2), (1, 128), (1, 256), (8, 128)]:
        def gather(src, iy, ix, shape=shape):
            dn = jax.lax.GatherDimensionNumbers(offset_dims=(1, 2), collapsed_slice_dims=(), start_index_map=(0, 1))
            return jax.lax.gather(src, jnp.stack([iy, ix], -1), dn, shape, mode="clip")

        args = (jax.ShapeDtypeStruct((256, 256), jnp.float32), *[jax.ShapeDtypeStruct((n,), jnp.int32)] * 2)
        cpu, on_tpu = figures(gather, *args)
        print(f"{str(shape):>10s} {cpu['bytes'] / 1e6:9.2f} {on_tpu['bytes'] / 1e6:9.2f} "
              f"{on_tpu['bytes'] / n:11.0f} {on_tpu['loops']:5d}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    ap.add_argument("--band-rows", type=int, default=24, help="the band form's window of source rows")
    ap.add_argument("--probe", action="store_true", help="also the gather cost-model probe")
    args = ap.parse_args(argv)
    if args.probe:
        probe()
    print("ops.warp forms, 2 frames x 3 channels (compiler estimates; MB: bytes accessed; HBM buffers written/tiled)")
    print(f"{'size':>5s} {'form':16s} {'pass':8s} {'CPU MB':>9s} {'TPU MB':>9s} {'TPU/CPU':>8s} "
          f"{'TPU bufs MB':>17s} {'loops':>5s} {'TPU GFLOP':>9s}")
    for size in args.sizes:
        img = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
        flow = jax.ShapeDtypeStruct((2, size, size, 2), jnp.float32)
        for name in args.forms:
            fn = FORMS[name]
            if name == "band":
                fn = lambda i, f, k=min(args.band_rows, size): band_warp(i, f, window=k)  # noqa: E731
            cpu_fn = ops.warp_gather if name == "pallas" else fn
            grad = lambda i, f, fn=fn: jax.grad(lambda a, b: jnp.sum(fn(a, b) ** 2), argnums=(0, 1))(i, f)  # noqa: E731
            cpu_grad = lambda i, f, fn=cpu_fn: jax.grad(  # noqa: E731
                lambda a, b: jnp.sum(fn(a, b) ** 2), argnums=(0, 1))(i, f)
            for label, program, on_cpu in (("forward", fn, cpu_fn), ("gradient", grad, cpu_grad)):
                cpu, on_tpu = figures(program, img, flow, cpu_fn=on_cpu)
                bufs = f"{on_tpu['written'] / 1e6:.1f}/{on_tpu['tiled'] / 1e6:.1f}"
                print(f"{size:5d} {name:16s} {label:8s} {cpu['bytes'] / 1e6:9.2f} {on_tpu['bytes'] / 1e6:9.2f} "
                      f"{on_tpu['bytes'] / cpu['bytes']:7.1f}x {bufs:>17s} {on_tpu['loops']:5d} "
                      f"{on_tpu['flops'] / 1e9:9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
