"""MVFB: the multi-scale voxel flow block of DMVFN (NHWC), and the forms of its 17-channel
convs (`FORMS`): the same values, computed in the way XLA's CPU backend runs faster."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from dmvfn_jax.models import ops
from dmvfn_jax.models.layers import ConvTranspose, ConvUnit

IN_PLANES = 17  # img0, img1, warped img0, warped img1 (3 each), mask (1), flow (4)
FRAME_CHANNELS = 6  # img0, img1: the same in every block

# How the convs that read the 17 channels (`conv1`, `conv0[0]`) are computed; the values are
# the same up to float reassociation (BENCHMARKS.md, attempt 15):
#   "plain":  one conv over the 17 channels, as the official code does;
#   "split":  a conv over the 6 frame channels plus one over the other 11, per block;
#   "shared": the frame channels convolved once, with the kernels of every block that reads them
#             at that resolution stacked along the output axis, plus a conv over the other 11
#             channels per block;
#   "shared12": "shared" with the 11 channels padded by a zero channel to 12.
FORMS = ("plain", "split", "shared", "shared12")
# The form on XLA's CPU backend, by the pixels of one call (batch x height x width), from the
# whole network timed in each form side by side (bench/conv_forms.py; BENCHMARKS.md, attempt
# 15): at 1x256x832, 1x512x1024 and in the 8x256x256 training step "shared12" was the fastest,
# at 1x256x448 "plain" was. (Timed alone, each group of these convs had its own fastest form, `python
# bench/conv_kernels.py --forms`; in the network one form at every site beat that mix.)
CPU_FORM = "shared12"
CPU_FORM_MIN_PIXELS = 2**17  # between 256x448 (114,688) and 256x832 (212,992)


class FramePart(NamedTuple):
    """A conv's part over the frame channels, and the width its other channels are padded to."""

    value: jax.Array
    pad_to: int | None = None


def choose_form(backend: str, batch: int, height: int, width: int) -> str:
    """The form for one call on `backend`: on CPU the measured choice for its size; "plain" on
    every other backend (not measured there)."""
    if backend == "cpu" and batch * height * width >= CPU_FORM_MIN_PIXELS:
        return CPU_FORM
    return "plain"


def _conv(x, kernel, stride: int):
    return ops.conv_general_dilated(x, kernel, (stride, stride), ((1, 1), (1, 1)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def frames_convs(frames: jax.Array, kernels, stride: int = 2) -> list[jax.Array]:
    """The frame channels' part of several convs at once: `conv(frames, k[:, :, :6])` for each
    kernel `k` (3, 3, 17, out_k), as one conv with the kernels stacked; no bias."""
    widths = [k.shape[-1] for k in kernels]
    stacked = jnp.concatenate([k[:, :, :FRAME_CHANNELS] for k in kernels], axis=-1).astype(frames.dtype)
    y = _conv(frames, stacked, stride)
    return jnp.split(y, list(itertools.accumulate(widths))[:-1], axis=-1)


def rest_conv(rest: jax.Array, kernel: jax.Array, stride: int = 2, pad_to: int | None = None) -> jax.Array:
    """The other 11 channels' part of a conv over `cat(frames, rest)`; no bias. `pad_to`: zero
    channels appended to `rest` and to the kernel (the same values)."""
    k = kernel[:, :, FRAME_CHANNELS:].astype(rest.dtype)
    if pad_to is not None and pad_to > rest.shape[-1]:
        extra = pad_to - rest.shape[-1]
        rest = jnp.concatenate([rest, jnp.zeros((*rest.shape[:-1], extra), rest.dtype)], axis=-1)
        k = jnp.concatenate([k, jnp.zeros((*k.shape[:2], extra, k.shape[-1]), k.dtype)], axis=-2)
    return _conv(rest, k, stride)


def convs_over_frames(form: str, frames: jax.Array, rests, kernels, stride: int = 2) -> list[jax.Array]:
    """`conv(cat(frames, rests[i]), kernels[i])` for every i (no bias), computed in `form`."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "plain":
        return [_conv(jnp.concatenate([frames, r], axis=-1), k, stride) for r, k in zip(rests, kernels)]
    parts = frame_parts(form, frames, kernels, stride)
    return [p.value + rest_conv(r, k, stride, p.pad_to) for p, r, k in zip(parts, rests, kernels)]


def frame_parts(form: str, frames: jax.Array, kernels, stride: int = 2) -> list[FramePart]:
    """The frame channels' parts of the convs with `kernels` in `form` (not "plain"): one conv
    per kernel ("split") or one for all ("shared", "shared12")."""
    if form == "split":
        return [FramePart(frames_convs(frames, [k], stride)[0]) for k in kernels]
    pad_to = 12 if form == "shared12" else None
    return [FramePart(y, pad_to) for y in frames_convs(frames, kernels, stride)]


class MVFB(nnx.Module):
    """One voxel-flow block with `nf` features, run at a given `scale` (4, 2 or 1).

    Attribute names follow the official state-dict keys (`conv0`, `convblock`, `conv_sq`,
    `conv1`, `convblock1`, `lastconv`).
    """

    def __init__(self, nf: int, *, in_planes: int = IN_PLANES, dtype=None, rngs: nnx.Rngs):
        if nf % 4:
            raise ValueError(f"MVFB width must be a multiple of 4, got {nf}")
        d = dict(dtype=dtype, rngs=rngs)
        self.conv0 = nnx.List([ConvUnit(in_planes, nf // 2, 2, **d), ConvUnit(nf // 2, nf, 2, **d)])
        self.convblock = nnx.List([ConvUnit(nf, nf, **d) for _ in range(3)])
        self.conv_sq = ConvUnit(nf, nf // 4, **d)
        self.conv1 = ConvUnit(in_planes, 8, 2, **d)
        self.convblock1 = ConvUnit(8, 8, **d)
        self.lastconv = ConvTranspose(nf // 4 + 8, 5, 4, 2, 1, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x13: jax.Array, flow4: jax.Array, scale: int,
                 frame_parts: tuple[FramePart | None, FramePart | None] = (None, None)) -> tuple[jax.Array, jax.Array]:
        """Returns `(flow_d, mask_d)`, (B, H, W, 4) and (B, H, W, 1), for inputs at H x W.

        `x13` is `cat(img0, img1, warped0, warped1, mask)`, `flow4` the flow so far.
        H and W must be multiples of 16. With a computation `dtype` (bfloat16), the convs run in
        it and the outputs come back as float32.

        `frame_parts`: `conv0[0]`'s and `conv1`'s convs over the frame channels alone
        (`frame_parts`, made before the blocks run: the frames are the same in every block);
        None: that conv runs over all 17 channels. The values are the same up to float
        reassociation.
        """
        part0, part1 = frame_parts
        if self.dtype is not None:
            x13, flow4 = x13.astype(self.dtype), flow4.astype(self.dtype)
        rest7 = x13[..., FRAME_CHANNELS:]
        x0 = x13 if part0 is None else rest7
        if scale == 1:
            xs, fs = x0, flow4
        else:
            xs = ops.resize_by(x0, 1.0 / scale)
            fs = ops.resize_by(flow4, 1.0 / scale) * (1.0 / scale)
        a = _unit(self.conv0[0], jnp.concatenate([xs, fs], axis=-1), part0)
        a = self.conv0[1](a)
        b = a
        for unit in self.convblock:
            b = unit(b)
        a = self.conv_sq(b + a)
        a = ops.resize_by(a, scale * 2)  # back to H/2
        c = _unit(self.conv1, jnp.concatenate([x13 if part1 is None else rest7, flow4], axis=-1), part1)
        c = self.convblock1(c)
        out = self.lastconv(jnp.concatenate([a, c], axis=-1)).astype(jnp.float32)
        return out[..., 0:4], out[..., 4:5]


def _unit(unit: ConvUnit, x: jax.Array, frame_part: FramePart | None) -> jax.Array:
    """`unit` over `x` (17 channels), or over `cat(frames, x)` (x: the other 11) given the
    frames' part of the conv."""
    if frame_part is None:
        return unit(x)
    conv = unit.conv
    dtype = conv.dtype or x.dtype
    stride = conv.strides if isinstance(conv.strides, int) else conv.strides[0]
    y = frame_part.value.astype(dtype) + rest_conv(x.astype(dtype), conv.kernel[...], stride, frame_part.pad_to)
    return unit.prelu(y + conv.bias[...].astype(dtype))
