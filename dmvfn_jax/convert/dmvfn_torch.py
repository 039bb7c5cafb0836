"""Key mapping between official PyTorch DMVFN state dicts and this package's parameters.

The table below is the whole conversion: every official key, the JAX parameter it becomes,
and the layout transform between them. It is checked against the shapes of a freshly built
model before anything is converted.

Layout transforms (PyTorch -> JAX):
    conv    (O, I, kh, kw) -> (kh, kw, I, O)
    convT   (I, O, kh, kw) -> (kh, kw, I, O)   (ConvTranspose2d, flip applied in the op)
    linear  (O, I)         -> (I, O)
    vector  (C,)           -> (C,)             (biases, PReLU slopes)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from flax import traverse_util

from dmvfn_jax.checkpoint import describe_mismatch
from dmvfn_jax.errors import InputError
from dmvfn_jax.models.dmvfn import WIDTHS
from dmvfn_jax.checkpoint import ARCHITECTURE as DMVFN_ARCHITECTURE

ARCHITECTURE = DMVFN_ARCHITECTURE
MODULE_PREFIX = "module."

_TO_JAX = {
    "conv": lambda a: np.transpose(a, (2, 3, 1, 0)),
    "convT": lambda a: np.transpose(a, (2, 3, 0, 1)),
    "linear": lambda a: np.transpose(a, (1, 0)),
    "vector": lambda a: a,
}
_TO_TORCH = {
    "conv": lambda a: np.transpose(a, (3, 2, 0, 1)),
    "convT": lambda a: np.transpose(a, (2, 3, 0, 1)),
    "linear": lambda a: np.transpose(a, (1, 0)),
    "vector": lambda a: a,
}


class ConversionError(InputError):
    """A checkpoint that cannot be converted; the message names the file at fault."""


def _unit(torch_prefix: str, jax_path: tuple[str, ...]):
    """A conv unit: Sequential(Conv2d, PReLU)."""
    return [
        (f"{torch_prefix}.0.weight", jax_path + ("conv", "kernel"), "conv"),
        (f"{torch_prefix}.0.bias", jax_path + ("conv", "bias"), "vector"),
        (f"{torch_prefix}.1.weight", jax_path + ("prelu", "slope"), "vector"),
    ]


def key_table(num_blocks: int = len(WIDTHS)) -> list[tuple[str, tuple[str, ...], str]]:
    """[(torch_key, jax_path, transform)] for every tensor of the official state dict."""
    rows = []
    for k in range(num_blocks):
        t, j = f"block{k}", ("blocks", str(k))
        rows += _unit(f"{t}.conv0.0", j + ("conv0", "0"))
        rows += _unit(f"{t}.conv0.1", j + ("conv0", "1"))
        for u in range(3):
            rows += _unit(f"{t}.convblock.{u}", j + ("convblock", str(u)))
        rows += _unit(f"{t}.conv_sq", j + ("conv_sq",))
        rows += _unit(f"{t}.conv1.0", j + ("conv1",))
        rows += _unit(f"{t}.convblock1.0", j + ("convblock1",))
        rows += [
            (f"{t}.lastconv.weight", j + ("lastconv", "kernel"), "convT"),
            (f"{t}.lastconv.bias", j + ("lastconv", "bias"), "vector"),
        ]
    rows += [
        ("routing.0.weight", ("routing", "conv_a", "kernel"), "conv"),
        ("routing.0.bias", ("routing", "conv_a", "bias"), "vector"),
        ("routing.2.weight", ("routing", "conv_b", "kernel"), "conv"),
        ("routing.2.bias", ("routing", "conv_b", "bias"), "vector"),
        ("l1.weight", ("routing", "l1", "kernel"), "linear"),
        ("l1.bias", ("routing", "l1", "bias"), "vector"),
    ]
    return rows


def torch_shapes(jax_shapes: dict[str, tuple[int, ...]], num_blocks: int = len(WIDTHS)) -> dict[str, tuple]:
    """The official state-dict shapes implied by the model's parameter shapes."""
    out = {}
    for tkey, jpath, kind in key_table(num_blocks):
        shape = jax_shapes["/".join(jpath)]
        out[tkey] = tuple(_TO_TORCH[kind](np.empty(shape, np.uint8)).shape) if shape else ()
    return out


def strip_module_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Drops the `module.` prefix that DDP-wrapped checkpoints carry (official files do)."""
    return {k[len(MODULE_PREFIX):] if k.startswith(MODULE_PREFIX) else k: v for k, v in state.items()}


def check_state_shapes(expected: dict, got: dict, source: str, network: str, required=None) -> None:
    """Raises ConversionError naming `source` unless `got` has exactly the `expected` keys and shapes.

    Fewer than half of the `required` keys (default: all expected) present means the file holds
    another network: one line. Otherwise every missing, unexpected and mis-shaped key is listed.
    """
    required = expected if required is None else required
    found = len(set(required) & set(got))
    if found < len(required) // 2:
        some = ", ".join(sorted(got)[:3]) or "nothing"
        raise ConversionError(
            f"{source}: holds another network, not {network} ({found} of {len(required)} {network} keys "
            f"found; it has {len(got)} keys such as {some})"
        )
    problems = describe_mismatch(expected, got)
    if problems:
        raise ConversionError(
            f"{source}: does not match {network} ({len(problems)} problems):\n" + "\n".join(problems)
        )


def torch_to_jax(
    state: dict[str, np.ndarray],
    jax_shapes: dict[str, tuple[int, ...]],
    source: str = "state dict",
    num_blocks: int = len(WIDTHS),
) -> dict[str, Any]:
    """Official state dict (numpy arrays, with or without `module.`) -> nested JAX params.

    Every key and shape is checked against `jax_shapes` (from a freshly built model); a
    mismatch raises ConversionError listing the missing, unexpected and mis-shaped keys.
    """
    state = strip_module_prefix(state)
    expected = torch_shapes(jax_shapes, num_blocks)
    check_state_shapes(expected, {k: tuple(np.shape(v)) for k, v in state.items()}, source, "DMVFN")
    flat = {}
    for tkey, jpath, kind in key_table(num_blocks):
        arr = np.asarray(state[tkey])
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        flat[jpath] = np.ascontiguousarray(_TO_JAX[kind](arr))
    return traverse_util.unflatten_dict(flat)


def jax_to_torch(params: dict[str, Any], num_blocks: int = len(WIDTHS), prefix: str = MODULE_PREFIX):
    """Nested JAX params -> official state dict of numpy arrays (keys with `prefix`)."""
    flat = traverse_util.flatten_dict(params)
    out = {}
    for tkey, jpath, kind in key_table(num_blocks):
        if jpath not in flat:
            raise ConversionError(f"parameter {'/'.join(jpath)} (for {tkey}) is missing from the checkpoint")
        out[prefix + tkey] = np.ascontiguousarray(_TO_TORCH[kind](np.asarray(flat[jpath])))
    return out


def random_official_state(seed: int = 0, widths: Sequence[int] = WIDTHS) -> dict[str, np.ndarray]:
    """A randomly initialised state dict in the official layout (keys with `module.`).

    Conv and linear weights are uniform in +-1/sqrt(fan_in) (PyTorch's default bound), biases
    uniform in +-0.1, PReLU slopes uniform in [0.05, 0.5]: for trying the pipeline and for
    tests, when no real weights are at hand.
    """
    from dmvfn_jax.checkpoint import abstract_params, flat_shapes
    from dmvfn_jax.models.dmvfn import DMVFN
    from flax import nnx

    # the scales do not shape any parameter
    shapes = flat_shapes(abstract_params(lambda: DMVFN(rngs=nnx.Rngs(0), widths=widths, scales=(1,) * len(widths))))
    rng = np.random.default_rng(seed)
    out = {}
    for tkey, shape in torch_shapes(shapes, len(widths)).items():
        if tkey.endswith(".1.weight") and len(shape) == 1:  # PReLU slope
            arr = rng.uniform(0.05, 0.5, shape)
        elif tkey.endswith("bias"):
            arr = rng.uniform(-0.1, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            if "lastconv" in tkey:  # (in, out, k, k): effective fan-in of a stride-2 transposed conv
                fan_in = shape[0] * shape[2] * shape[3] // 4
            bound = 1.0 / np.sqrt(fan_in)
            arr = rng.uniform(-bound, bound, shape)
        out[MODULE_PREFIX + tkey] = arr.astype(np.float32)
    return out
