"""`train_and_evaluate(config, workdir)`: the whole training run, importable from a notebook.

- data parallel over every device (`jax.jit` over a `Mesh(('data',))`), several hosts when
  `jax.distributed.initialize()` was called first (train.py does it with --distributed);
- the model, VGG and config checks from `build.py`; the batches from `input_state.py`;
- orbax checkpoints in `workdir/checkpoints` (`checkpoints.py`: parameters, optimiser state, step,
  RNG; the input position is the step; the config), keeping the latest N, saving asynchronously; a
  run resumes from the latest readable checkpoint by itself, refusing a config that changes the run
  (`resume.py`); SIGTERM saves and exits cleanly (in a multi-process run, a notice to any
  process stops all at the same step; a failed collective raises `pod.PeerLost`: `pod.py`); a
  full disk stops the run with one line;
- one run per workdir (`workdir_lock.py`);
- non-finite updates are skipped and counted; `max_bad_steps` of them in a row stop training;
- metrics to TensorBoard (`workdir/tensorboard`) and the log, progress with ETA;
- at the end, `workdir/model` is an inference checkpoint that `Predictor.from_checkpoint` and
  `python -m dmvfn_jax.predict` load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from dmvfn_jax import channels, parallel
from dmvfn_jax.data.sources import make_source
from dmvfn_jax.errors import InputError
from dmvfn_jax.evaluation import routing_report
from dmvfn_jax.models.dmvfn import DMVFN
from dmvfn_jax.train import build, checkpoints, optim, pod
from dmvfn_jax.train import step as step_lib
from dmvfn_jax.progress import format_duration
from dmvfn_jax.train.input_state import TrainingInput
from dmvfn_jax.train.report import MetricWriter, Progress

log = logging.getLogger("dmvfn_jax")


class TrainingDiverged(RuntimeError):
    """Too many non-finite updates in a row."""


_file_handler: logging.Handler | None = None


def setup_logging(workdir: Path | None = None) -> None:
    """Console logging for the `dmvfn_jax` logger, and `workdir/train.log` for this run."""
    global _file_handler
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    if not getattr(log, "_dmvfn_configured", False):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
        log.setLevel(logging.INFO)
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(fmt)
        log.addHandler(h)
        log.propagate = False
        log._dmvfn_configured = True
    if _file_handler is not None:  # a previous run in this process (a notebook, the tests)
        log.removeHandler(_file_handler)
        _file_handler.close()
        _file_handler = None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        _file_handler = logging.FileHandler(workdir / "train.log")
        _file_handler.setFormatter(fmt)
        log.addHandler(_file_handler)


def _to_host(metrics) -> dict[str, Any]:
    host = parallel.host_copy(metrics)
    out = {}
    for k, v in host.items():
        v = np.asarray(v)
        if v.ndim == 0:
            out[k] = float(v)
        else:
            out[k] = v
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, model: DMVFN | None = None) -> dict:
    """Trains per `config`, writing checkpoints, metrics and the final model under `workdir`.

    Returns a summary dict: final step, last metrics, skipped updates, status
    ('completed' or 'preempted'), and the evaluation results if the config asks for them.
    `model` overrides the freshly built one (tests, fine-tuning from a notebook).
    """
    workdir = Path(workdir)
    build.validate_config(config)
    lock = _lock_workdir(workdir)  # before anything is written: a second launch changes nothing
    try:
        setup_logging(workdir if jax.process_index() == 0 else None)
        if lock is not None and lock.took_over:
            log.warning("took over the workdir lock of %s, which is no longer running", lock.took_over)
        return _train(config, workdir, model)
    finally:
        if lock is not None:
            lock.release()


def _lock_workdir(workdir: Path):
    """Process 0 takes the workdir's lock for all hosts; on a busy workdir every process stops."""
    from dmvfn_jax.train.workdir_lock import WorkdirInUse, WorkdirLock

    lock, busy = None, None
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(workdir).acquire()
        except InputError as e:
            busy = e
    if jax.process_count() > 1:  # the other processes learn whether process 0 got it
        from jax.experimental import multihost_utils

        got = bool(multihost_utils.broadcast_one_to_all(np.array(busy is None)))
        if not got and busy is None:
            raise WorkdirInUse(f"workdir {workdir}: process 0 could not lock it (see its error)")
    if busy is not None:
        raise busy
    return lock


def _train(config, workdir: Path, model: DMVFN | None) -> dict:
    total = config.num_train_steps
    log.info(
        "devices: %d (%s), processes: %d; global batch %d", jax.device_count(), jax.devices()[0].platform,
        jax.process_count(), config.batch_size,
    )
    if config.batch_size % jax.device_count():
        raise InputError(f"batch_size {config.batch_size} is not divisible by the {jax.device_count()} devices")

    resuming = checkpoints.has_checkpoints(workdir)
    model = model if model is not None else build.build_model(config, resuming)
    vgg = build.build_vgg(config)
    optimizer = optim.make_train_optimizer(config.weight_decay)
    schedule = optim.lr_schedule(total, config.warmup_steps, config.base_lr, config.peak_lr)
    net, state = step_lib.init_state(model, optimizer, config.seed)
    del model
    step_fn = step_lib.make_train_step(
        net, optimizer, vgg=vgg, update_mode=config.update_mode,
        estimator=config.routing.estimator, temperature=config.routing.temperature,
        cost_weight=config.routing.get("cost_weight", 0.0),
    )
    mesh = parallel.data_mesh()
    jitted, state = step_lib.shard_train_step(step_fn, mesh, state)
    # The schedule runs beside the step, not in it: one compiled step for every run length.
    lr_at = jax.jit(schedule, out_shardings=parallel.replicated(mesh))

    mngr = checkpoints.checkpoint_manager(workdir, config)
    saves: list[int] = []  # the steps whose checkpoints were started, newest last
    peer_lost = False
    try:
        return _run(config, workdir, net, state, jitted, lr_at, mesh, mngr, total, saves)
    except Exception as e:
        if checkpoints.is_disk_full(e):
            raise checkpoints.disk_full_error(e, workdir, state, saves, mngr) from None
        if jax.process_count() > 1 and isinstance(e, jax.errors.JaxRuntimeError):
            peer_lost = True  # a collective failed: another process is gone
            raise pod.PeerLost(f"a collective failed ({str(e).strip().splitlines()[0][:200]})") from e
        raise
    finally:
        if not peer_lost:  # orbax's close would wait at a barrier for the lost process
            checkpoints.close_quietly(mngr)


def _run(config, workdir: Path, net, state, jitted, lr_at, mesh, mngr, total: int, saves: list[int]) -> dict:
    from dmvfn_jax.train.resume import check_config

    source = make_source(config, jax.process_index(), jax.process_count())
    restored, meta = checkpoints.restore(mngr, state, net, workdir, bool(config.get("strict_resume", False)))
    start, accepted = 0, []
    if restored is not None:
        state, start = restored, int(meta["step"])
        accepted = check_config(meta.get("config"), config, start)
        log.info("resumed from %s at step %d", workdir / "checkpoints" / str(start), start)
    writer = MetricWriter(workdir / "tensorboard", enabled=jax.process_index() == 0)
    writer.text(start, "config", "```\n" + config.to_json_best_effort(indent=2) + "\n```")
    progress = Progress(total, start, config.batch_size)
    strip_fn = jax.jit(lambda p, a, b: net.merge(p).predict(a, b, "threshold"))
    gates_fn = routing_report.gates_fn(net.graphdef)
    params_fn = jax.jit(net.params)  # every process runs it, as it runs the step
    last, status, done = {}, "completed", start
    t_start = time.perf_counter()

    data = TrainingInput(source, mngr, start, total, meta)
    with pod.Preemption() as preemption, contextlib.closing(data):  # closing stops the input workers
        pending = None  # (step, bad_streak) of the previous step, read once this step is queued
        for step, clips in zip(range(start, total), data.batches):
            state, metrics = jitted(state, parallel.global_batch(mesh, np.asarray(clips)), lr_at(step))
            done = step + 1
            # Reading the previous step's streak (not this one's) keeps the device busy while the
            # host loads the next batch: input and compute overlap.
            _check_streak(pending, config.max_bad_steps, mngr)
            pending = (done, metrics["bad_streak"])
            if done % config.log_every == 0 or done == total or done == start + 1:
                last = _to_host(metrics)
                speed = progress.report(done)
                rates = last.pop("routing_rate")
                scalars = {f"train/{k}": v for k, v in last.items()}
                scalars.update({f"routing/block{i}": float(r) for i, r in enumerate(rates)})
                scalars.update({f"speed/{k}": v for k, v in speed.items() if np.isfinite(v)})
                writer.scalars(done, scalars)
                log.info("%s  blocks %s", progress.line(done, speed, last), " ".join(f"{r:.2f}" for r in rates))
                last["routing_rate"] = rates.tolist()
            if config.image_every and done % config.image_every == 0:
                writer.image(done, "train/inputs_prediction_truth",
                             _image_strip(strip_fn, state.params, clips[0], config.data.channel_order))
                # how the routing depends on the input: each clip's first pair, still and moved
                gates, pairs = routing_report.probe(gates_fn, params_fn(state.params), clips[:, :2].astype(np.float32) / 255.0)
                report = routing_report.routing_report(gates, pairs.motion, pairs.kinds)
                writer.scalars(done, {f"routing/{k}": v for k, v in routing_report.routing_scalars(report).items()})
                log.info("%s", routing_report.summary_line(report))
            stop = preemption.stop_at(done)  # in a multi-process run, the same step in every process
            if done % config.checkpoint_every == 0 or done == total or stop:
                saves.append(done)
                checkpoints.save(mngr, state, done, config, data, wait=stop or done == total)
            if stop:
                status = "preempted"
                log.info("SIGTERM%s: saved a checkpoint at step %d and stopped; run again to resume",
                         " (a preemption notice to one of the processes, shared)" if preemption.shared else "", done)
                break

    _check_streak(pending, config.max_bad_steps, mngr)
    mngr.wait_until_finished()
    elapsed = time.perf_counter() - t_start
    summary = {
        "status": status,
        "step": int(done),
        "skipped_updates": int(parallel.host_copy(state.skipped)),
        "train_time_s": elapsed,
        "last_metrics": {k: v for k, v in last.items()},
    }
    if start:
        summary["resumed_from_step"] = start
    if accepted:  # breaking config changes accepted on resume (accept_config_changes)
        summary["accepted_config_changes"] = accepted
    if summary["skipped_updates"]:
        log.info("%d updates were skipped for non-finite loss or gradient", summary["skipped_updates"])
    if status == "completed" and jax.process_index() == 0:
        params = net.params(jnp.asarray(parallel.host_copy(state.params)))  # process 0's copy, unpacked here
        checkpoints.export_model(params, net.graphdef, workdir / "model", config.data.channel_order,
                     {"trained_steps": total, "config": config.get("name", "")})
        log.info("training done in %s; inference checkpoint: %s", format_duration(elapsed), workdir / "model")
        if config.get("eval") and config.eval.get("num_clips"):
            from dmvfn_jax.evaluation.heldout import evaluate_heldout

            summary["eval"] = evaluate_heldout(nnx.merge(net.graphdef, params), config, workdir)
    writer.flush()
    writer.close()
    if jax.process_index() == 0:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def _check_streak(pending, max_bad_steps: int, mngr) -> None:
    if pending is None:
        return
    step, streak = pending[0], int(parallel.host_copy(pending[1]))
    if streak >= max_bad_steps:
        raise TrainingDiverged(
            f"step {step}: {streak} updates in a row had a non-finite loss or gradient and were "
            f"skipped (max_bad_steps={max_bad_steps}); last good checkpoint: "
            f"{mngr.latest_step()}. Lower the learning rate or check the data."
        )


def _image_strip(strip_fn, params, clip: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """The clip's first triplet as a labelled picture (uint8): frames t-1 and t, the prediction
    (threshold routing), the truth, the error, both flows, the fusion mask and the blocks that ran."""
    from dmvfn_jax import visualize

    f = clip[:3].astype(np.float32) / 255.0
    res = parallel.host_copy(strip_fn(params, f[0:1], f[1:2]))
    rgb = [channels.reorder(x, channel_order) for x in (f[0], f[1], res.prediction[0], f[2])]
    return visualize.prediction_strip(*rgb[:3], res.flow[0], res.mask[0], res.gates[0], target=rgb[3])

