"""The evaluation at the end of a training run on synthetic videos (`make demo`): held-out clips
the training never saw, scored by `eval.py`'s evaluation (`run.evaluate_clips`: the model with
threshold routing, with every block, and copy-last-frame; `t+k` the mean over steps 1..k), with
the same routing report and pictures.

Writes into the run's folder `results.json` (as `eval.py` writes it), `results.md` (the table and
the routing report), and for the first `config.eval.save_clips` clips their predicted frames
(`predictions/clipNN/pred_t+K.png`) and pictures (`images/clipNN/t+K.png`: inputs, prediction,
truth, error, flows, fusion mask, blocks that ran; `images/clipNN/rollout.gif`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax

from dmvfn_jax.data.pipeline import ArrayClips
from dmvfn_jax.data.sources import heldout_synthetic, synthetic_options
from dmvfn_jax.evaluation.protocols import MODES, Protocol
from dmvfn_jax.evaluation.report import VARIANT_LABELS, format_table, write_text
from dmvfn_jax.evaluation.routing_report import format_routing_report
from dmvfn_jax.evaluation.run import evaluate_clips

log = logging.getLogger("dmvfn_jax")

BATCH = 16  # clips per evaluation step (rounded up to a multiple of the devices)


def evaluate_heldout(model, config, workdir: str | Path) -> dict:
    """Scores `config.eval.num_clips` held-out synthetic clips of `config.eval.num_frames` frames
    (2 of context, the rest predicted) at the training size, and writes the results into `workdir`.
    Returns the results dict (`eval.py`'s keys, plus `setup`)."""
    ev, data = config.eval, config.data
    if ev.num_frames < 3:
        raise ValueError(f"config.eval.num_frames must be >= 3 (2 of context, 1 predicted), got {ev.num_frames}")
    clips = ArrayClips(heldout_synthetic(data.seed, ev.num_clips, ev.num_frames, data.height, data.width,
                                         **synthetic_options(data)))
    protocol = Protocol("synthetic", "", "held-out", (0, 1), ev.num_frames - 2)
    n_dev = jax.device_count()
    workdir = Path(workdir)
    results = evaluate_clips(model, config.data.channel_order, clips, range(len(clips)), protocol, MODES["clean"],
                             ["psnr"], batch_size=-(-BATCH // n_dev) * n_dev, output=workdir,
                             save_predictions=ev.save_clips, save_images=ev.save_clips, progress=False)
    results["setup"] = (f"Held-out synthetic clips: {ev.num_clips} at {data.height}x{data.width}, "
                        f"context 2 frames, {protocol.horizon} predicted")
    results["table"] = format_table(results)
    routing_text = format_routing_report(results["routing_report"], "held-out pairs (moving, still, shifted)")
    if jax.process_index() == 0:
        write_text(workdir / "results.md", results["setup"] + "\n\n```\n" + results["table"] + "\n\n"
                   + routing_text + "\n```\n")
        write_text(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    log.info("%s\n%s", results["setup"], results["table"])  # the routing report: logged by evaluate_clips
    psnr = {v: results["results"][v]["psnr"]["running_mean"][0] for v in ("dmvfn", "copy_last")}
    log.info("t+1 PSNR: %s %.2f dB, %s %.2f dB (%+.2f dB); pictures in %s", VARIANT_LABELS["dmvfn"], psnr["dmvfn"],
             VARIANT_LABELS["copy_last"], psnr["copy_last"], psnr["dmvfn"] - psnr["copy_last"], workdir / "images")
    return results
