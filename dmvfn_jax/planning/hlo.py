"""What a compiled XLA program does, read from its HLO text (`compiled.as_text()`): the buffers
it writes and their tiles, its collectives.

`buffers(text)` lists every buffer the program writes, with its bytes as written and as laid
out in the TPU's tiles, and `by_source` groups them by the JAX operation (named scope) that made
them: `dmvfn_jax.planning.plan`'s where-the-HBM-goes report.

`collectives(text)` lists every collective instruction of the program with its kind, the bytes
of its result and how many times one call of the program runs it: an instruction inside a
`while` body with a known trip count (a `lax.scan`) runs that many times per call, one inside a
conditional branch is counted as if the branch were taken. The tests assert on it (only
all-reduces cross devices in the training and evaluation steps) and `dmvfn_jax.planning.plan` prints it
for a TPU topology.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict

KINDS = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter", "collective-broadcast",
         "ragged-all-to-all")
# Anything but an all-reduce moves activations (or shards of them) between devices in DMVFN's steps.
FORBIDDEN = tuple(k for k in KINDS if k != "all-reduce")

DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2,
               "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}

_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][a-z0-9\-]*)\((.*)$")
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')
_CALLEE = re.compile(r"\b(body|condition|calls|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")


@dataclasses.dataclass(frozen=True)
class Collective:
    kind: str  # one of KINDS
    name: str  # the instruction's name in the HLO
    result_bytes: int  # bytes of the result (for an all-reduce: the payload each device contributes)
    runs: int  # times one call of the program executes it
    computation: str


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape string: `f32[8,9]{1,0}`, or the sum over a tuple `(f32[2], s32[])`."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(shape):
        if dtype not in DTYPE_BYTES:
            continue
        n = math.prod(int(d) for d in dims.split(",") if d) if dims else 1
        total += n * DTYPE_BYTES[dtype]
    return int(total)


def _kind(opcode: str) -> str | None:
    base = opcode[: -len("-start")] if opcode.endswith("-start") else opcode
    return base if base in KINDS else None


def _parse(text: str):
    """computation -> instructions [(name, shape, opcode, rest)], the entry computation's name."""
    comps: dict[str, list] = {}
    entry, current = None, None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("//") or stripped.startswith("HloModule"):
            continue
        if stripped == "}":
            current = None
            continue
        if current is None:
            m = _COMPUTATION.match(stripped)
            if m:
                current = m.group(2)
                comps[current] = []
                if m.group(1):
                    entry = current
            continue
        m = _INSTRUCTION.match(line)
        if m:
            comps[current].append(m.groups())
    if entry is None and comps:
        entry = next(iter(comps))
    return comps, entry


def _condition_bound(instructions) -> int | None:
    """N of a loop condition `i < N` with N a constant of the condition (`lax.scan` counts from 0)."""
    constants = {}
    for name, shape, opcode, rest in instructions:
        if opcode == "constant" and shape.startswith("s32[]"):
            m = re.match(r"\s*(-?\d+)\)", rest)
            if m:
                constants[name] = int(m.group(1))
    for name, _, opcode, rest in instructions:
        if opcode == "compare" and "direction=LT" in rest:
            operands = re.findall(r"%([\w.\-]+)", rest.split(")", 1)[0])
            if len(operands) == 2 and operands[1] in constants:
                return constants[operands[1]]
    return None


def _runs(comps: dict, entry: str | None) -> dict[str, int]:
    """computation -> times one call of the program runs it (0: not reached from the entry).

    A while loop runs its body `known_trip_count` times (XLA's annotation, CPU) or, without it
    (TPU), N times when its condition is `i < N` for a constant N; otherwise once. A conditional's
    branches are counted as if each were taken."""
    calls: dict[str, list[tuple[str, int]]] = defaultdict(list)  # caller -> [(callee, times per call)]
    for comp, instructions in comps.items():
        for _, _, opcode, rest in instructions:
            trips = 1
            if opcode == "while":
                m = _TRIP.search(rest)
                if m:
                    trips = int(m.group(1))
                else:
                    cond = re.search(r"\bcondition=%?([\w.\-]+)", rest)
                    bound = _condition_bound(comps.get(cond.group(1), ())) if cond else None
                    trips = bound if bound is not None and bound > 0 else 1
            for role, callee in _CALLEE.findall(rest):
                if role == "to_apply":  # the reduction of a reduce/all-reduce: no collectives inside
                    continue
                calls[comp].append((callee, trips if role in ("body", "condition") else 1))
            for group in _BRANCHES.findall(rest):
                for callee in group.split(","):
                    calls[comp].append((callee.strip().lstrip("%"), 1))
    runs: dict[str, int] = defaultdict(int)

    def visit(comp: str, times: int, depth: int = 0) -> None:
        if depth > 64:
            return
        runs[comp] += times
        for callee, k in calls.get(comp, ()):
            visit(callee, times * k, depth + 1)

    if entry is not None:
        visit(entry, 1)
    return runs


def collectives(text: str) -> list[Collective]:
    """Every collective of the program in `text` (the HLO of one device's program), with the times
    one call runs it (`_runs`: loop bodies by their trip counts)."""
    comps, entry = _parse(text)
    runs = _runs(comps, entry)
    found = []
    for comp, instructions in comps.items():
        for name, shape, opcode, _ in instructions:
            kind = _kind(opcode)
            if kind is not None:
                found.append(Collective(kind, name, shape_bytes(shape), runs.get(comp, 0), comp))
    return found


def summary(found: list[Collective]) -> dict[str, dict[str, int]]:
    """kind -> {"ops": instructions in the program, "runs": executions per call, "bytes": bytes moved
    per call (result bytes x runs)}, for every kind in KINDS."""
    out = {k: {"ops": 0, "runs": 0, "bytes": 0} for k in KINDS}
    for c in found:
        out[c.kind]["ops"] += 1
        out[c.kind]["runs"] += c.runs
        out[c.kind]["bytes"] += c.result_bytes * c.runs
    return out


def forbidden(found: list[Collective]) -> list[Collective]:
    """The collectives that are not all-reduces."""
    return [c for c in found if c.kind in FORBIDDEN]


# -- buffers and their tiles ----------------------------------------------------------------
# A TPU lays out an array's two minor dimensions (in its layout's order) in tiles, (8, 128) for
# 32-bit values: an HLO layout `{3,2,1,0:T(8,128)}` rounds the minor dimension up to a multiple of
# 128 lanes and the next to 8 sublanes. A 3-channel frame with channels minor fills 3 of 128 lanes.
_ARRAY_LAYOUT = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\](\{[^}]*\})?")
_TILE = re.compile(r"T\(([0-9,]+)\)")
_SPACE = re.compile(r"S\((\d+)\)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_MOVES = frozenset({"copy", "copy-start", "copy-done", "slice-start", "slice-done", "bitcast", "get-tuple-element",
                    "dynamic-slice", "slice"})
# Instructions that name or alias a buffer made elsewhere, or hold no data of their own.
_NO_BUFFER = frozenset({"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "after-all", "while",
                        "conditional", "call", "copy-start", "opt-barrier", "partition-id", "replica-id",
                        "add-dependency", "domain"})


def arrays(shape: str) -> list[tuple[str, int, int, int]]:
    """Each array of an HLO shape with its layout (one, or a tuple's): `(text, written, tiled,
    memory space)` in bytes.

    written: the elements times their size; tiled: with the dimensions, taken in the layout's
    minor-to-major order, rounded up to its first tile (`T(8,128)`; no tile: as written); memory
    space: 0 for HBM (no `S(n)`), 1 for the TPU's on-chip memory."""
    out = []
    for m in _ARRAY_LAYOUT.finditer(shape):
        dtype, dims_text, layout = m.groups()
        if dtype not in DTYPE_BYTES:
            continue
        dims = [int(d) for d in dims_text.split(",") if d]
        size = DTYPE_BYTES[dtype]
        padded, space = list(dims), 0
        if layout:
            order_text, _, tiles = layout[1:-1].partition(":")
            order = [int(d) for d in order_text.split(",") if d]
            tile = _TILE.search(tiles)
            if tile and sorted(order) == list(range(len(dims))):
                padded = [dims[i] for i in reversed(order)]  # major to minor
                for k, step in enumerate(reversed([int(v) for v in tile.group(1).split(",")]), start=1):
                    if k <= len(padded):
                        padded[-k] = -(-padded[-k] // step) * step
            sm = _SPACE.search(tiles)
            space = int(sm.group(1)) if sm else 0
        out.append((m.group(0), int(math.prod(dims) * size), int(math.prod(padded) * size), space))
    return out


@dataclasses.dataclass(frozen=True)
class Buffer:
    """The output of one instruction outside a fusion: what the program writes to memory."""

    name: str
    opcode: str
    shape: str  # with its layout
    op_name: str  # the JAX operation that made it (metadata; for the compiler's copies, their operand's)
    written_bytes: int  # per run, of its arrays in HBM
    tiled_bytes: int  # per run, of its arrays in HBM, as tiled
    largest: str  # its largest array in HBM by tiled bytes ("" if none)
    runs: int  # times one call of the program writes it
    computation: str
    estimated_cycles: int  # per run: the TPU compiler's own estimate for the instruction (0: none given)


def _fused(comps: dict) -> set[str]:
    """The computations that are the bodies of fusions or of reductions: their instructions write
    no buffers of their own."""
    inner = set()
    for instructions in comps.values():
        for _, _, opcode, rest in instructions:
            for role, callee in _CALLEE.findall(rest):
                if role == "to_apply" or (role == "calls" and opcode in ("fusion", "custom-call")):
                    inner.add(callee)
    return inner


def _op_names(instructions) -> dict[str, str]:
    """instruction -> its op_name; where it has none and only moves or reshapes data the compiler
    made it for (an async copy or slice between HBM and on-chip memory, a copy, a bitcast), the
    op_name of the operand it moves, followed back through such instructions."""
    own, first_operand = {}, {}
    for name, _, opcode, rest in instructions:
        m = _OP_NAME.search(rest)
        if m:
            own[name] = m.group(1)
        elif opcode in _MOVES:
            operand = re.search(r"%([\w.\-]+)", rest.split(")", 1)[0])
            if operand:
                first_operand[name] = operand.group(1)
    resolved = dict(own)
    for name in first_operand:
        seen, current = set(), name
        while current not in own and current in first_operand and current not in seen:
            seen.add(current)
            current = first_operand[current]
        if current in own:
            resolved[name] = own[current]
    return resolved


def buffers(text: str) -> list[Buffer]:
    """Every buffer the program in `text` writes: the outputs of the instructions of its
    non-fused computations that are reached from the entry, each with the times one call runs it
    (loop bodies by their trip counts, as `collectives`)."""
    comps, entry = _parse(text)
    runs = _runs(comps, entry)
    inner = _fused(comps)
    found = []
    for comp, instructions in comps.items():
        if comp in inner or not runs.get(comp):
            continue
        op_names = _op_names(instructions)
        for name, shape, opcode, rest in instructions:
            if opcode in _NO_BUFFER:
                continue
            hbm = [a for a in arrays(shape) if a[3] == 0]
            cycles = _CYCLES.search(rest)
            found.append(Buffer(name, opcode, shape, op_names.get(name, ""), sum(a[1] for a in hbm),
                                sum(a[2] for a in hbm), max(hbm, key=lambda a: a[2])[0] if hbm else "",
                                runs[comp], comp, int(cycles.group(1)) if cycles else 0))
    return found


def source(op_name: str) -> str:
    """A buffer's op_name without JAX's transform wrappers and jitted functions' names: the named
    scopes and the primitive, "grad" before it where the op is part of a gradient
    (`jit(body)/shard_map/transpose(jvp(block3))/warp/vmap(jit(_map_coordinates))/gather` ->
    `grad block3/warp/gather`)."""
    if not op_name:
        return "(no op_name)"
    grad = "transpose(" in op_name
    parts = []
    for part in op_name.split("/"):
        inner = part
        while True:
            m = re.match(r"^\s*([\w.<>-]+)\((.*)\)\s*$", inner)
            if not m:
                break
            if m.group(1) in ("jit", "pjit") and m.group(2) and "(" not in m.group(2):
                inner = ""  # jit(fn): the jitted function's name, not a scope
                break
            inner = m.group(2)
        inner = inner.split(";")[0].strip()
        if inner and inner not in ("shard_map", "while", "body", "cond", "main", "checkpoint", "remat", "closed_call"):
            parts.append(inner)
    text = "/".join(parts) or "(jit)"
    return f"grad {text}" if grad else text


@dataclasses.dataclass(frozen=True)
class SourceBytes:
    """The buffers one JAX operation (`source`) wrote in one call of the program."""

    source: str
    written_bytes: int
    tiled_bytes: int
    buffers: int  # instructions
    example: str  # the largest array's shape with its layout
    estimated_cycles: int  # the TPU compiler's estimate for its instructions, on chip or not

    @property
    def ratio(self) -> float:
        return self.tiled_bytes / self.written_bytes if self.written_bytes else float("inf")


def by_source(found: list[Buffer]) -> list[SourceBytes]:
    """HBM bytes written per call, grouped by `source(op_name)`, the most tiled bytes first."""
    groups: dict[str, list[Buffer]] = defaultdict(list)
    for b in found:
        groups[source(b.op_name)].append(b)
    out = []
    for key, items in groups.items():
        largest = max(items, key=lambda b: b.tiled_bytes)
        out.append(SourceBytes(key, sum(b.written_bytes * b.runs for b in items),
                               sum(b.tiled_bytes * b.runs for b in items), len(items), largest.largest,
                               sum(b.estimated_cycles * b.runs for b in items)))
    return sorted(out, key=lambda s: (-s.tiled_bytes, -s.estimated_cycles))


def padding_totals(found: list[Buffer]) -> tuple[int, int]:
    """(written, tiled) bytes of the HBM buffers one call writes."""
    return sum(b.written_bytes * b.runs for b in found), sum(b.tiled_bytes * b.runs for b in found)
