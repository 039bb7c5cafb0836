"""Single convolutions of DMVFN's shapes, XLA (through JAX) against PyTorch, in one run; the
channel-count sweep of XLA's CPU convs; DMVFN's 17-channel convs in other formulations.

    python bench/conv_kernels.py [--repeats 7]            # JAX / PyTorch per conv
    python bench/conv_kernels.py --sweep [--repeats 7]     # the input-channel cliff
    python bench/conv_kernels.py --forms [--repeats 7]     # formulations of the 17-channel convs

For each 3x3 conv (padding 1) of the network at a 512x1024 (batch 1) or 256x256 (batch 8,
training) input it times the forward pass, the input gradient and the kernel gradient, each on
its own (JAX: `jax.vjp` of `lax.conv_general_dilated`, jitted; PyTorch: `F.conv2d` and
`torch.ops.aten.convolution_backward` with one output mask at a time). This is what the
BENCHMARKS.md explanations of the missed targets rest on: where the whole-network ratio is
close to 1, the single convs are about as fast in both.

`--sweep` times one 3x3 stride-2 conv (XLA only) over input channel counts at the inference
sizes (forward) and at the training size (forward, input gradient, kernel gradient), for the
output widths of DMVFN's 17-channel convs (8: `conv1`; 22: `conv0[0]` at scale 1). It is the
record of the cliff between 16 and 17 input channels; rerun it after a JAX upgrade.

`--forms` times, per input size, each group of DMVFN convs that read 17 channels, as a whole
(all nine `conv1`, or the three `conv0[0]` of one scale), in each formulation of
`dmvfn_jax.models.mvfb` (see `FORMS` there): at the training size the time is of the gradient
(kernels and the 11 non-frame channels, as in the model, where the frames get no gradient).
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from timing import median_ms  # bench/timing.py


# (name, batch, H, W, in, out, stride): the input's size
SHAPES = (
    ("conv1, full res", 1, 512, 1024, 17, 8, 2),
    ("conv0[0], scale 1", 1, 512, 1024, 17, 22, 2),
    ("convblock, scale 1 (nf 44)", 1, 128, 256, 44, 44, 1),
    ("convblock, scale 2 (nf 80)", 1, 64, 128, 80, 80, 1),
    ("convblock, scale 4 (nf 160)", 1, 32, 64, 160, 160, 1),
    ("train conv1", 8, 256, 256, 17, 8, 2),
    ("train convblock, scale 1", 8, 64, 64, 44, 44, 1),
    ("train convblock, scale 4", 8, 16, 16, 160, 160, 1),
    ("train routing conv_a", 8, 256, 256, 6, 32, 1),
)


def jax_times(b, h, w, cin, cout, stride, repeats):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((b, h, w, cin), dtype=np.float32))
    k = jnp.asarray(rng.random((3, 3, cin, cout), dtype=np.float32))

    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (stride, stride), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    g = jnp.asarray(rng.random(conv(x, k).shape, dtype=np.float32))
    fwd = jax.jit(conv)
    gx = jax.jit(lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0])
    gk = jax.jit(lambda x, k, g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0])
    return [median_ms(f, *a, repeats=repeats, warmup=2)
            for f, a in ((fwd, (x, k)), (gx, (x, k, g)), (gk, (x, k, g)))]


def torch_times(b, h, w, cin, cout, stride, repeats):
    import torch

    x = torch.rand(b, cin, h, w)
    k = torch.rand(cout, cin, 3, 3)
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x, k, stride=stride, padding=1)
    g = torch.rand_like(y)

    def backward(mask):
        return torch.ops.aten.convolution_backward(g, x, k, None, [stride, stride], [1, 1], [1, 1], False, [0, 0], 1,
                                                   mask)

    with torch.no_grad():
        return [median_ms(lambda: torch.nn.functional.conv2d(x, k, stride=stride, padding=1), repeats=repeats, warmup=2),
                median_ms(lambda: backward([True, False, False]), repeats=repeats, warmup=2),
                median_ms(lambda: backward([False, True, False]), repeats=repeats, warmup=2)]


# --sweep -------------------------------------------------------------------------------------
SWEEP_CHANNELS = (3, 4, 6, 8, 9, 11, 12, 13, 15, 16, 17, 18, 20, 24, 32)
SWEEP_OUT = (8, 22)
SWEEP_SIZES = ((1, 256, 448, False), (1, 512, 1024, False), (8, 256, 256, True))  # (B, H, W, gradients)


def sweep(repeats: int) -> None:
    print(f"device {jax.devices()[0].device_kind}; one 3x3 stride-2 conv (XLA), median ms of {repeats}")
    for b, h, w, grads in SWEEP_SIZES:
        for cout in SWEEP_OUT:
            parts = ("forward", "input grad", "kernel grad") if grads else ("forward",)
            print(f"\n{b}x{h}x{w}xC -> {cout}: " + " / ".join(parts))
            print("| in channels | " + " | ".join(map(str, SWEEP_CHANNELS)) + " |")
            print("| --- " * (len(SWEEP_CHANNELS) + 1) + "|")
            times = [jax_times(b, h, w, cin, cout, 2, repeats) for cin in SWEEP_CHANNELS]
            for k, part in enumerate(parts):
                print(f"| {part} | " + " | ".join(f"{t[k]:.1f}" for t in times) + " |", flush=True)


# --forms -------------------------------------------------------------------------------------
# (label, B, H, W, training): the bench/run.py sizes
FORM_SIZES = (("256x448", 1, 256, 448, False), ("256x832", 1, 256, 832, False), ("512x1024", 1, 512, 1024, False),
              ("train 8x256x256", 8, 256, 256, True))
# (group, blocks, scale, out channels): the convs that read the 17 channels
FORM_GROUPS = (("conv1 x9", 9, 1, 8), ("conv0[0] scale 1 x3", 3, 1, 22), ("conv0[0] scale 2 x3", 3, 2, 40),
               ("conv0[0] scale 4 x3", 3, 4, 80))


def form_times(form: str, b, h, w, blocks, scale, cout, training, repeats) -> float:
    from dmvfn_jax.models import mvfb

    rng = np.random.default_rng(0)
    hs, ws = h // scale, w // scale
    frames = jnp.asarray(rng.random((b, hs, ws, 6), dtype=np.float32))
    rest = [jnp.asarray(rng.random((b, hs, ws, 11), dtype=np.float32)) for _ in range(blocks)]
    kernels = [jnp.asarray(rng.random((3, 3, 17, cout), dtype=np.float32)) for _ in range(blocks)]

    def group(kernels, rest, frames):
        return mvfb.convs_over_frames(form, frames, rest, kernels)

    if training:  # (the frames are arguments: as constants, XLA would fold their part of the gradient)
        gs = [jnp.asarray(rng.random((b, hs // 2, ws // 2, cout), dtype=np.float32)) for _ in range(blocks)]
        loss = lambda k, r, f: sum(jnp.vdot(y, g) for y, g in zip(group(k, r, f), gs))  # noqa: E731
        fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
    else:
        fn = jax.jit(group)
    return median_ms(fn, kernels, rest, frames, repeats=repeats, warmup=2)


def forms(repeats: int) -> None:
    from dmvfn_jax.models import mvfb

    print(f"device {jax.devices()[0].device_kind}; median ms of {repeats} per group of convs "
          f"(inference: forward; training: gradient)")
    for label, b, h, w, training in FORM_SIZES:
        print(f"\n{label}\n| group | " + " | ".join(mvfb.FORMS) + " |\n" + "| --- " * (len(mvfb.FORMS) + 1) + "|")
        for group, blocks, scale, cout in FORM_GROUPS:
            t = [form_times(f, b, h, w, blocks, scale, cout, training, repeats) for f in mvfb.FORMS]
            best = min(t)
            cells = [f"**{x:.1f}**" if x == best else f"{x:.1f}" for x in t]
            print(f"| {group} | " + " | ".join(cells) + " |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--sweep", action="store_true", help="the input-channel sweep (XLA only)")
    p.add_argument("--forms", action="store_true", help="formulations of the 17-channel convs (XLA only)")
    args = p.parse_args()
    if args.sweep or args.forms:
        (sweep if args.sweep else forms)(args.repeats)
        return
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"device {jax.devices()[0].device_kind}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"median ms of {args.repeats}")
    print(f"{'conv (input B,H,W,in -> out, stride)':52s} {'forward':>15s} {'input grad':>15s} {'kernel grad':>15s}"
          "   (JAX / PyTorch)")
    for name, *shape in SHAPES:
        j = jax_times(*shape, args.repeats)
        t = torch_times(*shape, args.repeats)
        b, h, w, cin, cout, s = shape
        label = f"{name} ({b},{h},{w},{cin} -> {cout}, s{s})"
        print(f"{label:52s} " + " ".join(f"{a:6.1f} / {c:6.1f}" for a, c in zip(j, t)), flush=True)


if __name__ == "__main__":
    main()
