"""What a compiled XLA program does across devices, read from its HLO text (`compiled.as_text()`).

`collectives(text)` lists every collective instruction of the program with its kind, the bytes
of its result and how many times one call of the program runs it: an instruction inside a
`while` body with a known trip count (a `lax.scan`) runs that many times per call, one inside a
conditional branch is counted as if the branch were taken. The tests assert on it (only
all-reduces cross devices in the training and evaluation steps) and `dmvfn_jax.plan` prints it
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


def collectives(text: str) -> list[Collective]:
    """Every collective of the program in `text` (the HLO of one device's program).

    A while loop runs its body `known_trip_count` times (XLA's annotation, CPU) or, without it
    (TPU), N times when its condition is `i < N` for a constant N; otherwise once."""
    comps, entry = _parse(text)
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
