"""Small layers shared by the DMVFN modules: PReLU, the conv unit, the transposed conv.

All parameters start from PyTorch's default initialisation, as the official model does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dmvfn_jax.models import ops


def _torch_default_bias_init(fan_in: int):
    bound = 1.0 / fan_in**0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# PyTorch's default weight init for Conv2d/Linear (kaiming_uniform with a=sqrt(5)) is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance_scaling(1/3, fan_in, uniform).
TORCH_KERNEL_INIT = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_conv(in_ch: int, out_ch: int, stride: int = 1, *, dtype=None, rngs: nnx.Rngs) -> nnx.Conv:
    """`Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=True)` with PyTorch's default init.

    `dtype` is the computation dtype (e.g. bfloat16); parameters stay float32.
    """
    return nnx.Conv(
        in_ch,
        out_ch,
        (3, 3),
        strides=stride,
        padding=((1, 1), (1, 1)),
        use_bias=True,
        kernel_init=TORCH_KERNEL_INIT,
        bias_init=_torch_default_bias_init(in_ch * 9),
        dtype=dtype,
        conv_general_dilated=ops.conv_general_dilated,  # stride 2: a faster input gradient
        rngs=rngs,
    )


def torch_linear(in_f: int, out_f: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """`nn.Linear(in_f, out_f)` with PyTorch's default init (always float32: it is tiny)."""
    return nnx.Linear(in_f, out_f, kernel_init=TORCH_KERNEL_INIT, bias_init=_torch_default_bias_init(in_f), rngs=rngs)


class PReLU(nnx.Module):
    """Per-channel PReLU; slopes start at 0.25 as in PyTorch."""

    def __init__(self, channels: int, init: float = 0.25):
        self.slope = nnx.Param(jnp.full((channels,), init, jnp.float32))

    def __call__(self, x):
        return ops.prelu(x, self.slope[...].astype(x.dtype))


class ConvUnit(nnx.Module):
    """`Conv2d(k=3, padding=1, bias=True)` followed by a per-channel PReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, dtype=None, rngs: nnx.Rngs):
        self.conv = torch_conv(in_ch, out_ch, stride, dtype=dtype, rngs=rngs)
        self.prelu = PReLU(out_ch)

    def __call__(self, x):
        return self.prelu(self.conv(x))


class ConvTranspose(nnx.Module):
    """PyTorch's `ConvTranspose2d(in_ch, out_ch, kernel, stride, padding)` with bias.

    The kernel is stored (k, k, in, out), unflipped: `kernel[i, j, a, b] == torch_weight[a, b, i, j]`.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, *, rngs: nnx.Rngs):
        bound = 1.0 / (out_ch * kernel * kernel) ** 0.5  # PyTorch's default fan-in bound
        self.kernel = nnx.Param(
            jax.random.uniform(rngs.params(), (kernel, kernel, in_ch, out_ch), jnp.float32, -bound, bound)
        )
        self.bias = nnx.Param(jax.random.uniform(rngs.params(), (out_ch,), jnp.float32, -bound, bound))
        self.stride = stride
        self.padding = padding

    def __call__(self, x):
        return ops.conv_transpose(x, self.kernel[...], self.bias[...], self.stride, self.padding)
