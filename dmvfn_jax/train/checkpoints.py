"""The training run's orbax checkpoints: the manager of `workdir/checkpoints`, saving (the state,
the step and config, the input's Grain state) and restoring the newest readable one
(`resume.py`), one line for a full disk, and the final inference model (`workdir/model`)."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from types import SimpleNamespace

import jax
from flax import nnx

from dmvfn_jax import checkpoint as ckpt
from dmvfn_jax import parallel
from dmvfn_jax.errors import InputError
from dmvfn_jax.train import optim

log = logging.getLogger("dmvfn_jax")


def checkpoint_manager(workdir: Path, config):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints,
        enable_async_checkpointing=config.async_checkpoints,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options)


class DiskFull(InputError):
    """A checkpoint could not be written for lack of space."""


def is_disk_full(e: BaseException) -> bool:
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


def disk_full_error(e: BaseException, workdir: Path, state, saves: list[int], mngr) -> DiskFull:
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


def save(mngr, state, step: int, config, data: "TrainingInput", wait: bool = False) -> None:
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


def restore(mngr, state, net, workdir: Path, strict: bool):
    """(state, meta) of the newest readable checkpoint (`resume.restore_latest_readable`); `net` is
    the step's `PackedModel`. A checkpoint written before the parameters were packed (`saved_form`)
    resumes converted."""
    import orbax.checkpoint as ocp

    from dmvfn_jax.train.resume import restore_latest_readable

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)

    def restore_as(target, step):
        return mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        )

    def restore_step(step):
        form = saved_form(mngr, step)
        if form == "packed":
            return restore_as(abstract, step)
        old = restore_as(legacy_target(abstract, net.shapes, form), step)
        log.info("checkpoint of step %d: its parameters%s packed into one vector, as training keeps them now",
                 step, " and Adam's moments (one per parameter)" if form == "per_parameter" else "")
        return SimpleNamespace(state=from_legacy(old.state, form, abstract), meta=old.meta)

    step, restored = restore_latest_readable(mngr, restore_step, workdir, strict,
                                             primary=jax.process_index() == 0)
    if restored is None:
        return None, None
    return restored.state, restored.meta


def saved_form(mngr, step: int) -> str:
    """How a checkpoint's training state holds the parameters, read from its metadata (the step's
    `state` item, under the manager's plain step folders): "packed" (one vector, and Adam's moments
    one vector each: today's), "packed_moments" (a tree of parameters, the moments packed: written
    from 03d7ba4 until the parameters were packed) or "per_parameter" (trees of both: written before
    03d7ba4). Unreadable metadata reads as "packed": the restore then reports the checkpoint as it
    finds it."""
    import orbax.checkpoint as ocp

    try:
        tree = ocp.StandardCheckpointHandler().metadata(Path(mngr.directory) / str(step) / "state").tree
        params, mu = tree["params"], tree["opt_state"][0]["mu"]
    except Exception as e:  # noqa: BLE001 - the restore itself says what is wrong
        log.debug("checkpoint of step %d: no readable metadata (%s)", step, e)
        return "packed"
    if not isinstance(params, dict):
        return "packed"
    return "per_parameter" if isinstance(mu, dict) else "packed_moments"


def legacy_target(abstract, shapes, form: str):
    """The abstract training state a checkpoint of `form` (`saved_form`) holds, for a model whose
    parameters have `shapes` (`PackedModel.shapes`), placed as today's packed parameters are."""
    sharding = abstract.params.sharding
    placed = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)  # noqa: E731
    if form == "per_parameter":
        opt_state = jax.eval_shape(optim.make_train_optimizer().init, shapes)  # a moment per parameter
        opt_state = (placed(opt_state[0]), *abstract.opt_state[1:])  # Adam's moments; the rest as today's
        return abstract._replace(params=placed(shapes), opt_state=opt_state)
    return abstract._replace(params=placed(shapes))


def from_legacy(state, form: str, abstract):
    """A restored training state of `form` as today's: the parameters (and the moments) packed, on
    the devices and with the shardings of `abstract` (today's state)."""

    def convert(s):
        opt_state = optim.packed_moments_state(s.opt_state) if form == "per_parameter" else s.opt_state
        return s._replace(params=parallel.pack(s.params), opt_state=opt_state)

    return jax.jit(convert, out_shardings=jax.tree.map(lambda a: a.sharding, abstract))(state)


def has_checkpoints(workdir: Path) -> bool:
    """Whether the run has checkpoints to resume from (readable or not: the restore decides)."""
    folder = workdir / "checkpoints"
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def export_model(model_params, graphdef, path: Path, channel_order: str, extra: dict | None = None) -> Path:
    """Writes an inference checkpoint (same format as converted official weights)."""
    model = nnx.merge(graphdef, model_params)
    return ckpt.save_dmvfn(path, ckpt.model_params(model), channel_order, extra, overwrite=True,
                      widths=model.widths, scales=model.scales, **model.routing_options)


def close_quietly(mngr) -> None:
    """Shuts orbax's async machinery down; a failed background save is reported by the caller,
    not again here."""
    try:
        mngr.close()
    except Exception as e:  # noqa: BLE001 - its error was already raised (or is being)
        log.debug("closing the checkpoint manager: %s", e)
