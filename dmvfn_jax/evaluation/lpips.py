"""LPIPS v0.1 with the AlexNet trunk (Zhang et al. 2018; the `lpips` package), NHWC, in JAX.

For images `x`, `y` in [-1, 1]:

1. both are shifted and scaled per channel: `(x - shift) / scale`, shift (-0.030, -0.088,
   -0.188), scale (0.458, 0.448, 0.450);
2. torchvision AlexNet `features[0:12]`: conv0 (11x11, stride 4, pad 2) ReLU -> relu1;
   max-pool 3/2, conv3 (5x5, pad 2) ReLU -> relu2; max-pool 3/2, conv6 (3x3) ReLU -> relu3;
   conv8 ReLU -> relu4; conv10 ReLU -> relu5 (3x3 convs padded by 1, pools unpadded, floor);
3. each feature map is divided by its per-pixel channel norm plus 1e-10, the squared
   difference of the two is weighted per channel by a 1x1 conv without bias (`lin0`..`lin4`,
   one output) and averaged over space; the distance is the sum over the 5 layers.

Weights: `python convert_weights.py lpips --alexnet alexnet-owt-7be5be79.pth --output DIR`
(torchvision's AlexNet file plus the linear layers that ship inside the `lpips` package), read
with `dmvfn_jax.evaluation.lpips.load_lpips(DIR)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dmvfn_jax.errors import InputError

# (torchvision features index, in channels, out channels, kernel, stride, padding)
ALEXNET_CONVS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1),
                 (8, 384, 256, 3, 1, 1), (10, 256, 256, 3, 1, 1))
CHANNELS = (64, 192, 384, 256, 256)
ARCHITECTURE = "lpips-alex-v0.1"  # the `architecture` of its checkpoints (dmvfn.json)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")


class LPIPS(nnx.Module):
    """LPIPS v0.1 (AlexNet). Parameters `convN/{kernel,bias}` and `linK/kernel`."""

    def __init__(self, *, rngs: nnx.Rngs):
        for index, cin, cout, k, stride, pad in ALEXNET_CONVS:
            setattr(self, f"conv{index}", nnx.Conv(cin, cout, (k, k), strides=stride,
                                                   padding=((pad, pad), (pad, pad)), rngs=rngs))
        for k, c in enumerate(CHANNELS):
            setattr(self, f"lin{k}", nnx.Conv(c, 1, (1, 1), use_bias=False, rngs=rngs))

    def features(self, x: jax.Array) -> list[jax.Array]:
        """relu1 .. relu5 of the AlexNet trunk for scaled input (B, H, W, 3)."""
        relu = jax.nn.relu
        f1 = relu(self.conv0(x))
        f2 = relu(self.conv3(_max_pool_3x3_s2(f1)))
        f3 = relu(self.conv6(_max_pool_3x3_s2(f2)))
        f4 = relu(self.conv8(f3))
        f5 = relu(self.conv10(f4))
        return [f1, f2, f3, f4, f5]

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """LPIPS distance per image, (B,), for (B, H, W, 3) images in [-1, 1]."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
            raise InputError(f"lpips: expected two (B, H, W, 3) images of one shape, got {x.shape} and {y.shape}")
        shift, scale = jnp.asarray(SHIFT, jnp.float32), jnp.asarray(SCALE, jnp.float32)
        fx = self.features((x - shift) / scale)
        fy = self.features((y - shift) / scale)
        total = 0.0
        for k, (a, b) in enumerate(zip(fx, fy)):
            a = a / (jnp.sqrt(jnp.sum(a * a, axis=-1, keepdims=True)) + 1e-10)
            b = b / (jnp.sqrt(jnp.sum(b * b, axis=-1, keepdims=True)) + 1e-10)
            total = total + getattr(self, f"lin{k}")((a - b) ** 2).mean(axis=(1, 2, 3))
        return total


def load_lpips(checkpoint_dir) -> LPIPS:
    """The LPIPS network of a checkpoint written by `convert_weights.py lpips`."""
    from dmvfn_jax import checkpoint as ckpt

    return ckpt.load_network(
        checkpoint_dir, ARCHITECTURE, lambda meta: LPIPS(rngs=nnx.Rngs(0)),
        "convert with `python convert_weights.py lpips --alexnet alexnet-owt-7be5be79.pth --output DIR`",
    )[0]
