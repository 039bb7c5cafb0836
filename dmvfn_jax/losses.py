"""The DMVFN training loss: a Laplacian-pyramid L1 on every block's output plus a VGG19
perceptual term on the last one, as the official training code defines them.

    total = sum_i 0.8**(n-1-i) * laplacian_loss(outputs[i], gt) + 0.5 * perceptual_loss(vgg, outputs[-1], gt)

Everything is NHWC float32 with frames in [0, 1]. The VGG19 weights are torchvision's ImageNet
`features`, converted with `python convert_weights.py vgg19` and loaded with
`dmvfn_jax.losses.load_vgg19`; they are frozen (gradients reach the prediction only).
Parity with a PyTorch implementation written from the spec is checked in `tests/test_losses.py`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dmvfn_jax.models.layers import torch_conv

# -- Laplacian pyramid --------------------------------------------------------------------
# outer([1, 4, 6, 4, 1]) / 256, applied to every channel on its own (depthwise).
_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32)
GAUSS_KERNEL = (np.outer(_TAPS, _TAPS) / 256.0).astype(np.float32)


# Each axis of the pyramid's two resamplings is linear, so it can run as one matrix product: the
# reflect padding folded into the matrix's edge rows. XLA compiles a pyramid of those (and its
# gradient) in a fraction of the time the shifted adds take, and on CPU runs it faster while the
# axis is short; past `MATRIX_MAX` the dense matrix's work (n/2 multiply-adds per output) loses to
# the five taps. BENCHMARKS.md, Decisions, attempt 17.
# The longest axis (the input's for the blur, the output's for the upsample) run as a matrix; read
# when a pyramid is traced, so 0 traces the shifted adds everywhere (the form before attempt 17).
MATRIX_MAX = 256
_HIGHEST = jax.lax.Precision.HIGHEST  # float32 products on every backend (no TF32 or bf16 passes)


def _reflect(j: int, n: int) -> int:
    """Index `j` of an axis of length n after PyTorch's 'reflect' padding (the edge not repeated)."""
    return -j if j < 0 else 2 * (n - 1) - j if j >= n else j


@functools.lru_cache(maxsize=None)
def _blur_half_matrix(n: int) -> np.ndarray:
    """(n/2, n): output m is `sum_k taps[k] / 16 * x[reflect(2m + k - 2)]`."""
    matrix = np.zeros((n // 2, n), np.float32)
    for m in range(n // 2):
        for k, t in enumerate(_TAPS / 16.0):
            matrix[m, _reflect(2 * m + k - 2, n)] += t
    return matrix


@functools.lru_cache(maxsize=None)
def _upsample_matrix(n: int) -> np.ndarray:
    """(2n, n): output 2m is `(x[m-1] + 6 x[m] + x[m+1]) / 8`, output 2m+1 is `(x[m] + x[m+1]) / 2`,
    with `x[-1] = x[1]` and `x[n] = x[n-1]` (`_upsample_axis_taps`)."""
    matrix = np.zeros((2 * n, n), np.float32)
    for m in range(n):
        prev, nxt = (m - 1 if m else 1), min(m + 1, n - 1)
        for j, weight in ((prev, 0.125), (m, 0.75), (nxt, 0.125)):
            matrix[2 * m, j] += weight
        for j in (m, nxt):
            matrix[2 * m + 1, j] += 0.5
    return matrix


def _along(matrix: np.ndarray, x: jax.Array, axis: int) -> jax.Array:
    """`matrix` (m, n) applied to axis 1 or 2 (H or W, of length n) of an NHWC batch."""
    spec = {1: "mh,bhwc->bmwc", 2: "mw,bhwc->bhmc"}[axis]
    return jnp.einsum(spec, jnp.asarray(matrix, x.dtype), x, precision=_HIGHEST)


def _upsample(x: jax.Array) -> jax.Array:
    """Zeros inserted (the values land on even rows and columns), then blurred with 4x the kernel.

    Computed without the zeros: along each axis, output `2m` is `(x[m-1] + 6 x[m] + x[m+1]) / 8`
    and output `2m+1` is `(x[m] + x[m+1]) / 2`, where the reflect padding of the zero-inserted
    image gives `x[-1] = x[1]` and `x[n] = x[n-1]`: the same sums as blurring the zero-inserted
    image. Along axes whose output is up to `MATRIX_MAX` long, as a matrix product (attempt 17);
    along longer ones per output phase, a quarter of the blur's work (BENCHMARKS.md, attempt 13).
    """
    for axis in (1, 2):
        n = x.shape[axis]
        x = _along(_upsample_matrix(n), x, axis) if 2 * n <= MATRIX_MAX else _upsample_axis_taps(x, axis)
    return x


def _upsample_axis_taps(x: jax.Array, axis: int) -> jax.Array:
    n = x.shape[axis]
    take = lambda start, stop: jax.lax.slice_in_dim(x, start, stop, axis=axis)  # noqa: E731
    prev = jnp.concatenate([take(1, 2), take(0, n - 1)], axis=axis)  # x[m-1], x[-1] = x[1]
    nxt = jnp.concatenate([take(1, n), take(n - 1, n)], axis=axis)  # x[m+1], x[n] = x[n-1]
    even = (prev + 6.0 * x + nxt) * 0.125
    odd = (x + nxt) * 0.5
    both = jnp.stack([even, odd], axis=axis + 1)
    return both.reshape(x.shape[:axis] + (2 * n,) + x.shape[axis + 1 :])


def _blur_half(x: jax.Array) -> jax.Array:
    """`conv2d(pad(x, 2, 'reflect'), GAUSS_KERNEL, groups=C)[:, ::2, ::2]` on NHWC, computing only
    the rows and columns that are kept.

    The kernel is separable (outer([1, 4, 6, 4, 1] / 16, [1, 4, 6, 4, 1] / 16)), so it runs as
    one pass per axis: a matrix product, or on axes longer than `MATRIX_MAX` five shifted adds
    (elementwise work that XLA fuses, several times faster than a depthwise conv on CPU:
    BENCHMARKS.md, attempts 3 and 13). Exact float32 on every backend (no TF32). The full blur it
    shortcuts is in tests/test_losses.py.
    """
    for axis in (1, 2):
        n = x.shape[axis]
        x = _along(_blur_half_matrix(n), x, axis) if n <= MATRIX_MAX else _blur_half_axis_taps(x, axis)
    return x


def _blur_half_axis_taps(x: jax.Array, axis: int) -> jax.Array:
    n = x.shape[axis]
    padded = jnp.pad(x, [(2, 2) if a == axis else (0, 0) for a in range(x.ndim)], mode="reflect")
    return sum(float(t) / 16.0 * jax.lax.slice_in_dim(padded, k, k + n, 2, axis) for k, t in enumerate(_TAPS))


def check_pyramid_size(shape: tuple[int, ...], levels: int) -> None:
    if len(shape) != 4:
        raise ValueError(f"laplacian pyramid: expected an NHWC batch, got shape {shape}")
    h, w = shape[1], shape[2]
    step = 2**levels
    smallest = 2 ** (levels - 1) * 4  # the last level's image must be even and at least 4 (reflect pad 2)
    if h % step or w % step or h < smallest or w < smallest:
        raise ValueError(
            f"laplacian pyramid of {levels} levels needs H and W that are multiples of {step} and at least "
            f"{smallest}; got {h}x{w}"
        )


def laplacian_pyramid(x: jax.Array, levels: int = 5) -> list[jax.Array]:
    """The `levels` band-pass images of the official pyramid (no low-pass residual).

    At each level: `filtered = blur(current)`, `down = filtered[:, ::2, ::2]`,
    `band = current - upsample(down)`, and the next level's `current` is `down`.
    """
    check_pyramid_size(x.shape, levels)
    bands = []
    current = x
    for _ in range(levels):
        down = _blur_half(current)
        bands.append(current - _upsample(down))
        current = down
    return bands


def _pyramid_l1(bands_a: Sequence[jax.Array], bands_b: Sequence[jax.Array]) -> jax.Array:
    return sum(jnp.mean(jnp.abs(a - b)) for a, b in zip(bands_a, bands_b, strict=True))


def laplacian_loss(pred: jax.Array, gt: jax.Array, levels: int = 5) -> jax.Array:
    """Sum over the pyramid's bands of `mean |band(pred) - band(gt)|` (the official `LapLoss`).

    `pred` and `gt` are (B, H, W, C) with H and W multiples of `2**levels` (64x64 and up for 5
    levels: 64, 96, 224, 256, ... all work).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"laplacian_loss: pred {pred.shape} and gt {gt.shape} differ in shape")
    return _pyramid_l1(laplacian_pyramid(pred, levels), laplacian_pyramid(gt, levels))


# -- VGG19 perceptual loss ----------------------------------------------------------------
# torchvision `vgg19().features`: (index, in, out) of every conv up to relu5_1; each conv is
# followed by a ReLU at index + 1, and 2x2 max pools sit at the indices in POOL_INDICES.
VGG19_CONVS = (
    (0, 3, 64), (2, 64, 64),
    (5, 64, 128), (7, 128, 128),
    (10, 128, 256), (12, 256, 256), (14, 256, 256), (16, 256, 256),
    (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512),
    (28, 512, 512),
)  # fmt: skip
VGG19_CONV_INDICES = tuple(i for i, _, _ in VGG19_CONVS)
VGG19_ARCHITECTURE = "vgg19"  # the `architecture` of its checkpoints (dmvfn.json)
VGG19_LAYERS = "features[0:29]"  # the part of torchvision's VGG19 kept
POOL_INDICES = (4, 9, 18, 27)
FEATURE_INDICES = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
VGG_WEIGHTS = (1.0 / 2.6, 1.0 / 4.8, 1.0 / 3.7, 1.0 / 5.6, 10.0 / 1.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _max_pool_2x2(x: jax.Array) -> jax.Array:
    """`MaxPool2d(2, 2)`: odd trailing rows/columns are dropped, as in PyTorch."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


class VGG19Features(nnx.Module):
    """torchvision VGG19 `features[0:30]` (up to relu5_1), NHWC.

    The conv at torchvision index N is the attribute `convN`, so `features.N.weight` maps to
    `convN/kernel` (OIHW -> HWIO) and `features.N.bias` to `convN/bias`. Layers after index 29
    are not built: the loss never reads them.
    """

    def __init__(self, *, rngs: nnx.Rngs):
        for index, cin, cout in VGG19_CONVS:
            setattr(self, f"conv{index}", torch_conv(cin, cout, rngs=rngs))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """(B, H, W, 3) normalised input -> the 5 maps after features[1], [6], [11], [20], [29]."""
        feats = []
        for index in range(FEATURE_INDICES[-1] + 1):
            if index in VGG19_CONV_INDICES:
                x = getattr(self, f"conv{index}")(x)
            elif index in POOL_INDICES:
                x = _max_pool_2x2(x)
            else:  # every other index up to 29 is the ReLU after a conv
                x = jax.nn.relu(x)
                if index in FEATURE_INDICES:
                    feats.append(x)
        return tuple(feats)


def load_vgg19(checkpoint_dir) -> VGG19Features:
    """The frozen VGG19 features of a checkpoint written by `convert_weights.py vgg19`."""
    from dmvfn_jax import checkpoint as ckpt

    return ckpt.load_network(checkpoint_dir, VGG19_ARCHITECTURE, lambda meta: VGG19Features(rngs=nnx.Rngs(0)),
                             "convert torchvision weights with `python convert_weights.py vgg19`")[0]


def normalize_imagenet(x: jax.Array) -> jax.Array:
    """`(x - mean) / std` with the ImageNet statistics, per channel index as the channels are.

    **Quirk kept for parity:** the official training code feeds BGR frames here, so the red
    statistics meet the blue channel. Pass `x[..., ::-1]` to get ImageNet's RGB semantics.
    """
    mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
    std = jnp.asarray(IMAGENET_STD, x.dtype)
    return (x - mean) / std


def _frozen(vgg: VGG19Features) -> VGG19Features:
    """The same network with `stop_gradient` on every parameter (and no shared state)."""
    graphdef, state = nnx.split(vgg)
    return nnx.merge(graphdef, jax.lax.stop_gradient(state))


def perceptual_loss(vgg: VGG19Features, pred: jax.Array, gt: jax.Array) -> jax.Array:
    """`sum_k 0.1 * w_k * mean |f_k(pred) - f_k(gt)|` over relu1_1 .. relu5_1 (the official `VGGPerceptualLoss`).

    Both images are normalised with `normalize_imagenet`. The VGG parameters are frozen:
    gradients flow to `pred` only.
    """
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"perceptual_loss: pred {pred.shape} and gt {gt.shape} must be equal (B, H, W, 3)")
    net = _frozen(vgg)
    feats_pred = net(normalize_imagenet(pred))
    feats_gt = net(normalize_imagenet(gt))
    return sum(
        0.1 * w * jnp.mean(jnp.abs(fp - fg)) for w, fp, fg in zip(VGG_WEIGHTS, feats_pred, feats_gt, strict=True)
    )


# -- the training loss --------------------------------------------------------------------
LAP_DECAY = 0.8
VGG_SCALE = 0.5


def dmvfn_loss(
    outputs: Sequence[jax.Array], gt: jax.Array, vgg: VGG19Features | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The official per-triplet loss on the training outputs of DMVFN.

    Args:
      outputs: the n block outputs (n = 9 for DMVFN), each (B, H, W, 3), or one array stacked
        on a leading axis; output i is weighted `0.8 ** (n - 1 - i)`.
      gt: (B, H, W, 3) target frame.
      vgg: the frozen VGG19 features; None leaves the perceptual term out.
    Returns:
      `(total, terms)` with scalar `terms['lap']` (weighted Laplacian sum), `terms['vgg']`
      (`0.5 * perceptual_loss` on the last output, or 0.0) and `terms['total']`.
    """
    n = len(outputs)
    if n == 0:
        raise ValueError("dmvfn_loss: no outputs")
    for i in range(n):
        if outputs[i].shape != gt.shape:
            raise ValueError(f"dmvfn_loss: output {i} has shape {outputs[i].shape}, gt has {gt.shape}")
    # One pyramid over all outputs and gt stacked along the batch: one blur per level, not n + 1.
    b = gt.shape[0]
    with jax.named_scope("laplacian_loss"):
        stacked = jnp.concatenate([outputs[i] for i in range(n)] + [gt], axis=0)
        per_output = 0.0
        for band in laplacian_pyramid(stacked):
            band = band.reshape((n + 1, b) + band.shape[1:])
            per_output = per_output + jnp.mean(jnp.abs(band[:n] - band[n:]), axis=(1, 2, 3, 4))  # (n,)
        weights = jnp.asarray([LAP_DECAY ** (n - 1 - i) for i in range(n)], per_output.dtype)
        lap = jnp.sum(weights * per_output)
    if vgg is None:
        vgg_term = jnp.zeros((), lap.dtype)
    else:
        with jax.named_scope("perceptual_loss"):
            vgg_term = VGG_SCALE * perceptual_loss(vgg, outputs[-1], gt)
    total = lap + vgg_term
    return total, {"lap": lap, "vgg": vgg_term, "total": total}
