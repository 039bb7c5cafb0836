"""How the routing depends on the input: the gate patterns it picks, the blocks per pair (their
spread, not only the mean) and the blocks against the motion of the pair.

DMVFN's routing is meant to run few blocks on easy motion and more on hard motion; a trained
routing can also pick the same blocks for every input (issue 12 of the official code). The
report tells the two apart at a glance:

    pairs = probe_pairs(frames)                      # moving, still and shifted pairs of held-out frames
    gates = threshold_gates(model, pairs.img0, pairs.img1)
    report = routing_report(gates, pairs.motion, pairs.kinds)
    print(format_routing_report(report))

`motion` is any per-pair measure of how hard the pair is; `probe_pairs` uses the pair's mean
absolute frame difference (0 for a still pair), which needs no later frame.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

SHIFT = 6  # pixels: the shifted probe pairs move the whole frame this far to the right
KINDS = ("moving", "still", "shifted")


class ProbePairs(NamedTuple):
    img0: np.ndarray  # (N, H, W, 3) in [0, 1]
    img1: np.ndarray
    kinds: list[str]  # per pair: "moving" (frames t-1, t), "still" (t, t), "shifted" (t, t moved SHIFT px)
    motion: np.ndarray  # (N,) mean absolute difference of the pair's frames


def probe_pairs(clips: np.ndarray) -> ProbePairs:
    """From clips (N, T >= 2, H, W, 3) in [0, 1]: each clip's real pair (frames 0 and 1), the
    same frame twice (nothing moves: copying it is exact) and the frame against itself moved
    `SHIFT` pixels to the right (edge pixels repeated)."""
    clips = np.asarray(clips, np.float32)
    if clips.ndim != 5 or clips.shape[1] < 2 or clips.shape[-1] != 3:
        raise ValueError(f"probe_pairs takes clips (N, T >= 2, H, W, 3), got {clips.shape}")
    a, b = clips[:, 0], clips[:, 1]
    shifted = np.concatenate([np.repeat(b[:, :, :1], SHIFT, axis=2), b[:, :, :-SHIFT]], axis=2)
    img0 = np.concatenate([a, b, b])
    img1 = np.concatenate([b, b, shifted])
    kinds = [k for k in KINDS for _ in range(len(clips))]
    motion = np.abs(img1 - img0).mean(axis=(1, 2, 3))
    return ProbePairs(img0, img1, kinds, motion)


def gates_fn(graphdef):
    """A jitted `fn(params, img0, img1)`: the threshold gates (`v >= 0.5`, int32 (B, n)) of the
    network `graphdef` with `params` (the training loop's and eval.py's replicated ones)."""
    from flax import nnx  # noqa: PLC0415

    return jax.jit(lambda p, a, b: (nnx.merge(graphdef, p).routing_probs(a, b) >= 0.5).astype(jnp.int32))


def gates_of(fn, params, img0: np.ndarray, img1: np.ndarray, batch: int = 32) -> np.ndarray:
    """`fn`'s gates (N, n) for N pairs, `batch` pairs per call, on the host."""
    from dmvfn_jax import parallel  # noqa: PLC0415

    return np.concatenate([parallel.host_copy(fn(params, img0[i:i + batch], img1[i:i + batch]))
                           for i in range(0, len(img0), batch)])


def probe(fn, params, pair_frames: np.ndarray) -> tuple[np.ndarray, ProbePairs]:
    """The gates (`gates_fn`'s `fn`) of `probe_pairs(pair_frames)`, and the pairs."""
    pairs = probe_pairs(pair_frames)
    return gates_of(fn, params, pairs.img0, pairs.img1), pairs


def threshold_gates(model, img0: np.ndarray, img1: np.ndarray, batch: int = 32) -> np.ndarray:
    """The hard gates (N, n) of threshold routing (`v >= 0.5`) of `model` for each pair, in batches."""
    from flax import nnx  # noqa: PLC0415

    graphdef, state = nnx.split(model)
    return gates_of(gates_fn(graphdef), state, img0, img1, batch)


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None where either is constant."""
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # ties: their mean rank
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def routing_report(gates: np.ndarray, motion: np.ndarray, kinds: Sequence[str] | None = None) -> dict:
    """The report (JSON-ready) of the hard gates (N, n) picked for N pairs, against each pair's
    `motion` (N,) and, optionally, its kind (e.g. `probe_pairs`' "moving", "still", "shifted")."""
    gates = np.asarray(gates) > 0.5
    motion = np.asarray(motion, np.float64)
    if gates.ndim != 2 or len(gates) == 0 or motion.shape != (len(gates),):
        raise ValueError(f"routing_report: gates (N, n) and motion (N,) for the same N pairs; got {np.shape(gates)} "
                         f"and {motion.shape}")
    if kinds is not None and len(kinds) != len(gates):
        raise ValueError(f"routing_report: {len(kinds)} kinds for {len(gates)} pairs")
    n_pairs, n_blocks = gates.shape
    blocks = gates.sum(axis=1)
    patterns = Counter("".join("1" if g else "0" for g in row) for row in gates)
    common, count = patterns.most_common(1)[0]
    order = np.argsort(motion, kind="stable")
    thirds = [blocks[part].mean() for part in np.array_split(order, 3) if len(part)]
    report = {
        "pairs": n_pairs,
        "distinct_patterns": len(patterns),
        "most_common_pattern": common,
        "most_common_share": count / n_pairs,
        "blocks": {"mean": float(blocks.mean()), "std": float(blocks.std()), "min": int(blocks.min()),
                   "max": int(blocks.max()),
                   "histogram": np.bincount(blocks, minlength=n_blocks + 1).tolist()},
        "block_rates": gates.mean(axis=0).tolist(),
        "motion_spearman": _spearman(motion, blocks),
        "blocks_by_motion_third": [float(t) for t in thirds],
        "input_dependent": len(patterns) > 1,
    }
    if kinds is not None:
        kinds = np.asarray(kinds)
        report["by_kind"] = {str(k): {"pairs": int((kinds == k).sum()), "mean_blocks": float(blocks[kinds == k].mean()),
                                      "mean_motion": float(motion[kinds == k].mean())}
                             for k in dict.fromkeys(kinds.tolist())}
    return report


def routing_scalars(report: dict) -> dict[str, float]:
    """The report's numbers for TensorBoard (`routing/...` in the training loop)."""
    out = {"distinct_patterns": float(report["distinct_patterns"]), "blocks_mean": report["blocks"]["mean"],
           "blocks_std": report["blocks"]["std"]}
    if report["motion_spearman"] is not None:
        out["motion_spearman"] = report["motion_spearman"]
    out.update({f"blocks_{k}": v["mean_blocks"] for k, v in report.get("by_kind", {}).items()})
    return out


def summary_line(report: dict) -> str:
    """One line for the training log."""
    kinds = report.get("by_kind", {})
    return (f"routing on {report['pairs']} probe pairs: {report['distinct_patterns']} gate pattern(s), blocks "
            f"{report['blocks']['mean']:.2f} +- {report['blocks']['std']:.2f}"
            + ("; " + ", ".join(f"{k} {v['mean_blocks']:.2f}" for k, v in kinds.items()) if kinds else ""))


def format_routing_report(report: dict, what: str = "pairs") -> str:
    """A few lines for the console and results.md."""
    b = report["blocks"]
    rho = report["motion_spearman"]
    lines = [
        f"routing (threshold gates) on {report['pairs']} {what}: {report['distinct_patterns']} distinct gate "
        f"pattern(s); the most common, {report['most_common_pattern']}, on {report['most_common_share']:.0%}",
        f"blocks per pair: mean {b['mean']:.2f}, std {b['std']:.2f}, min {b['min']}, max {b['max']}; pairs by "
        "number of blocks " + " ".join(f"{k}:{c}" for k, c in enumerate(b["histogram"]) if c),
        "blocks against motion: Spearman " + ("n/a (constant)" if rho is None else f"{rho:+.2f}")
        + "; mean blocks by motion third, lowest first: " + " / ".join(f"{t:.2f}" for t in report["blocks_by_motion_third"]),
    ]
    if "by_kind" in report:
        lines.append("mean blocks by kind of pair: " + ", ".join(
            f"{k} {v['mean_blocks']:.2f} ({v['pairs']})" for k, v in report["by_kind"].items()))
    lines.append("the gates depend on the input" if report["input_dependent"] else
                 "the gates do NOT depend on the input: every pair runs the same blocks")
    return "\n".join(lines)
