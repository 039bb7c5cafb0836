"""Model checkpoints on disk: an orbax parameter tree plus a small JSON metadata file.

Layout of a checkpoint directory:
    DIR/params/        orbax StandardCheckpointer tree of the network's parameters
    DIR/dmvfn.json     metadata: format, architecture, channel order, source file and sha256

Writes are atomic: everything goes to a hidden temporary directory beside DIR, which is
renamed into place only when complete, so a failed write never leaves a half-written DIR and
never replaces a good one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx, traverse_util

from dmvfn_jax import channels
from dmvfn_jax.errors import InputError, quiet_orbax_noise
from dmvfn_jax.files import atomic_directory
from dmvfn_jax.models import routing as routing_lib
from dmvfn_jax.models.dmvfn import DMVFN, SCALES, WIDTHS

FORMAT = "dmvfn-jax"
FORMAT_VERSION = 1
METADATA_FILE = "dmvfn.json"
PARAMS_DIR = "params"
CHANNEL_ORDERS = channels.ORDERS  # the orders a checkpoint may record


class CheckpointError(InputError):
    """A checkpoint that cannot be read or written; the message names the path at fault."""


# -- parameter trees ----------------------------------------------------------------------
def model_params(model: nnx.Module) -> dict[str, Any]:
    """The model's parameters as a nested dict with string keys (list indices as '0', '1', ...)."""
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return traverse_util.unflatten_dict({tuple(str(k) for k in path): v for path, v in flat.items()})


def flat_shapes(tree: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """{'blocks/0/conv0/0/conv/kernel': shape, ...} of a nested parameter dict."""
    return {"/".join(p): tuple(np.shape(v)) for p, v in traverse_util.flatten_dict(tree).items()}


def abstract_params(model_fn) -> dict[str, Any]:
    """Parameter shapes of the model that `model_fn()` builds, without allocating it."""
    model = nnx.eval_shape(model_fn)
    return model_params(model)


def build_with_params(model_fn, params: dict[str, Any], source: str = "params"):
    """The module `model_fn()` builds, created without init compute, carrying `params`."""
    model = nnx.eval_shape(model_fn)
    load_params_into(model, params, source)
    return model


def load_params_into(model: nnx.Module, params: dict[str, Any], source: str = "params") -> None:
    """Copies a nested parameter dict into `model`, checking every key and shape first."""
    expected = flat_shapes(model_params(model))
    got = flat_shapes(params)
    problems = describe_mismatch(expected, got)
    if problems:
        raise CheckpointError(f"{source}: parameters do not fit the model:\n" + "\n".join(problems))
    state = nnx.state(model, nnx.Param)
    flat = traverse_util.flatten_dict(params)

    def lookup(path, leaf):
        key = tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        return jax.numpy.asarray(flat[key], dtype=leaf.dtype)

    pure = nnx.to_pure_dict(state)
    new = jax.tree_util.tree_map_with_path(lookup, pure)
    nnx.replace_by_pure_dict(state, new)
    nnx.update(model, state)


def describe_mismatch(expected: dict[str, tuple], got: dict[str, tuple], limit: int | None = None) -> list[str]:
    """Lines naming missing, unexpected and mis-shaped keys (empty when they agree)."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    lines = []
    cut = (lambda xs: xs[:limit]) if limit else (lambda xs: xs)
    for k in cut(missing):
        lines.append(f"  missing: {k} {expected[k]}")
    for k in cut(unexpected):
        lines.append(f"  unexpected: {k} {got[k]}")
    for k in cut(misshaped):
        lines.append(f"  mis-shaped: {k} is {got[k]}, the model needs {expected[k]}")
    return lines


def _this_process_only():
    """Orbax options for a file written or read by this process alone (no cross-host barrier).

    Inference checkpoints hold host-local numpy arrays; in a multi-host run only process 0
    writes them, and any process may read them.
    """
    import orbax.checkpoint as ocp

    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


# -- save / load --------------------------------------------------------------------------
def save_checkpoint(path, params: dict[str, Any], metadata: dict[str, Any], overwrite: bool = False) -> Path:
    """Writes `params` (nested dict of arrays) and `metadata` to the directory `path`."""
    import orbax.checkpoint as ocp

    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    if meta.get("channel_order") not in CHANNEL_ORDERS:
        raise ValueError(f"metadata channel_order must be one of {CHANNEL_ORDERS}, got {meta.get('channel_order')!r}")
    tree = jax.tree.map(np.asarray, params)
    with atomic_directory(path, overwrite) as tmp:
        ckptr = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only())
        ckptr.save(tmp / PARAMS_DIR, tree)
        ckptr.wait_until_finished()
        ckptr.close()
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return Path(path)


def read_metadata(path) -> dict[str, Any]:
    path = Path(path)
    meta_file = path / METADATA_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not meta_file.is_file() or not (path / PARAMS_DIR).is_dir():
        raise CheckpointError(
            f"{path}: not a dmvfn-jax checkpoint (needs {METADATA_FILE} and {PARAMS_DIR}/; "
            "convert official weights with `python convert_weights.py dmvfn`)"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_file}: unreadable metadata ({e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_file}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("channel_order") not in CHANNEL_ORDERS:
        raise CheckpointError(f"{meta_file}: channel_order {meta.get('channel_order')!r} is not one of {CHANNEL_ORDERS}")
    return meta


def load_checkpoint(path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns `(params, metadata)` of a checkpoint directory; params as numpy arrays."""
    import orbax.checkpoint as ocp

    meta = read_metadata(path)
    try:
        with ocp.StandardCheckpointer(multiprocessing_options=_this_process_only()) as ckptr:
            tree = ckptr.restore(Path(path).absolute() / PARAMS_DIR)
    except Exception as e:  # orbax raises many kinds; name the directory
        quiet_orbax_noise()  # reads still in flight would each print a traceback
        raise CheckpointError(f"{Path(path) / PARAMS_DIR}: cannot restore parameters ({type(e).__name__}: {e})") from e
    return jax.tree.map(np.asarray, tree), meta


def load_network(checkpoint_dir, architecture: str, build, how: str):
    """(module, metadata) of a checkpoint whose metadata names `architecture`; `build()` makes a
    fresh module of the right shape. A checkpoint of another network is a CheckpointError that
    says `how` to make the right one."""
    params, meta = load_checkpoint(checkpoint_dir)
    if meta.get("architecture") != architecture:
        raise CheckpointError(
            f"{checkpoint_dir}: architecture {meta.get('architecture')!r} is not {architecture!r} ({how})"
        )
    return build_with_params(lambda: build(meta), params, str(checkpoint_dir)), meta


# -- DMVFN checkpoints ----------------------------------------------------------------------
# The metadata every DMVFN checkpoint carries (architecture, widths, scales, the routing's options,
# channel order): the one writer (`save_dmvfn`: converted and trained models) and reader (`load_dmvfn`).
ARCHITECTURE = "dmvfn"  # the `architecture` of DMVFN checkpoints (dmvfn.json)


def save_dmvfn(path, params: dict, channel_order: str, extra: dict | None = None, overwrite: bool = False,
               widths=WIDTHS, scales=SCALES, routing_rescale: bool = True, routing_inputs: str = "frames") -> Path:
    """Writes a DMVFN inference checkpoint: `params` (nested dict of arrays) and the metadata every
    one carries (architecture, widths, scales, the routing's options, channel order), plus `extra`
    (e.g. the source file of converted weights). The one writer of converted and trained models;
    `load_dmvfn` reads it."""
    meta = {"architecture": ARCHITECTURE, "widths": list(widths), "scales": list(scales),
            "routing_rescale": bool(routing_rescale), "routing_inputs": routing_inputs, "channel_order": channel_order}
    meta.update(extra or {})
    return save_checkpoint(path, params, meta, overwrite=overwrite)


def saved_routing_options(meta: dict, path) -> dict:
    """The routing options a checkpoint's metadata records, as `DMVFN(**...)` takes them; the
    official ones for checkpoints written before they were recorded (converted official weights)."""
    rescale, inputs = meta.get("routing_rescale", True), meta.get("routing_inputs", "frames")
    if not isinstance(rescale, bool):
        raise CheckpointError(f"{path}: routing_rescale must be true or false, got {rescale!r}")
    if inputs not in routing_lib.ROUTING_INPUTS:
        raise CheckpointError(f"{path}: routing_inputs must be one of {routing_lib.ROUTING_INPUTS}, got {inputs!r}")
    return {"routing_rescale": rescale, "routing_inputs": inputs}


def load_dmvfn(path: str | os.PathLike) -> tuple[DMVFN, dict]:
    """A DMVFN checkpoint (converted or trained) and its metadata; clear errors for anything else."""

    def build(meta):
        kwargs = {}
        if "widths" in meta and "scales" in meta:
            kwargs = {"widths": tuple(meta["widths"]), "scales": tuple(meta["scales"])}
        return DMVFN(rngs=nnx.Rngs(0), **saved_routing_options(meta, path), **kwargs)

    model, meta = load_network(path, ARCHITECTURE, build, "convert official weights with `convert_weights.py dmvfn`")
    if meta.get("channel_order") not in CHANNEL_ORDERS:
        raise CheckpointError(f"{path}: channel_order {meta.get('channel_order')!r} is not one of {CHANNEL_ORDERS}")
    return model, meta
