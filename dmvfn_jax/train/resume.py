"""Resuming a run: which checkpoint to resume from, and whether the config still describes it.

- `restore_latest_readable`: the newest checkpoint that restores; newer ones that do not (a
  truncated array file, a copy cut short) are named in one warning line each and moved aside to
  `WORKDIR/unreadable_checkpoints/` (never deleted), or with `strict` refused. If none restores,
  one error line lists them all and nothing is moved.
- `config_changes`: the config is saved with every checkpoint; on resume the changed fields are
  listed. A change to a field that shapes the run (batch size, seeds, schedule, data source and
  shape, update mode, estimator, ...: every field not in `HARMLESS`) breaks exact continuation
  and is refused unless `accept_config_changes`; a change to a `HARMLESS` field passes with a note.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from dmvfn_jax.errors import InputError, quiet_orbax_noise
from dmvfn_jax.models.dmvfn import SCALES, WIDTHS

log = logging.getLogger("dmvfn_jax.train")

# Fields whose change leaves the resumed run what it would have been (logging, checkpoint
# cadence, input processes, the end-of-run evaluation, where the data and weights are read from).
HARMLESS = (
    "name", "log_every", "checkpoint_every", "image_every", "keep_checkpoints", "async_checkpoints",
    "max_bad_steps", "data.workers", "data.prefetch", "data_dir", "eval",
    # read only when a run starts from scratch
    "init_checkpoint", "allow_channel_order_change", "require_init_checkpoint",
    "accept_config_changes", "strict_resume",
)
UNREADABLE_DIR = "unreadable_checkpoints"
# Fields added after runs had saved their configs: absent from a saved config, each had this value.
ADDED_FIELDS = {"model.widths": list(WIDTHS), "model.scales": list(SCALES), "routing.cost_weight": 0.0,
                "routing.rescale": True, "routing.inputs": "frames", "data.still_fraction": 0.0}


class CheckpointUnreadable(InputError):
    """No checkpoint of the run could be restored (or, strict, the newest could not)."""


def config_snapshot(config) -> dict:
    """The config as plain JSON values (tuples become lists), as saved with each checkpoint."""
    return json.loads(config.to_json_best_effort())


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _harmless(key: str) -> bool:
    return any(key == h or key.startswith(h + ".") for h in HARMLESS)


def config_changes(saved: dict, current: dict) -> tuple[list[str], list[str]]:
    """(breaking, harmless) changes from `saved` to `current`, each as "key: old -> new"."""
    a, b = _flatten(saved), _flatten(current)
    breaking, harmless = [], []
    for key in sorted(a.keys() | b.keys()):
        old, new = a.get(key, ADDED_FIELDS.get(key, "<absent>")), b.get(key, "<absent>")
        if old == new:
            continue
        line = f"{key}: {json.dumps(old)} -> {json.dumps(new)}"
        (harmless if _harmless(key) else breaking).append(line)
    return breaking, harmless


def check_config(saved: dict | None, config, step: int) -> list[str]:
    """Refuses a breaking change unless `config.accept_config_changes`; returns the accepted
    breaking changes (for the summary). Harmless changes are logged."""
    if saved is None:
        log.warning("the checkpoint of step %d holds no config (written before configs were saved): "
                    "the config cannot be compared", step)
        return []
    breaking, harmless = config_changes(saved, config_snapshot(config))
    if harmless:
        log.info("config changes since step %d that do not change the run: %s", step, "; ".join(harmless))
    if breaking and not config.get("accept_config_changes", False):
        raise InputError(
            f"the config differs from the one step {step} was trained with, in fields that change the run "
            f"(input stream, schedule or loss): {'; '.join(breaking)}. Run with the old values, use another "
            "--workdir, or pass --config.accept_config_changes=True to continue with the new ones on purpose"
        )
    if breaking:
        log.warning("resuming step %d with a changed config (accept_config_changes): %s", step, "; ".join(breaking))
    return breaking


def _reason(e: BaseException) -> str:
    """A few words of an orbax/tensorstore error: the root cause's status and what it says, e.g.
    "OUT_OF_RANGE: Requested byte range [0, 210162) is not valid for value of size 1000"."""
    chain, x = [], e
    while x is not None and len(chain) < 10:
        chain.append(x)
        x = x.__cause__ or x.__context__
    root = chain[-1]
    text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    status = re.match(r"([A-Z_]{4,}): .*?\": (.*)$", text)  # tensorstore: CODE: Error reading "key" in ...": what
    if status:
        text = f"{status.group(1)}: {status.group(2)}"
    return text if len(text) <= 160 else text[:157] + "..."


def _set_aside(step_dir: Path, workdir: Path) -> Path:
    target_root = workdir / UNREADABLE_DIR
    target_root.mkdir(parents=True, exist_ok=True)
    target, n = target_root / step_dir.name, 1
    while target.exists():
        target, n = target_root / f"{step_dir.name}.{n}", n + 1
    shutil.move(str(step_dir), str(target))
    return target


def restore_latest_readable(mngr, restore_step, workdir: Path, strict: bool = False, primary: bool = True):
    """(step, restored) of the newest checkpoint that `restore_step(step)` restores, or
    (None, None) if the run has none. Unreadable newer ones are moved aside (see the module) by
    the `primary` process; the others wait for it."""
    mngr.reload()
    steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
        return None, None
    root = Path(mngr.directory)
    failed: list[tuple[int, str]] = []
    for step in steps:
        try:
            restored = restore_step(step)
        except Exception as e:  # orbax and tensorstore raise many kinds; each means "not this one"
            quiet_orbax_noise()  # reads still in flight would each print a traceback
            reason = _reason(e)
            if strict:
                raise CheckpointUnreadable(
                    f"checkpoint {root / str(step)} (step {step}) cannot be restored ({reason}); strict_resume "
                    "refuses to fall back to an older one"
                ) from None
            log.warning("checkpoint %s (step %d) cannot be restored (%s); trying the next older one",
                        root / str(step), step, reason)
            failed.append((step, reason))
            continue
        for bad, _ in failed if primary else ():  # newer than the one resumed from: out of the way of new saves
            aside = _set_aside(root / str(bad), workdir)
            log.warning("moved the unreadable checkpoint of step %d to %s (kept, not deleted)", bad, aside)
        if failed:
            import jax

            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("dmvfn_jax: unreadable checkpoints moved aside")
            mngr.reload()
        return step, restored
    listed = ", ".join(f"step {s} ({r})" for s, r in failed)
    raise CheckpointUnreadable(
        f"no checkpoint under {root} can be restored: {listed}. Nothing was moved or deleted; move them "
        "aside to start over, or use another --workdir"
    )
