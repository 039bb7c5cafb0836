"""The next-frame predictor as an ONNX graph, written from a DMVFN's parameters (needs `onnx`).

`python -m dmvfn_jax.deploy.export --format onnx` writes what `predictor_graph` builds. The graph is
what ONNX has single operators for, in NCHW from one `Transpose` at the entry to one at the exit:
`Conv` with its bias, `PRelu`, `Resize` (linear, `half_pixel`: PyTorch's `interpolate(bilinear,
align_corners=False)`, which `ops.resize_by` equals), `ConvTranspose`, `Pad` (edge) where the
frames are not multiples of 16, and one `If` per block for threshold routing. The backward warp
(`ops.warp`: bilinear, border) is both frames' at once from elementwise ops and four
`GatherElements` (the default), or one `GridSample` per frame (linear, border, align_corners=1:
PyTorch's `grid_sample` as the official code calls it), which onnxruntime's CPU kernel runs
slower (BENCHMARKS.md, "Export"). It computes what `DMVFN.predict(prev, cur, routing)` does with the convs in
the plain form, up to float rounding; `tests/test_export.py` bounds the difference against
`Predictor`, and its node counts.

The module mirrors `models/dmvfn.py` and `models/mvfb.py` op for op (the names below follow
them); a change to the model's computation needs the same change here, which those tests catch.
"""

from __future__ import annotations

import itertools

import numpy as np

from dmvfn_jax.models.dmvfn import padded_size

OPSET = 21  # GridSample's "linear" mode (20), Shape's `end` (15); onnxruntime >= 1.18
INPUTS = ("prev", "cur")
OUTPUT = "next"
BATCH = "b"  # the dynamic batch dimension's name
WARPS = ("gather", "grid_sample")  # the warp's forms (`predictor_graph`)


def _f32(x) -> np.ndarray:
    return np.asarray(x, np.float32)


class _Graph:
    """Nodes of one ONNX graph (the main graph or an `If` branch) under construction. Constants
    are initializers of the main graph, which branches read from the outer scope; equal constants
    (the same dtype, shape and values) are one initializer."""

    def __init__(self, names, initializers, constants=None):
        self.nodes = []
        self._names = names  # a shared counter: every value's name is unique in the model
        self._initializers = initializers
        self._constants = {} if constants is None else constants  # (dtype, shape, bytes) -> name

    def fresh(self, hint: str) -> str:
        return f"{hint}_{next(self._names)}"

    def const(self, value, hint: str = "c") -> str:
        from onnx import numpy_helper

        value = np.asarray(value)
        key = (value.dtype.str, value.shape, value.tobytes())
        if key not in self._constants:
            self._constants[key] = name = self.fresh(hint)
            self._initializers.append(numpy_helper.from_array(value, name))
        return self._constants[key]

    def op(self, op_type: str, *inputs: str, outputs: int = 1, hint: str | None = None, **attrs):
        from onnx import helper

        names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def branch(self) -> "_Graph":
        return _Graph(self._names, self._initializers, self._constants)


class _Writer:
    """Writes one DMVFN's ops into `_Graph`s: NCHW float32 values, height x width fixed (padded)."""

    def __init__(self, model, height: int, width: int, warp: str):
        if any(b.dtype is not None for b in model.blocks):
            raise ValueError("ONNX export computes in float32; build the model without a computation dtype")
        if warp not in WARPS:
            raise ValueError(f"warp must be one of {WARPS}, got {warp!r}")
        self.model = model
        self.h, self.w = height, width
        self.warp_form = warp

    # -- layers -------------------------------------------------------------------------
    def conv_unit(self, g: _Graph, x: str, unit) -> str:
        """`ConvUnit`: Conv(3x3, padding 1, stride of the unit) with bias, then PRelu."""
        conv = unit.conv
        stride = conv.strides if isinstance(conv.strides, int) else conv.strides[0]
        kernel = g.const(_f32(conv.kernel[...]).transpose(3, 2, 0, 1), "w")  # HWIO -> OIHW
        y = g.op("Conv", x, kernel, g.const(_f32(conv.bias[...]), "b"), kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                 strides=[stride, stride])
        return g.op("PRelu", y, g.const(_f32(unit.prelu.slope[...])[:, None, None], "slope"))

    def resize(self, g: _Graph, x: str, factor: float) -> str:
        """`ops.resize_by` (bilinear, align_corners=False, no antialiasing) by a power of two."""
        return g.op("Resize", x, "", g.const(_f32([1, 1, factor, factor]), "scales"), mode="linear",
                    coordinate_transformation_mode="half_pixel")

    def pixel_grid(self, g: _Graph) -> str:
        """(1, 4, H, W): each pixel's x, y, x, y (one initializer for every warp, as every constant)."""
        grid = np.zeros((1, 4, self.h, self.w), np.float32)
        grid[0, 0::2] = np.arange(self.w, dtype=np.float32)[None, :]
        grid[0, 1::2] = np.arange(self.h, dtype=np.float32)[:, None]
        return g.const(grid, "pixel_grid")

    def warp(self, g: _Graph, frames: tuple[str, str], flow: str) -> tuple[str, str]:
        """`ops.warp` of both frames by the halves of `flow` (B, 4, H, W)."""
        if self.warp_form == "gather":
            return self.warp_gather(g, flow)
        return self.warp_grid_sample(g, frames, flow)

    def stacked_frames(self, g: _Graph, frames) -> None:
        """What the gather warp reads, made once: both frames as (B, 2, 3, H W)."""
        both = g.op("Concat", *frames, axis=1)
        self._stacked = g.op("Reshape", both, g.const(np.array([-1, 2, 3, self.h * self.w], np.int64)),
                             hint="frames_flat")

    def warp_gather(self, g: _Graph, flow: str) -> tuple[str, str]:
        """`ops.warp_gather` of both frames at once: the sample points clamped to the image (border),
        the values at their four corners gathered from the frames as (B, 2, 3, H W) by
        `GatherElements` (int32 indices: the pixel, the same for the 3 channels), blended
        bilinearly: elementwise ops and four gathers instead of GridSample's per-pixel code."""
        h, w = self.h, self.w
        top = g.const(_f32([w - 1, h - 1] * 2).reshape(1, 4, 1, 1), "top")
        pos = g.op("Min", g.op("Max", g.op("Add", flow, self.pixel_grid(g)), g.const(_f32(0.0))), top)
        # (B, 4, H, W) -> (B, 2 frames, 2 axes (x, y), H W)
        pos = g.op("Reshape", pos, g.const(np.array([-1, 2, 2, h * w], np.int64)), hint="points")
        low = g.op("Floor", pos)
        frac = g.op("Sub", pos, low)
        lo = g.op("Cast", low, to=6)  # 6: INT32
        # the step to the next column and row: 1 and W, or 0 at the last column and row (border)
        step = g.op("Mul", g.op("Cast", g.op("Less", low, g.const(_f32([w - 1, h - 1]).reshape(1, 1, 2, 1))), to=6),
                    g.const(np.array([1, w], np.int32).reshape(1, 1, 2, 1)))

        def axis(x, i):  # (B, 2, 1, H W): x (i = 0) or y (i = 1)
            return g.op("Slice", x, g.const(np.array([i], np.int64)), g.const(np.array([i + 1], np.int64)),
                        g.const(np.array([2], np.int64)))

        pixel = g.op("Add", g.op("Mul", axis(lo, 1), g.const(np.array(w, np.int32))), axis(lo, 0))
        i00 = g.op("Expand", pixel, g.const(np.array([1, 1, 3, 1], np.int64)))  # (B, 2, 3, H W)
        dx, dy = axis(step, 0), axis(step, 1)
        i01 = g.op("Add", i00, dx)
        i10 = g.op("Add", i00, dy)
        i11 = g.op("Add", i10, dx)
        wx, wy = axis(frac, 0), axis(frac, 1)

        def corner(index):
            return g.op("GatherElements", self._stacked, index, axis=3, hint="corner")

        def mix(a, b, t):  # a + (b - a) t
            return g.op("Add", a, g.op("Mul", g.op("Sub", b, a), t))

        out = mix(mix(corner(i00), corner(i01), wx), mix(corner(i10), corner(i11), wx), wy)
        out = g.op("Reshape", out, g.const(np.array([-1, 6, h, w], np.int64)), hint="warped")
        return self.channels(g, out, 0, 3), self.channels(g, out, 3, 6)

    def warp_grid_sample(self, g: _Graph, frames: tuple[str, str], flow: str) -> tuple[str, str]:
        """`ops.warp` of both frames by the halves of `flow` (B, 4, H, W): one grid for both,
        normalised for align_corners=1 as `(x + flow_x) * 2 / (W - 1) - 1`, and two GridSamples."""
        h, w = self.h, self.w
        norm = _f32([2.0 / (w - 1), 2.0 / (h - 1)] * 2).reshape(1, 4, 1, 1)
        grid = g.op("Sub", g.op("Mul", g.op("Add", flow, self.pixel_grid(g)), g.const(norm, "norm")),
                    g.const(_f32(1.0), "one"))
        grid = g.op("Transpose", grid, perm=[0, 2, 3, 1])  # (B, H, W, 4)
        out = []
        for half, img in enumerate(frames):
            part = g.op("Slice", grid, g.const(np.array([2 * half], np.int64)), g.const(np.array([2 * half + 2], np.int64)),
                        g.const(np.array([3], np.int64)), hint="grid")
            out.append(g.op("GridSample", img, part, align_corners=1, mode="linear", padding_mode="border",
                            hint="warped"))
        return out[0], out[1]

    def channels(self, g: _Graph, x: str, start: int, stop: int) -> str:
        return g.op("Slice", x, g.const(np.array([start], np.int64)), g.const(np.array([stop], np.int64)),
                    g.const(np.array([1], np.int64)))

    # -- the network ----------------------------------------------------------------------
    def block(self, g: _Graph, i: int, frames, state) -> tuple[str, str]:
        """`MVFB.__call__` of block i (plain form): `(flow_d, mask_d)`."""
        blk, scale = self.model.blocks[i], self.model.scales[i]
        flow, mask, warped0, warped1 = state
        x13 = g.op("Concat", *frames, warped0, warped1, mask, axis=1, hint=f"block{i}_x13")
        x17 = g.op("Concat", x13, flow, axis=1)
        if scale == 1:
            xs = x17
        else:  # resize(x13) and resize(flow) / scale, as one resize of the 17 channels
            per_channel = _f32([1.0] * 13 + [1.0 / scale] * 4).reshape(17, 1, 1)
            xs = g.op("Mul", self.resize(g, x17, 1.0 / scale), g.const(per_channel, "flow_scale"))
        a = self.conv_unit(g, xs, blk.conv0[0])
        a = self.conv_unit(g, a, blk.conv0[1])
        b = a
        for unit in blk.convblock:
            b = self.conv_unit(g, b, unit)
        a = self.conv_unit(g, g.op("Add", b, a), blk.conv_sq)
        a = self.resize(g, a, float(scale * 2))
        c = self.conv_unit(g, self.conv_unit(g, x17, blk.conv1), blk.convblock1)
        last = blk.lastconv
        if (last.kernel.shape[0], last.stride, last.padding) != (4, 2, 1):
            raise ValueError(f"block {i}: lastconv {last.kernel.shape[:2]} stride {last.stride} padding "
                             f"{last.padding} is not DMVFN's (4x4, 2, 1)")
        out = g.op("ConvTranspose", g.op("Concat", a, c, axis=1),
                   g.const(_f32(last.kernel[...]).transpose(2, 3, 0, 1), "w"),  # (k, k, in, out) -> (in, out, k, k)
                   g.const(_f32(last.bias[...]), "b"), kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1],
                   hint=f"block{i}_out")
        return self.channels(g, out, 0, 4), self.channels(g, out, 4, 5)

    def advance(self, g: _Graph, i: int, frames, state, gate: str | None):
        """Block i's update applied (times the per-sample gate, (B, 1, 1, 1), unless None) and the
        frames warped by the new flow: `DMVFN._advance`."""
        flow_d, mask_d = self.block(g, i, frames, state)
        if gate is not None:
            flow_d, mask_d = g.op("Mul", gate, flow_d), g.op("Mul", gate, mask_d)
        flow = g.op("Add", state[0], flow_d, hint=f"block{i}_flow")
        mask = g.op("Add", state[1], mask_d, hint=f"block{i}_mask")
        return (flow, mask, *self.warp(g, frames, flow))

    def routing(self, g: _Graph, img0: str, img1: str) -> str:
        """`RoutingModule`: v (B, n); the 3x3 conv's mean as Conv and GlobalAveragePool (the
        official module's ops; the model computes the same mean without the conv)."""
        r = self.model.routing
        if r.inputs == "frames":
            parts = (img0, img1)
        else:
            d = g.op("Sub", img1, img0)
            parts = (img0, d) if r.inputs == "difference" else (d, g.op("Abs", d))
        x = g.op("Concat", *parts, axis=1, hint="routing_in")

        def conv(x, c):
            return g.op("Conv", x, g.const(_f32(c.kernel[...]).transpose(3, 2, 0, 1), "w"), g.const(_f32(c.bias[...]), "b"),
                        kernel_shape=[3, 3], pads=[1, 1, 1, 1])

        pooled = g.op("Flatten", g.op("GlobalAveragePool", conv(g.op("Relu", conv(x, r.conv_a)), r.conv_b)))
        v = g.op("Sigmoid", g.op("Gemm", pooled, g.const(_f32(r.l1.kernel[...]), "w"), g.const(_f32(r.l1.bias[...]), "b")))
        if not r.rescale:
            return v
        total = g.op("Add", g.op("ReduceSum", v, g.const(np.array([1], np.int64)), keepdims=1), g.const(_f32(1e-6)))
        v = g.op("Mul", g.op("Div", v, total), g.const(_f32(r.num_blocks / 2)))
        return g.op("Clip", v, g.const(_f32(0.0)), g.const(_f32(1.0)), hint="routing_v")

    def zero_state(self, g: _Graph, frames):
        """Flow (B, 4, H, W) and mask (B, 1, H, W) of zeros, the batch taken from the frames."""
        from onnx import helper, TensorProto

        batch = g.op("Shape", frames[0], end=1)
        shape = g.op("Concat", batch, g.const(np.array([5, self.h, self.w], np.int64)), axis=0)
        zeros = g.op("ConstantOfShape", shape, value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
        return self.channels(g, zeros, 0, 4), self.channels(g, zeros, 4, 5)


def _value_info(name: str, shape):
    from onnx import helper, TensorProto

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def predictor_graph(model, height: int, width: int, routing: str = "threshold", warp: str = "gather"):
    """An `onnx.ModelProto` of `model`'s prediction of the next frame at height x width: inputs
    `prev`, `cur`, output `next`, float32 (b, height, width, 3) NHWC with `b` dynamic, in [0, 1],
    the weights as initializers. `routing`: "threshold" (block i runs for the samples whose
    routing probability is >= 0.5, skipped by an `If` when no sample's is) or "all". `warp`:
    "gather" (elementwise ops and GatherElements: 1.3x faster than GridSample in onnxruntime's CPU
    kernels, BENCHMARKS.md) or "grid_sample" (one GridSample per warp)."""
    from onnx import checker, helper

    if routing not in ("threshold", "all"):
        raise ValueError(f"routing must be 'threshold' or 'all', got {routing!r}")
    ph, pw = padded_size(height, width)
    writer = _Writer(model, ph, pw, warp)
    initializers = []
    g = _Graph(itertools.count(), initializers)
    frames = [g.op("Transpose", name, perm=[0, 3, 1, 2], hint=f"{name}_nchw") for name in INPUTS]
    gates = None
    if routing == "threshold":  # on the frames as given, before padding (as `DMVFN.routing_probs`)
        v = writer.routing(g, *frames)
        gates = g.op("Cast", g.op("GreaterOrEqual", v, g.const(_f32(0.5))), to=1, hint="gates")  # 1: FLOAT
    if (ph, pw) != (height, width):  # `ops.pad_to_multiple`: edge rows and columns at the bottom and right
        pads = g.const(np.array([0, 0, 0, 0, 0, 0, ph - height, pw - width], np.int64), "pads")
        frames = [g.op("Pad", f, pads, mode="edge", hint="padded") for f in frames]
    frames = tuple(frames)
    if warp == "gather":
        writer.stacked_frames(g, frames)
    state = (*writer.zero_state(g, frames), *frames)  # flow, mask, warped0, warped1
    for i in range(model.num_blocks):
        if gates is None:
            state = writer.advance(g, i, frames, state, None)
            continue
        column = g.op("Slice", gates, g.const(np.array([i], np.int64)), g.const(np.array([i + 1], np.int64)),
                      g.const(np.array([1], np.int64)))
        gate = g.op("Unsqueeze", column, g.const(np.array([2, 3], np.int64)), hint=f"gate{i}")  # (B, 1, 1, 1)
        runs = g.op("Greater", g.op("ReduceMax", column, keepdims=0), g.const(_f32(0.0)), hint=f"block{i}_runs")
        then = g.branch()
        new = writer.advance(then, i, frames, state, gate)
        skip = g.branch()
        kept = [skip.op("Identity", s) for s in state]
        shapes = [(BATCH, 4, ph, pw), (BATCH, 1, ph, pw), (BATCH, 3, ph, pw), (BATCH, 3, ph, pw)]
        branches = {
            "then_branch": helper.make_graph(then.nodes, f"block{i}_runs", [],
                                             [_value_info(n, s) for n, s in zip(new, shapes)]),
            "else_branch": helper.make_graph(skip.nodes, f"block{i}_skipped", [],
                                             [_value_info(n, s) for n, s in zip(kept, shapes)]),
        }
        state = tuple(g.op("If", runs, outputs=4, hint=f"block{i}_state", **branches))
    flow, mask, warped0, warped1 = state  # `merge`: the frames warped by the final flow, blended
    m = g.op("Sigmoid", mask)
    blend = g.op("Add", g.op("Mul", m, warped0), g.op("Mul", g.op("Sub", g.const(_f32(1.0)), m), warped1))
    pred = g.op("Clip", blend, g.const(_f32(0.0)), g.const(_f32(1.0)))
    if (ph, pw) != (height, width):
        pred = g.op("Slice", pred, g.const(np.array([0, 0], np.int64)), g.const(np.array([height, width], np.int64)),
                    g.const(np.array([2, 3], np.int64)), hint="cropped")
    g.nodes.append(helper.make_node("Transpose", [pred], [OUTPUT], perm=[0, 2, 3, 1]))
    frame = (BATCH, height, width, 3)
    graph = helper.make_graph(g.nodes, "dmvfn_next_frame", [_value_info(n, frame) for n in INPUTS],
                              [_value_info(OUTPUT, frame)], initializer=initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dmvfn_jax",
                              ir_version=10)
    checker.check_model(proto)
    return proto


def node_counts(proto) -> dict[str, int]:
    """Nodes by operator type in an `onnx.ModelProto`, the nodes inside `If` and `Loop` branches
    included."""
    from onnx import AttributeProto

    counts: dict[str, int] = {}

    def walk(graph):
        for node in graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(proto.graph)
    return counts
