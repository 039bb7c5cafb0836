"""`train_and_evaluate(config, workdir)`: the whole training run, importable from a notebook.

- data parallel over every device (`jax.jit` over a `Mesh(('data',))`), several hosts when
  `jax.distributed.initialize()` was called first (train.py does it with --distributed);
- orbax `CheckpointManager` in `workdir/checkpoints` (parameters, optimiser state, step, RNG;
  the input position is the step; the config), keeping the latest N, saving asynchronously; a run
  resumes from the latest readable checkpoint by itself, refusing a config that changes the run
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
import errno
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

from dmvfn_jax import checkpoint as ckpt
from dmvfn_jax import channels, parallel
from dmvfn_jax.data.sources import make_source
from dmvfn_jax.data.stream import close_iterator
from dmvfn_jax.errors import InputError
from dmvfn_jax.evaluation import routing_report
from dmvfn_jax.losses import check_pyramid_size
from dmvfn_jax.models.dmvfn import DMVFN, SCALES, WIDTHS
from dmvfn_jax.models.routing import ROUTING_INPUTS
from dmvfn_jax.train import optim, pod
from dmvfn_jax.train import step as step_lib
from dmvfn_jax.progress import format_duration
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


def _has_checkpoints(workdir: Path) -> bool:
    """Whether the run has checkpoints to resume from (readable or not: the restore decides)."""
    folder = workdir / "checkpoints"
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def build_model(config, resuming: bool = False) -> DMVFN:
    """A fresh DMVFN, or the weights of `config.init_checkpoint` (e.g. converted official ones).
    `resuming`: the weights come from the run's checkpoint, so `init_checkpoint` is not read."""
    dtype = {"float32": None, "bfloat16": jnp.bfloat16}[config.get("compute_dtype", "float32")]
    order = config.data.channel_order
    blocks = model_blocks(config)
    options = dict(dtype=dtype, **routing_options(config), **blocks)
    if resuming:
        log.info("resuming: the weights come from the run's checkpoint%s; frames reach the network as %s",
                 " (init_checkpoint is not read)" if config.get("init_checkpoint") else "", order)
        return DMVFN(rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")), **options)
    if config.get("require_init_checkpoint") and not config.get("init_checkpoint"):
        raise InputError(f"config {config.name!r} fine-tunes existing weights: pass --config.init_checkpoint=DIR "
                         "(a `convert_weights.py dmvfn` output or a trained run's model/)")
    if config.get("init_checkpoint"):  # no random init to throw away
        params, meta = ckpt.load_checkpoint(config.init_checkpoint)
        if meta["channel_order"] != order:
            if not config.get("allow_channel_order_change", False):
                raise InputError(
                    f"init_checkpoint {config.init_checkpoint} was trained on {meta['channel_order']} frames, but "
                    f"config.data.channel_order is {order}: fine-tuning on swapped channels starts from a worse "
                    f"model. Pass --config.data.channel_order={meta['channel_order']}, or "
                    "--config.allow_channel_order_change=True to retrain it on purpose"
                )
            log.warning("init_checkpoint %s was trained on %s frames; training it on %s frames "
                        "(allow_channel_order_change)", config.init_checkpoint, meta["channel_order"], order)
        saved = {k: tuple(meta.get(k, default)) for k, default in (("widths", WIDTHS), ("scales", SCALES))}
        if saved != blocks:
            raise InputError(
                f"init_checkpoint {config.init_checkpoint} has blocks of widths {list(saved['widths'])} at scales "
                f"{list(saved['scales'])}, but config.model asks for widths {list(blocks['widths'])} at scales "
                f"{list(blocks['scales'])}: set config.model to the checkpoint's, or leave init_checkpoint empty"
            )
        log.info("initialising from %s (trained on %s frames); frames reach the network as %s",
                 config.init_checkpoint, meta["channel_order"], order)
        from dmvfn_jax.checkpoint import saved_routing_options  # noqa: PLC0415 (as export_model)

        saved_routing = saved_routing_options(meta, config.init_checkpoint)
        if saved_routing != {k: options[k] for k in saved_routing}:
            log.info("the routing of %s was trained with %s; this run trains it with %s (config.routing)",
                     config.init_checkpoint, saved_routing, {k: options[k] for k in saved_routing})
        return ckpt.build_with_params(lambda: DMVFN(rngs=nnx.Rngs(0), **options), params,
                                      config.init_checkpoint)
    log.info("a fresh model%s; frames reach the network as %s (config.data.channel_order)",
             "" if blocks == {"widths": WIDTHS, "scales": SCALES} else
             f" of {len(blocks['widths'])} blocks (widths {list(blocks['widths'])}, scales {list(blocks['scales'])})",
             order)
    # The 'rbg' PRNG initialises the 240 parameters several times faster than threefry on CPU.
    return DMVFN(rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")), **options)


def model_blocks(config) -> dict:
    """`{"widths": ..., "scales": ...}` of `config.model` (the official nine blocks where a config
    has none), checked: one scale per width, widths positive multiples of 4, scales 1, 2 or 4 (the
    official ones)."""
    model = config.get("model") or {}
    widths = tuple(int(w) for w in model.get("widths", WIDTHS))
    scales = tuple(int(s) for s in model.get("scales", SCALES))
    if not widths or len(widths) != len(scales):
        raise InputError(f"config.model.widths {list(widths)} and config.model.scales {list(scales)} must be "
                         "non-empty and of one length (one width and one scale per block)")
    if any(w <= 0 or w % 4 for w in widths):
        raise InputError(f"config.model.widths {list(widths)}: each must be a positive multiple of 4")
    if any(s not in (1, 2, 4) for s in scales):
        raise InputError(f"config.model.scales {list(scales)}: each must be 1, 2 or 4")
    return {"widths": widths, "scales": scales}


def routing_options(config) -> dict:
    """The routing module's options of `config.routing`, as `DMVFN(**...)` takes them (the official
    ones where a config has none): `rescale`, the official rescaling of v to sum n/2 (True) or the
    sigmoid's v as it is; `inputs`, what the module reads (`models.routing.ROUTING_INPUTS`)."""
    rescale = config.routing.get("rescale", True)
    inputs = config.routing.get("inputs", "frames")
    if not isinstance(rescale, bool):
        raise InputError(f"config.routing.rescale must be True or False, got {rescale!r}")
    if inputs not in ROUTING_INPUTS:
        raise InputError(f"config.routing.inputs must be one of {ROUTING_INPUTS}, got {inputs!r}")
    return {"routing_rescale": rescale, "routing_inputs": inputs}


def _build_vgg(config):
    if not config.get("vgg_checkpoint"):
        log.info("no VGG19 weights (config.vgg_checkpoint is empty): training on the Laplacian term alone")
        return None
    from dmvfn_jax.losses import load_vgg19

    log.info("perceptual loss with VGG19 features from %s", config.vgg_checkpoint)
    return load_vgg19(config.vgg_checkpoint)


def _checkpoint_manager(workdir: Path, config):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints,
        enable_async_checkpointing=config.async_checkpoints,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options)


class DiskFull(InputError):
    """A checkpoint could not be written for lack of space."""


def _is_disk_full(e: BaseException) -> bool:
    while e is not None:
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _complete_steps(mngr) -> list[int]:
    """The steps whose checkpoints are complete on disk (read anew)."""
    try:
        mngr.reload()
    except Exception as e:  # noqa: BLE001 - then the manager's own list
        log.debug("reloading the checkpoint list: %s", e)
    return list(mngr.all_steps())


def _disk_full_error(e: BaseException, workdir: Path, state, saves: list[int], mngr) -> DiskFull:
    """One line: what could not be written, the space a checkpoint needs, and where a rerun starts.
    An async save fails at the next save or wait: the first started and unfinished one is named."""
    import shutil

    need = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
    try:
        free_text = f"{shutil.disk_usage(workdir).free / 2**20:.0f} MiB free"
    except OSError:
        free_text = "free space unknown"
    complete = _complete_steps(mngr)
    failed = [s for s in saves if s not in complete]
    other = getattr(e, "filename", None) or "the run's other files (model, logs, summary)"
    what = f"saving the checkpoint of step {failed[0]}" if failed else f"writing {other}"
    rerun = (f"the newest complete checkpoint is step {max(complete)}, and running again resumes from it" if complete
             else "no checkpoint was completed, so running again starts from step 0")
    return DiskFull(
        f"no space left on the device of {workdir} while {what}: a checkpoint needs about {need / 2**20:.0f} MiB "
        f"({free_text}); {rerun}"
    )


def _save(mngr, state, step: int, config, data: "_Input", wait: bool = False) -> None:
    import orbax.checkpoint as ocp

    from dmvfn_jax.train.resume import config_snapshot

    meta = {"step": step, "input_position": step, "data_source": config.data.source,
            "config": config_snapshot(config)}
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data.grain is not None:  # the Grain iterator's state, one file per process
        import grain

        meta["input_offset"] = data.offset
        items["input"] = grain.checkpoint.CheckpointSave(data.grain)
    mngr.save(step, args=ocp.args.Composite(**items))
    if wait:
        mngr.wait_until_finished()


class _Input:
    """The training batches from the resumed step on. For the clip sources they come from a Grain
    iterator (`grain`) over batches `offset`, ..., whose state every checkpoint saves (`input`)
    and a resumed run restores; the synthetic source is addressed by step alone (`grain` None)."""

    def __init__(self, source, mngr, start: int, total: int, meta: dict | None):
        self.grain, self.offset = None, start
        if hasattr(source, "iterator"):
            self.grain = self._restored(source, mngr, start, meta)
            if self.grain is None:
                self.grain = source.iterator(start)
            self.batches = self.grain
        else:
            self.batches = source.batches(start, total)

    def _restored(self, source, mngr, start: int, meta: dict | None):
        """The iterator as the checkpoint of `start` saved it, or None (then the input restarts at
        `start`: the same batches, since they are addressed by step)."""
        if meta is None:
            return None
        if meta.get("input_offset") is None:
            log.warning("the checkpoint of step %d holds no input state (written before the input moved to Grain): "
                        "the clip order from here on is Grain's, not the one the run started with", start)
            return None
        import grain
        import orbax.checkpoint as ocp

        offset = int(meta["input_offset"])
        it = source.iterator(offset)
        try:
            mngr.restore(start, args=ocp.args.Composite(input=grain.checkpoint.CheckpointRestore(it)))
        except Exception as e:  # noqa: BLE001 - e.g. another process count: the step is enough
            close_iterator(it)
            log.warning("the input state of step %d could not be restored (%s); the input restarts at "
                        "step %d, the same batches (they are addressed by step)", start,
                        str(e).splitlines()[0] if str(e) else type(e).__name__, start)
            return None
        self.offset = offset
        log.info("the input continues from the Grain iterator state saved at step %d", start)
        return it

    def close(self) -> None:
        close_iterator(self.batches)


def _restore(mngr, state, workdir: Path, strict: bool):
    """(state, meta) of the newest readable checkpoint (`resume.restore_latest_readable`)."""
    import orbax.checkpoint as ocp

    from dmvfn_jax.train.resume import restore_latest_readable

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)

    def restore_step(step):
        return mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )

    step, restored = restore_latest_readable(mngr, restore_step, workdir, strict,
                                             primary=jax.process_index() == 0)
    if restored is None:
        return None, None
    return restored.state, restored.meta


def export_model(model_params, graphdef, path: Path, channel_order: str, extra: dict | None = None) -> Path:
    """Writes an inference checkpoint (same format as converted official weights)."""
    from dmvfn_jax.checkpoint import save_dmvfn

    model = nnx.merge(graphdef, model_params)
    return save_dmvfn(path, ckpt.model_params(model), channel_order, extra, overwrite=True,
                      widths=model.widths, scales=model.scales, **model.routing_options)


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
    validate_config(config)
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

    resuming = _has_checkpoints(workdir)
    model = model if model is not None else build_model(config, resuming)
    vgg = _build_vgg(config)
    optimizer = optim.make_train_optimizer(config.weight_decay)
    schedule = optim.lr_schedule(total, config.warmup_steps, config.base_lr, config.peak_lr)
    graphdef, state = step_lib.init_state(model, optimizer, config.seed)
    del model
    step_fn = step_lib.make_train_step(
        graphdef, optimizer, vgg=vgg, update_mode=config.update_mode,
        estimator=config.routing.estimator, temperature=config.routing.temperature,
        cost_weight=config.routing.get("cost_weight", 0.0),
        cost_gradient=config.routing.get("cost_gradient", "probability"),
    )
    mesh = parallel.data_mesh()
    jitted, state = step_lib.shard_train_step(step_fn, mesh, state)
    # The schedule runs beside the step, not in it: one compiled step for every run length.
    lr_at = jax.jit(schedule, out_shardings=parallel.replicated(mesh))

    mngr = _checkpoint_manager(workdir, config)
    saves: list[int] = []  # the steps whose checkpoints were started, newest last
    peer_lost = False
    try:
        return _run(config, workdir, graphdef, state, jitted, lr_at, mesh, mngr, total, saves)
    except Exception as e:
        if _is_disk_full(e):
            raise _disk_full_error(e, workdir, state, saves, mngr) from None
        if jax.process_count() > 1 and isinstance(e, jax.errors.JaxRuntimeError):
            peer_lost = True  # a collective failed: another process is gone
            raise pod.PeerLost(f"a collective failed ({str(e).strip().splitlines()[0][:200]})") from e
        raise
    finally:
        if not peer_lost:  # orbax's close would wait at a barrier for the lost process
            _close_quietly(mngr)


def _close_quietly(mngr) -> None:
    """Shuts orbax's async machinery down; a failed background save is reported by the caller,
    not again here."""
    try:
        mngr.close()
    except Exception as e:  # noqa: BLE001 - its error was already raised (or is being)
        log.debug("closing the checkpoint manager: %s", e)


def _run(config, workdir: Path, graphdef, state, jitted, lr_at, mesh, mngr, total: int, saves: list[int]) -> dict:
    from dmvfn_jax.train.resume import check_config

    source = make_source(config, jax.process_index(), jax.process_count())
    restored, meta = _restore(mngr, state, workdir, bool(config.get("strict_resume", False)))
    start, accepted = 0, []
    if restored is not None:
        state, start = restored, int(meta["step"])
        accepted = check_config(meta.get("config"), config, start)
        log.info("resumed from %s at step %d", workdir / "checkpoints" / str(start), start)
    writer = MetricWriter(workdir / "tensorboard", enabled=jax.process_index() == 0)
    writer.text(start, "config", "```\n" + config.to_json_best_effort(indent=2) + "\n```")
    progress = Progress(total, start, config.batch_size)
    strip_fn = jax.jit(lambda p, a, b: nnx.merge(graphdef, p).predict(a, b, "threshold"))
    gates_fn = routing_report.gates_fn(graphdef)
    last, status, done = {}, "completed", start
    t_start = time.perf_counter()

    data = _Input(source, mngr, start, total, meta)
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
                gates, pairs = routing_report.probe(gates_fn, state.params, clips[:, :2].astype(np.float32) / 255.0)
                report = routing_report.routing_report(gates, pairs.motion, pairs.kinds)
                writer.scalars(done, {f"routing/{k}": v for k, v in routing_report.routing_scalars(report).items()})
                log.info("%s", routing_report.summary_line(report))
            stop = preemption.stop_at(done)  # in a multi-process run, the same step in every process
            if done % config.checkpoint_every == 0 or done == total or stop:
                saves.append(done)
                _save(mngr, state, done, config, data, wait=stop or done == total)
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
        params = parallel.host_copy(state.params)
        export_model(params, graphdef, workdir / "model", config.data.channel_order,
                     {"trained_steps": total, "config": config.get("name", "")})
        log.info("training done in %s; inference checkpoint: %s", format_duration(elapsed), workdir / "model")
        if config.get("eval") and config.eval.get("num_clips"):
            from dmvfn_jax.train.evaluate import evaluate_synthetic

            summary["eval"] = evaluate_synthetic(nnx.merge(graphdef, params), config, workdir)
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


def validate_config(config) -> None:
    """Clear errors for settings that would fail deep inside XLA."""
    if config.num_train_steps <= config.warmup_steps:
        raise InputError(f"num_train_steps ({config.num_train_steps}) must exceed warmup_steps ({config.warmup_steps})")
    if config.data.num_frames < 3:
        raise InputError(f"data.num_frames must be >= 3 (a triplet), got {config.data.num_frames}")
    try:
        check_pyramid_size((1, config.data.height, config.data.width, 3), levels=5)
    except ValueError as e:
        raise InputError(f"data.height x data.width = {config.data.height}x{config.data.width}: {e}") from e
    if config.update_mode not in step_lib.UPDATE_MODES:
        raise InputError(f"update_mode must be one of {step_lib.UPDATE_MODES}, got {config.update_mode!r}")
    if config.get("compute_dtype", "float32") not in ("float32", "bfloat16"):
        raise InputError(f"compute_dtype must be 'float32' or 'bfloat16', got {config.compute_dtype!r}")
    if config.data.channel_order not in ckpt.CHANNEL_ORDERS:
        raise InputError(f"data.channel_order must be one of {ckpt.CHANNEL_ORDERS}")
    if config.routing.get("cost_gradient", "probability") not in step_lib.COST_GRADIENTS:
        raise InputError(f"routing.cost_gradient must be one of {step_lib.COST_GRADIENTS}, "
                         f"got {config.routing.cost_gradient!r}")
    model_blocks(config)
