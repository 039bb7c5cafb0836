"""Single convolutions of DMVFN's shapes, XLA (through JAX) against PyTorch, in one run.

    python bench/conv_kernels.py [--batch 1] [--repeats 7]

For each 3x3 conv (padding 1) of the network at a 512x1024 (batch 1) or 256x256 (batch 8,
training) input it times the forward pass, the input gradient and the kernel gradient, each on
its own (JAX: `jax.vjp` of `lax.conv_general_dilated`, jitted; PyTorch: `F.conv2d` and
`torch.ops.aten.convolution_backward` with one output mask at a time). This is what the
BENCHMARKS.md explanations of the missed targets rest on: where the whole-network ratio is
close to 1, the single convs are about as fast in both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

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


def median_ms(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


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
    return [median_ms(lambda f=f, a=a: jax.block_until_ready(f(*a)), repeats)
            for f, a in ((fwd, (x, k)), (gx, (x, k, g)), (gk, (x, k, g)))]


def torch_times(b, h, w, cin, cout, stride, repeats):
    x = torch.rand(b, cin, h, w)
    k = torch.rand(cout, cin, 3, 3)
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x, k, stride=stride, padding=1)
    g = torch.rand_like(y)

    def backward(mask):
        return torch.ops.aten.convolution_backward(g, x, k, None, [stride, stride], [1, 1], [1, 1], False, [0, 0], 1,
                                                   mask)

    with torch.no_grad():
        return [median_ms(lambda: torch.nn.functional.conv2d(x, k, stride=stride, padding=1), repeats),
                median_ms(lambda: backward([True, False, False]), repeats),
                median_ms(lambda: backward([False, True, False]), repeats)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
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
