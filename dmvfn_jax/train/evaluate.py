"""Evaluation of a trained model on held-out synthetic clips, against copy-last-frame.

Writes `results.json`, `results.md` (the table, and how the routing depends on the input:
`evaluation/routing_report.py`), and under `workdir/predictions` the predicted
frames, a picture per clip (`clipNN_strip.png`: inputs, prediction, truth, error, flows, fusion
mask, blocks that ran) and a rollout GIF per clip (prediction beside truth). The full evaluation protocols on real datasets live in `eval.py`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dmvfn_jax.data.sources import heldout_synthetic, synthetic_options
from dmvfn_jax.evaluation.metrics import psnr_from_mse
from dmvfn_jax.evaluation.routing_report import format_routing_report, probe_pairs, routing_report, threshold_gates
from dmvfn_jax import visualize
from dmvfn_jax.image_io import save_png, write_gif

log = logging.getLogger("dmvfn_jax")


def psnr(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-image PSNR of [0, 1] images (..., H, W, 3); the error is averaged in float64 and floored
    at 1e-12 (120 dB), so that an exact copy does not make a mean infinite."""
    mse = np.mean((np.asarray(pred, np.float64) - np.asarray(gt, np.float64)) ** 2, axis=(-3, -2, -1))
    return np.asarray(psnr_from_mse(np.maximum(mse, 1e-12)))


def _rollout(model, frames: np.ndarray, steps: int, routing: str, batch: int = 16) -> np.ndarray:
    """Autoregressive predictions (N, steps, H, W, 3) from frames[:, 0:2]."""
    fn = jax.jit(lambda a, b: model.predict(a, b, routing).prediction)
    outs = []
    for i in range(0, len(frames), batch):
        prev, cur = jnp.asarray(frames[i:i + batch, 0]), jnp.asarray(frames[i:i + batch, 1])
        preds = []
        for _ in range(steps):
            nxt = fn(prev, cur)
            preds.append(np.asarray(nxt))
            prev, cur = cur, nxt
        outs.append(np.stack(preds, axis=1))
    return np.concatenate(outs, axis=0)


def evaluate_synthetic(model, config, workdir: str | Path) -> dict:
    """PSNR at t+1 .. t+k on held-out synthetic clips, for the model and copy-last-frame."""
    ev, data = config.eval, config.data
    steps = ev.num_frames - 2
    clips = heldout_synthetic(data.seed, ev.num_clips, ev.num_frames, data.height, data.width,
                              **synthetic_options(data))
    frames = clips.astype(np.float32) / 255.0
    gt = frames[:, 2:]
    rows = {"copy last frame": np.repeat(frames[:, 1:2], steps, axis=1)}
    for routing in ev.routings:
        rows[f"DMVFN ({routing})"] = _rollout(model, frames, steps, routing)
    results = {}
    for name, preds in rows.items():
        per_step = psnr(preds, gt).mean(axis=0)  # (steps,)
        results[name] = {f"t+{k + 1}": float(per_step[k]) for k in range(steps)}
    lines = ["| method | " + " | ".join(f"PSNR t+{k + 1}" for k in range(steps)) + " |",
             "| --- |" + " --- |" * steps]
    for name, vals in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals.values()) + " |")
    table = "\n".join(lines)
    workdir = Path(workdir)
    header = f"Held-out synthetic clips: {ev.num_clips} at {data.height}x{data.width}, context 2 frames"
    # how the routing depends on the input: each clip's pair, the same frame twice, the frame moved
    pairs = probe_pairs(frames)
    routing_stats = routing_report(threshold_gates(model, pairs.img0, pairs.img1), pairs.motion, pairs.kinds)
    routing_text = format_routing_report(routing_stats, "held-out pairs (moving, still, shifted)")
    (workdir / "results.md").write_text(header + "\n\n" + table + "\n\n```\n" + routing_text + "\n```\n")
    (workdir / "results.json").write_text(json.dumps({"setup": header, "psnr": results, "routing": routing_stats},
                                                     indent=2) + "\n")
    out = workdir / "predictions"
    main = rows[f"DMVFN ({ev.routings[0]})"]
    n_save = min(ev.save_clips, len(frames))
    if n_save:
        first = jax.jit(lambda a, b: model.predict(a, b, ev.routings[0]))(
            jnp.asarray(frames[:n_save, 0]), jnp.asarray(frames[:n_save, 1]))
        first = jax.tree.map(np.asarray, first)
    for c in range(n_save):
        for k in range(steps):
            save_png(out / f"clip{c:02d}_t+{k + 1}.png", main[c, k])
        save_png(out / f"clip{c:02d}_strip.png", visualize.prediction_strip(
            frames[c, 0], frames[c, 1], first.prediction[c], first.flow[c], first.mask[c], first.gates[c], target=gt[c, 0]))
        anim = visualize.rollout_frames(frames[c, :2], main[c], gt[c])
        write_gif(out / f"clip{c:02d}_rollout.gif", anim, fps=2)
    log.info("%s\n%s\n%s", header, table, routing_text)
    ours, base = results[f"DMVFN ({ev.routings[0]})"]["t+1"], results["copy last frame"]["t+1"]
    log.info("t+1 PSNR: DMVFN (%s) %.2f dB, copy-last-frame %.2f dB (%+.2f dB); pictures in %s",
             ev.routings[0], ours, base, ours - base, out)
    return results
