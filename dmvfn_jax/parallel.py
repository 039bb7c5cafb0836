"""Data parallelism: a 1-D `data` mesh, per-device programs under `jax.shard_map`, packed collectives,
and the moves between hosts and the mesh (a global batch from each process's rows, replicated
placement, host copies), for training and evaluation alike.

Pure data parallelism with replicated parameters needs one thing across devices: the mean of
the gradients (and of a few metric scalars). Left to itself, XLA's sharding propagation
re-shards DMVFN's activations along spatial axes (the model's concatenates, pads, slices and
reshapes) and its convolutions then exchange halos: collective-permutes, all-to-alls and
all-gathers (BENCHMARKS.md, "Data parallelism"). Under `shard_map` each device runs exactly the
single-device program on its own rows of the batch, and the only collectives are the ones
written here: `pmean_packed` / `psum_packed` put every leaf of a tree into one vector and
reduce it with one all-reduce.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all (global) devices with the axis name `data`."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices).reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of arrays every device holds whole (parameters, optimiser state, scalars)."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch split along its first axis over `data`."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """`tree`'s arrays placed whole on every device of `mesh` (each process passes the same values)."""
    return jax.device_put(tree, replicated(mesh))


def global_batch(mesh: Mesh, local_clips) -> jax.Array:
    """This host's slice of the batch -> a global array sharded on `data`.

    Each process passes only its own clips (B / process_count of them).
    """
    return jax.make_array_from_process_local_data(batch_sharded(mesh), local_clips)


def host_copy(tree):
    """Numpy copy of replicated arrays, also when they span several processes."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else a, tree)


def local_rows(x) -> np.ndarray:
    """This process's rows of a batch-sharded global array, in batch order."""
    return np.concatenate([np.asarray(s.data) for s in sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)])


def per_device(fn: Callable, mesh: Mesh, in_specs, out_specs) -> Callable:
    """`fn(*args, axis_name=DATA_AXIS)` run on every device of `mesh` on its own blocks of the
    arguments (`jax.shard_map`); `fn` itself writes every collective the program has. On a
    one-device mesh, `fn(*args, axis_name=None)`.

    The varying-manual-axes check is off: it would differentiate replicated parameters into an
    implicit all-reduce per leaf. The callers reduce explicitly (`pmean_packed`), which is what
    makes a `P()` output replicated.
    """
    if mesh.size == 1:  # the single-device program itself: no collectives to write, and XLA compiles
        return lambda *args: fn(*args, axis_name=None)  # it in 2/3 of the time it takes under shard_map

    def body(*args):
        return fn(*args, axis_name=DATA_AXIS)

    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def batch_rows(local_rows: int, axis_name: str | None):
    """(start, total) of this device's rows in the global batch; None outside `shard_map`."""
    if axis_name is None:
        return None
    return jax.lax.axis_index(axis_name) * local_rows, local_rows * jax.lax.axis_size(axis_name)


def pack(tree) -> jax.Array:
    """Every leaf of `tree` raveled into one float32 vector, in `jax.tree.leaves` order."""
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)])


def unpack(flat: jax.Array, like):
    """The inverse of `pack`: `flat` as a tree with `like`'s structure, shapes and dtypes (`like`'s
    leaves may be arrays or `jax.ShapeDtypeStruct`s).

    Its gradient is `pack` of the leaves' gradients, one concatenation. (Left to autodiff, each
    slice's transpose is a zero vector of `flat`'s size with the slice padded in, and the sum of as
    many of them as there are leaves: XLA's CPU compiler counts 3.6x the bytes of a DMVFN training
    step with it, BENCHMARKS.md, decision 42.)"""
    leaves, treedef = jax.tree.flatten(like)
    shapes = tuple(jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in leaves)
    return jax.tree.unflatten(treedef, _split(flat, shapes))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _split(flat: jax.Array, shapes: tuple) -> list:
    out, i = [], 0
    for x in shapes:
        size = math.prod(x.shape)
        out.append(flat[i : i + size].reshape(x.shape).astype(x.dtype))
        i += size
    return out


def _split_fwd(flat, shapes):
    return _split(flat, shapes), jnp.zeros((0,), flat.dtype)  # the residual: flat's dtype


def _split_bwd(shapes, empty, cts):
    dtype = empty.dtype
    parts = [jnp.zeros(math.prod(x.shape), dtype) if ct.dtype == jax.dtypes.float0  # an integer leaf's
             else jnp.ravel(ct).astype(dtype) for x, ct in zip(shapes, cts)]
    return (jnp.concatenate(parts) if parts else jnp.zeros((0,), dtype),)


_split.defvjp(_split_fwd, _split_bwd)


def _packed(reduce, tree, axis_name: str):
    if not jax.tree.leaves(tree):
        return tree
    return unpack(reduce(pack(tree), axis_name), tree)


def pmean_packed(tree, axis_name: str):
    """`lax.pmean` of every leaf, as one all-reduce of one float32 vector."""
    return _packed(jax.lax.pmean, tree, axis_name)


def psum_packed(tree, axis_name: str):
    """`lax.psum` of every leaf, as one all-reduce of one float32 vector."""
    return _packed(jax.lax.psum, tree, axis_name)
