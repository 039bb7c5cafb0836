"""DMVFN: nine MVFBs, a backward warp and a routing module (NHWC, frames in [0, 1]).

Two call modes:
- `train_outputs(img0, img1, gates)`: all nine blocks run; returns the nine merged outputs of
  the official training mode (ungated update for blocks 0-7, gated state for block 8).
- `infer(img0, img1, gates)`: a block whose gate is 0 for every sample is skipped with
  `lax.cond` (no compute spent on it, also under `jit`); gates apply per sample unless
  `first_decides=True` (the official quirk: batch element 0 decides for everyone).

Any H x W works: inputs are padded to a multiple of 16 by edge replication and outputs are
cropped back; multiples of 16 pass through untouched.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from dmvfn_jax.models import grid, mvfb, ops
from dmvfn_jax.models import routing as routing_lib
from dmvfn_jax.models.mvfb import MVFB

WIDTHS = (160, 160, 160, 80, 80, 80, 44, 44, 44)
SCALES = (4, 4, 4, 2, 2, 2, 1, 1, 1)
SIZE_MULTIPLE = 16
EMPTY_CHOICES = ("merge", "img0")


class FlowState(NamedTuple):
    flow: jax.Array  # (B, H, W, 4): [:2] warps img0, [2:] warps img1
    mask: jax.Array  # (B, H, W, 1) fusion logits
    warped0: jax.Array
    warped1: jax.Array


class InferenceResult(NamedTuple):
    prediction: jax.Array  # (B, H, W, 3) in [0, 1]
    flow: jax.Array  # (B, H, W, 4) final voxel flow
    mask: jax.Array  # (B, H, W, 1) sigmoid of the fusion mask
    gates: jax.Array  # (B, n) gates actually applied


def rollout(step: Callable[[jax.Array, jax.Array, Any], Any], prev: jax.Array, cur: jax.Array,
            steps: int, *, scan: bool = False):
    """Autoregressive prediction, the one loop of the package (`Predictor.rollout`, the evaluation
    step): `step(prev, cur, k)` for k = 0 .. steps-1 returns prediction k (an array, or anything
    with a `.prediction`), which becomes the newer input of step k + 1. Returns the steps' results.

    `scan=True` (inside `jit`) runs the loop as one `lax.scan`, so that `step` is traced and
    compiled once instead of `steps` times: k is then a traced int32, `step` returns
    `(prediction, extras)`, and the result is `extras` stacked along a new leading axis (steps, ...)."""
    if scan:
        def body(carry, k):
            a, b = carry
            pred, extras = step(a, b, k)
            return (b, pred), extras

        return jax.lax.scan(body, (prev, cur), jnp.arange(steps, dtype=jnp.int32))[1]
    outs = []
    for k in range(steps):
        out = step(prev, cur, k)
        outs.append(out)
        prev, cur = cur, getattr(out, "prediction", out)
    return outs


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The size a DMVFN runs frames of this size at: padded to multiples of SIZE_MULTIPLE."""
    return tuple(-(-n // SIZE_MULTIPLE) * SIZE_MULTIPLE for n in (height, width))


def warp_form(platform: str, height: int, width: int) -> str:
    """The warp's form (`ops.warp_impl_for`) a DMVFN traces on `platform` for frames of this size."""
    return ops.warp_impl_for(platform, 3, *padded_size(height, width))


def layout_form(platform: str, height: int, width: int) -> str:
    """The blocks' layout (`grid.choose_layout`) a DMVFN traces on `platform` for frames of this size."""
    return grid.choose_layout(platform, *padded_size(height, width))


def merge(img0, img1, flow, mask):
    """clamp(sigmoid(m) * warp(img0, f[:2]) + (1 - sigmoid(m)) * warp(img1, f[2:]), 0, 1)."""
    with jax.named_scope("merge"):
        m = jax.nn.sigmoid(mask)
        out = m * ops.warp(img0, flow[..., 0:2]) + (1 - m) * ops.warp(img1, flow[..., 2:4])
        return jnp.clip(out, 0.0, 1.0)


def _check_frames(img0, img1):
    if img0.ndim != 4 or img0.shape != img1.shape or img0.shape[-1] != 3:
        raise ValueError(
            f"DMVFN takes two (B, H, W, 3) frames of the same shape; got {img0.shape} and {img1.shape}"
        )


def _gate_column(gates, i):
    return gates[:, i].reshape(-1, 1, 1, 1)


def _block_input(img0, img1, state: FlowState) -> jax.Array:
    """A block's input, 13 channels a pixel: both frames, both warped frames and the mask (on pixels or cells)."""
    return jnp.concatenate([img0, img1, state.warped0, state.warped1, state.mask], axis=-1)


def _gated(state: FlowState, flow_d, mask_d, gate):
    """The flow and mask after a block's update, scaled by its gate (0: switched off)."""
    return state.flow + gate * flow_d, state.mask + gate * mask_d


class DMVFN(nnx.Module):
    """The DMVFN network. Frames are (B, H, W, 3) in [0, 1], in the checkpoint's channel order."""

    def __init__(
        self,
        *,
        rngs: nnx.Rngs,
        widths: Sequence[int] = WIDTHS,
        scales: Sequence[int] = SCALES,
        dtype=None,
        conv_form: str | None = None,
        routing_rescale: bool = True,
        routing_inputs: str = "frames",
        layout: str | None = None,
    ):
        """`dtype`: computation dtype of the blocks' convs (e.g. `jnp.bfloat16`); parameters,
        flows, warps and outputs stay float32.

        `conv_form`: how the convs over the blocks' 17 input channels are computed, the same
        values up to float reassociation (`mvfb.FORMS`); None chooses per backend at trace time
        (`mvfb.choose_form`: on CPU the measured choice for the input's size, "plain" elsewhere).

        `routing_rescale`: the official routing module's rescaling of v to sum n/2 (True), or the
        sigmoid's v as it is; `routing_inputs`: what the routing module reads, the two frames (the
        official) or a form of their difference (`routing.ROUTING_INPUTS`); checkpoints record both.

        `layout`: how the blocks hold their tensors, the same values up to float reassociation
        (`grid.LAYOUTS`): "pixels" (NHWC, as the official code) or "cells" (8 x 8 pixels per
        cell, lane-dense on a TPU; `dmvfn_jax.models.grid`); None chooses per platform at trace
        time (`grid.choose_layout`: cells on a TPU, pixels elsewhere).
        """
        if len(widths) != len(scales):
            raise ValueError(f"widths {widths} and scales {scales} differ in length")
        if conv_form is not None and conv_form not in mvfb.FORMS:
            raise ValueError(f"conv_form must be None or one of {mvfb.FORMS}, got {conv_form!r}")
        if layout is not None and layout not in grid.LAYOUTS:
            raise ValueError(f"layout must be None or one of {grid.LAYOUTS}, got {layout!r}")
        self.blocks = nnx.List([MVFB(nf, dtype=dtype, rngs=rngs) for nf in widths])
        self.routing = routing_lib.RoutingModule(len(widths), rescale=routing_rescale, inputs=routing_inputs,
                                                   rngs=rngs)
        self.widths = tuple(widths)
        self.scales = tuple(scales)
        self.conv_form = conv_form
        self.layout = layout

    @property
    def num_blocks(self) -> int:
        return len(self.scales)

    @property
    def routing_options(self) -> dict:
        """The routing module's options, as `DMVFN(**...)` and the checkpoints take them."""
        return {"routing_rescale": self.routing.rescale, "routing_inputs": self.routing.inputs}

    # -- pieces ---------------------------------------------------------------------------
    def routing_probs(self, img0: jax.Array, img1: jax.Array) -> jax.Array:
        """Routing probabilities v (B, n) on the unpadded frames."""
        _check_frames(img0, img1)
        with jax.named_scope("routing"):
            return self.routing(img0, img1)

    def _initial_state(self, img0, img1) -> FlowState:
        b, h, w, _ = img0.shape
        return FlowState(
            flow=jnp.zeros((b, h, w, 4), img0.dtype),
            mask=jnp.zeros((b, h, w, 1), img0.dtype),
            warped0=img0,
            warped1=img1,
        )

    def _frame_parts(self, img0, img1, conv_form: str | None = None) -> list[tuple]:
        """Per block, the `(conv0[0], conv1)` parts over the frame channels (`mvfb.frame_parts`),
        None where the convs run plain. The convs that read the frames at one resolution form a
        group (all nine conv1; the conv0[0] of the blocks at each scale). `conv_form`: this
        call's form; None: the model's (`self.conv_form`, else the backend's choice)."""
        if conv_form is not None and conv_form not in mvfb.FORMS:
            raise ValueError(f"conv_form must be None or one of {mvfb.FORMS}, got {conv_form!r}")
        form = conv_form or self.conv_form or mvfb.choose_form(jax.default_backend(), *img0.shape[:3])
        if form == "plain":
            return [(None, None)] * self.num_blocks
        parts = [[None, None] for _ in self.blocks]
        frames = jnp.concatenate([img0, img1], axis=-1)
        if self.blocks[0].dtype is not None:
            frames = frames.astype(self.blocks[0].dtype)
        # (slot in the block's parts, scale, blocks): conv1 of all, conv0[0] of each scale's
        groups = [(1, 1, list(range(self.num_blocks)))]
        groups += [(0, s, [i for i, t in enumerate(self.scales) if t == s]) for s in sorted(set(self.scales))]
        for slot, scale, members in groups:
            x = frames if scale == 1 else ops.resize_by(frames, 1.0 / scale)
            units = [self.blocks[i].conv1 if slot else self.blocks[i].conv0[0] for i in members]
            for i, part in zip(members, mvfb.frame_parts(form, x, [u.conv.kernel[...] for u in units])):
                parts[i][slot] = part
        return [tuple(p) for p in parts]

    def _block_update(self, i, img0, img1, state: FlowState, parts=None):
        """Block i's `(flow_d, mask_d)`; `parts`: `_frame_parts`' list (None: the plain form). Its
        operations are named `block<i>` in the compiled program."""
        with jax.named_scope(f"block{i}"):
            x13 = _block_input(img0, img1, state)
            return self.blocks[i](x13, state.flow, self.scales[i], (None, None) if parts is None else parts[i])

    @staticmethod
    def _advance(img0, img1, state: FlowState, flow_d, mask_d, gate) -> FlowState:
        with jax.named_scope("advance"):
            flow, mask = _gated(state, flow_d, mask_d, gate)
            return FlowState(flow, mask, ops.warp(img0, flow[..., 0:2]), ops.warp(img1, flow[..., 2:4]))

    def layout_for(self, height: int, width: int) -> str:
        """The layout of a call on frames of this padded size: the model's, else the platform's."""
        return self.layout or grid.choose_layout(ops.platform(), height, width)

    def _cells_update(self, i, fr: grid.Frames, state: FlowState):
        """`_block_update` over cells (`grid.block`)."""
        with jax.named_scope(f"block{i}"):
            return grid.block(self.blocks[i], _block_input(fr.cells0, fr.cells1, state), state.flow, self.scales[i])

    @staticmethod
    def _cells_advance(fr: grid.Frames, state: FlowState, flow_d, mask_d, gate) -> FlowState:
        with jax.named_scope("advance"):
            flow, mask = _gated(state, flow_d, mask_d, gate)
            return FlowState(flow, mask, *grid.warps(fr, flow))

    def block_alone(self, i: int, img0: jax.Array, img1: jax.Array) -> FlowState:
        """Block `i` applied once to the frames from the initial state (zero flow and mask), its
        17-channel convs in the plain form: one block's share of `infer`, e.g. for per-block
        FLOP counts (`evaluation.flops`)."""
        state = self._initial_state(img0, img1)
        flow_d, mask_d = self._block_update(i, img0, img1, state)
        return self._advance(img0, img1, state, flow_d, mask_d, 1.0)

    # -- training mode --------------------------------------------------------------------
    def train_outputs(self, img0: jax.Array, img1: jax.Array, gates: jax.Array) -> list[jax.Array]:
        """All blocks run; returns the n merged outputs, each (B, H, W, 3).

        Output i < n-1 merges the ungated update `flow + flow_d_i`; the last output merges
        the gated state. `gates` (B, n) may carry a straight-through gradient. (Always batched:
        running the samples one by one, as `infer` does on CPU, makes the backward pass several
        times slower there; BENCHMARKS.md.)
        """
        _check_frames(img0, img1)
        h, w = img0.shape[1:3]
        p0, p1 = ops.pad_to_multiple(img0, SIZE_MULTIPLE), ops.pad_to_multiple(img1, SIZE_MULTIPLE)
        gates = jnp.broadcast_to(jnp.asarray(gates, p0.dtype), (p0.shape[0], self.num_blocks))
        return [o[:, :h, :w] for o in self._train_blocks(p0, p1, gates)]

    def _train_blocks(self, p0, p1, gates) -> list[jax.Array]:
        if self.layout_for(*p0.shape[1:3]) == "cells":
            return self._train_blocks_cells(p0, p1, gates)
        state = self._initial_state(p0, p1)
        parts = self._frame_parts(p0, p1)
        outputs = []
        for i in range(self.num_blocks):
            flow_d, mask_d = self._block_update(i, p0, p1, state, parts)
            if i < self.num_blocks - 1:
                outputs.append(merge(p0, p1, state.flow + flow_d, state.mask + mask_d))
            state = self._advance(p0, p1, state, flow_d, mask_d, _gate_column(gates, i))
        outputs.append(merge(p0, p1, state.flow, state.mask))
        return outputs

    def _train_blocks_cells(self, p0, p1, gates) -> list[jax.Array]:
        """`_train_blocks` over cells; the outputs as NHWC."""
        fr = grid.frames(p0, p1)
        state = FlowState(*grid.initial_state(fr))
        outputs = []
        for i in range(self.num_blocks):
            flow_d, mask_d = self._cells_update(i, fr, state)
            if i < self.num_blocks - 1:
                outputs.append(grid.merge(fr, state.flow + flow_d, state.mask + mask_d))
            state = self._cells_advance(fr, state, flow_d, mask_d, _gate_column(gates, i))
        outputs.append(grid.blend(state.mask, state.warped0, state.warped1))  # the state's warps: `merge`'s
        return [grid.to_pixels(o) for o in outputs]

    def train_forward(
        self,
        img0: jax.Array,
        img1: jax.Array,
        key: jax.Array,
        estimator: str = "bernoulli",
        temperature: float = 1.0,
        rows: routing_lib.Rows | None = None,
    ) -> tuple[list[jax.Array], jax.Array, jax.Array]:
        """Routing, hard gates from a training estimator, and the n training outputs.

        Returns `(outputs, gates, v)`; gradients reach the routing module through the gates
        (`estimator="bernoulli"`: official straight-through; `"gumbel"`: binary Gumbel-softmax).
        `rows=(start, total)`: the frames are rows start.. of a batch of `total`, and the gates
        are those drawn for the whole batch (`routing.batch_noise`).
        """
        v = self.routing_probs(img0, img1)
        gates = routing_lib.training_gates(v, key, estimator, temperature, rows)
        return self.train_outputs(img0, img1, gates), gates, v

    # -- inference mode -------------------------------------------------------------------
    def infer(
        self,
        img0: jax.Array,
        img1: jax.Array,
        gates: jax.Array | None = None,
        *,
        first_decides: bool = False,
        empty: str = "merge",
        sequential: bool | None = None,
        conv_form: str | None = None,
    ) -> InferenceResult:
        """Prediction of the next frame with the given hard gates (B, n); None runs every block.

        A block runs when any sample's gate is 1 (or, with `first_decides`, when sample 0's is);
        its update is applied per sample. A sample for which no block ran gets the merge of the
        zero state (`empty="merge"`, the average of the two frames) or `img0`
        (`empty="img0"`, the official scripts' quirk).

        `sequential=True` runs the samples one after another (`lax.map`), each skipping the
        blocks its own gates switch off; the results are the same. XLA's CPU convolutions slow
        down more than linearly with the batch (BENCHMARKS.md), so the default (None) is
        sequential on a CPU backend for batches > 1 and batched elsewhere.

        `conv_form`: the form of the 17-channel convs for this call (`mvfb.FORMS`; the same values
        up to float reassociation); None: the model's `conv_form`, else the backend's choice.
        """
        _check_frames(img0, img1)
        if empty not in EMPTY_CHOICES:
            raise ValueError(f"empty must be one of {EMPTY_CHOICES}, got {empty!r}")
        b, h, w, _ = img0.shape
        p0, p1 = ops.pad_to_multiple(img0, SIZE_MULTIPLE), ops.pad_to_multiple(img1, SIZE_MULTIPLE)
        if gates is None:
            gates = jnp.ones((b, self.num_blocks), p0.dtype)
            static_all = True
        else:
            gates = jnp.broadcast_to(jnp.asarray(gates, p0.dtype), (b, self.num_blocks))
            static_all = False
        if first_decides:
            gates = jnp.broadcast_to(gates[0:1], gates.shape)
        if sequential is None:
            sequential = b > 1 and jax.default_backend() == "cpu"
        layout = self.layout_for(*p0.shape[1:3])
        if sequential:
            def one(args):
                a, c, g = args
                state = self._run_blocks(a[None], c[None], g[None], static_all, conv_form, layout)
                return jax.tree.map(lambda x: x[0], state)

            state = jax.lax.map(one, (p0, p1, gates))
        else:
            state = self._run_blocks(p0, p1, gates, static_all, conv_form, layout)
        if layout == "cells":  # the state's warps are `merge`'s
            pred, flow = grid.to_pixels(grid.blend(state.mask, state.warped0, state.warped1)), grid.to_pixels(state.flow)
            mask = grid.to_pixels(state.mask)
        else:
            pred, flow, mask = merge(p0, p1, state.flow, state.mask), state.flow, state.mask
        if empty == "img0":
            ran = jnp.any(gates > 0, axis=1).reshape(-1, 1, 1, 1)
            pred = jnp.where(ran, pred, p0)
        crop = lambda x: x[:, :h, :w]
        return InferenceResult(crop(pred), crop(flow), crop(jax.nn.sigmoid(mask)), gates)

    def _run_blocks(self, p0, p1, gates, static_all: bool, conv_form: str | None = None,
                    layout: str = "pixels") -> FlowState:
        """The blocks in order; block i is skipped (lax.cond) when no row of `gates` switches it on.
        The state comes back in `layout`."""
        if layout == "cells":
            fr = grid.frames(p0, p1)
            state = FlowState(*grid.initial_state(fr))
        else:
            state = self._initial_state(p0, p1)
            parts = self._frame_parts(p0, p1, conv_form)
        for i in range(self.num_blocks):
            gate = _gate_column(gates, i)

            def run(s, i=i, gate=gate):
                if layout == "cells":
                    return self._cells_advance(fr, s, *self._cells_update(i, fr, s), gate)
                flow_d, mask_d = self._block_update(i, p0, p1, s, parts)
                return self._advance(p0, p1, s, flow_d, mask_d, gate)

            if static_all:
                state = run(state)
            else:
                state = jax.lax.cond(jnp.any(gates[:, i] > 0), run, lambda s: s, state)
        return state

    def predict(
        self,
        img0: jax.Array,
        img1: jax.Array,
        routing: routing_lib.Routing = "threshold",
        key: jax.Array | None = None,
        *,
        first_decides: bool = False,
        empty: str = "merge",
        sequential: bool | None = None,
        conv_form: str | None = None,
    ) -> InferenceResult:
        """Routing followed by inference: `routing` is "sample", "threshold", "all" or gates.
        `first_decides`, `empty`, `sequential` and `conv_form` are passed to `infer`."""
        routing_lib.check_routing(routing, self.num_blocks)
        opts = dict(first_decides=first_decides, empty=empty, sequential=sequential, conv_form=conv_form)
        if isinstance(routing, str) and routing == "all":
            return self.infer(img0, img1, None, **opts)
        v = self.routing_probs(img0, img1)
        gates = routing_lib.select_gates(v, routing, key)
        return self.infer(img0, img1, gates, **opts)

    def __call__(self, img0, img1, routing="threshold", key=None, **kwargs) -> jax.Array:
        """The predicted next frame (B, H, W, 3); see `predict` for the options."""
        return self.predict(img0, img1, routing, key, **kwargs).prediction
