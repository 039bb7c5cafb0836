"""What an evaluation writes: the console table, `results.csv`, the summaries of summed totals,
and the predicted PNGs and pictures of the first clips."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from dmvfn_jax import parallel
from dmvfn_jax.evaluation.protocols import Protocol
from dmvfn_jax.evaluation.step import VARIANTS
from dmvfn_jax.files import atomic_file

METRIC_LABELS = {"psnr": "PSNR", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "lpips": "LPIPS"}
VARIANT_LABELS = {"dmvfn": "DMVFN (routed)", "dmvfn_all_blocks": "DMVFN, all blocks", "copy_last": "copy last frame"}


def _running(per_step: list[float]) -> list[float]:
    return [float(np.mean(per_step[: k + 1])) for k in range(len(per_step))]


def report_steps(horizon: int) -> list[int]:
    """The t+k columns of the table: 1, 3, 5 (those within the horizon), or 1..horizon if shorter."""
    steps = [k for k in (1, 3, 5) if k <= horizon]
    return steps if horizon >= 5 or horizon == 1 else list(range(1, horizon + 1))


def format_table(results: dict) -> str:
    steps = report_steps(results["protocol"]["horizon"])
    names = results["metrics"]
    head = f"{'':22s}" + "".join(
        f" | {METRIC_LABELS[n] + ' ' + '/'.join(f't+{k}' for k in steps):>{8 * len(steps) + 2}s}" for n in names)
    lines = [head, "-" * len(head)]
    for variant in VARIANTS:
        row = f"{VARIANT_LABELS[variant]:22s}"
        for n in names:
            vals = results["results"][variant][n]["running_mean"]
            scale = 1.0 if n == "psnr" else 100.0
            row += " | " + f"{' '.join(f'{vals[k - 1] * scale:7.2f}' for k in steps):>{8 * len(steps) + 2}s}"
        lines.append(row)
    lines.append("(PSNR in dB; SSIM, MS-SSIM and LPIPS x100; t+k: mean over steps 1..k)")
    r = results["routing"]
    lines.append(
        f"routing: {r['blocks_per_prediction']:.2f} of {len(r['block_rate'])} blocks per prediction; block rates "
        + " ".join(f"{v:.2f}" for v in r["block_rate"])
    )
    for entry in results["sizes"]:
        f = entry["gflops_per_frame"]
        where = "" if len(results["sizes"]) == 1 else f" at {entry['size'][0]}x{entry['size'][1]} ({entry['clips']} clip{'s' if entry['clips'] != 1 else ''})"
        lines.append(
            f"compute{where}: {f['routed_spent']:.1f} GFLOPs per frame spent with routing (routing module "
            f"{f['routing']:.2f}) against {f['all_blocks']:.1f} with all blocks "
            f"({100 * f['routed_spent'] / f['all_blocks']:.0f}%)"
        )
    skipped = {k: v for k, v in results.get("skipped", {}).items() if v}
    if skipped:
        lines.append("skipped: " + "; ".join(f"{len(v)} clip(s) {k.replace('_', ' ')}" for k, v in skipped.items()))
    return "\n".join(lines)


def write_csv(results: dict, path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["variant", "metric", "step", "value", "running_mean"])
    for variant in VARIANTS:
        for n in results["metrics"]:
            r = results["results"][variant][n]
            for k, (v, rm) in enumerate(zip(r["per_step"], r["running_mean"]), start=1):
                w.writerow([variant, n, k, f"{v:.6f}", f"{rm:.6f}"])
    write_text(path, buf.getvalue())


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        Path(tmp).write_text(text)


def sizes_text(counts: dict) -> str:
    """{(h, w): clips} as "320x180 (2 clips), 448x256 (1 clip)"."""
    return ", ".join(f"{w}x{h} ({n} clip{'s' if n != 1 else ''})" for (h, w), n in counts.items()) or "no size"


def summarize(totals: dict, names, horizon: int, flops: dict | None) -> dict:
    """Scores, routing statistics and (given the size's FLOP costs) compute, from summed totals."""
    count = float(totals["count"])
    results = {}
    for variant in VARIANTS:
        results[variant] = {}
        for n in names:
            per_step = (totals[variant][n] / count).tolist()
            results[variant][n] = {"per_step": per_step, "running_mean": _running(per_step)}
    preds_made = count * horizon
    rates = (totals["gate_sum"] / preds_made).tolist()
    ran = (totals["ran_sum"] / preds_made).tolist()
    out = {"clips": int(round(count)), "results": results,
           "routing": {"blocks_per_prediction": float(sum(rates)), "block_rate": rates, "block_run_rate": ran},
           "gflops_per_frame": None}
    if flops is not None:
        spent = flops["routing"] + (flops["all_blocks"] - sum(flops["blocks"])) + sum(
            r * f for r, f in zip(ran, flops["blocks"]))
        out["gflops_per_frame"] = {"all_blocks": flops["all_blocks"], "routing": flops["routing"],
                                   "blocks": flops["blocks"], "routed_spent": spent}
    return out


def save_outputs(out_dir: Path, clips, batch: np.ndarray, outputs: dict, idx, n_predictions: int, n_images: int,
                  protocol: Protocol) -> None:
    """Predicted PNGs (`--save-predictions`) and pictures (`--save-images`) of this batch's first clips."""
    from dmvfn_jax import visualize
    from dmvfn_jax.image_io import save_png, write_gif

    local = {k: parallel.local_rows(v) for k, v in outputs.items()}
    c0, c1 = protocol.context
    for row, i in enumerate(idx):
        if i < 0:
            continue
        name = clips.clip_id(int(i)).replace("/", "_")
        preds = local["prediction"][row]
        if i < n_predictions:
            for k, frame in enumerate(preds, start=1):
                save_png(out_dir / "predictions" / name / f"pred_t+{k}.png", frame)
        if i < n_images:
            frames = batch[row].astype(np.float32) / 255.0
            truth = frames[c1 + 1:c1 + 1 + protocol.horizon]
            inputs = [frames[c0], frames[c1]] + list(preds)  # step k predicts from inputs k-1, k
            for k in range(protocol.horizon):
                pic = visualize.prediction_strip(inputs[k], inputs[k + 1], preds[k], local["flow"][row, k],
                                                 local["mask"][row, k], local["gates"][row, k], target=truth[k])
                save_png(out_dir / "images" / name / f"t+{k + 1}.png", pic)
            write_gif(out_dir / "images" / name / "rollout.gif",
                      visualize.rollout_frames([frames[c0], frames[c1]], preds, truth), fps=2)
