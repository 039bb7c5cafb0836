"""Key mapping between torchvision VGG19 state dicts and `dmvfn_jax.losses.VGG19Features`.

torchvision's ImageNet file (`vgg19-dcbee2f5.pth`) holds `features.{0,2,5,7,10,12,14,16,19,21,
23,25,28,30,32,34}.{weight,bias}` and `classifier.{0,3,6}.{weight,bias}`. The perceptual loss
reads the features up to relu5_1 (`features[29]`), so the table below is the whole conversion:
the 13 convs 0..28, each

    features.N.weight (O, I, 3, 3) -> convN/kernel (3, 3, I, O)
    features.N.bias   (O,)         -> convN/bias   (O,)

checked against the shapes of a freshly built `VGG19Features`.

Accepted and dropped: the convs after relu5_1 (`features.30`, `.32`, `.34`; their shapes are
still checked when present) and every `classifier.*` key: the loss never uses them. Any other
key, and any needed key that is missing or mis-shaped, is a ConversionError that lists them
and names the file.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import traverse_util

from dmvfn_jax.convert.dmvfn_torch import check_state_shapes
from dmvfn_jax.losses import VGG19_ARCHITECTURE, VGG19_CONV_INDICES, VGG19_LAYERS

ARCHITECTURE = VGG19_ARCHITECTURE
LAYERS = VGG19_LAYERS
# torchvision's convs after relu5_1: (index, shape of weight).
UNUSED_CONVS = {30: (512, 512, 3, 3), 32: (512, 512, 3, 3), 34: (512, 512, 3, 3)}
UNUSED_PREFIXES = ("classifier.",)


def key_table() -> list[tuple[str, tuple[str, ...], str]]:
    """[(torchvision_key, jax_path, transform)] for every tensor the loss needs."""
    rows = []
    for n in VGG19_CONV_INDICES:
        rows.append((f"features.{n}.weight", (f"conv{n}", "kernel"), "conv"))
        rows.append((f"features.{n}.bias", (f"conv{n}", "bias"), "vector"))
    return rows


def torch_shapes(jax_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """torchvision state-dict shapes implied by the model's parameter shapes."""
    out = {}
    for tkey, jpath, kind in key_table():
        shape = jax_shapes["/".join(jpath)]
        out[tkey] = (shape[3], shape[2], shape[0], shape[1]) if kind == "conv" else tuple(shape)
    return out


def unused_shapes() -> dict[str, tuple[int, ...]]:
    """Shapes of the torchvision feature convs after relu5_1, which are dropped."""
    out = {}
    for n, shape in UNUSED_CONVS.items():
        out[f"features.{n}.weight"] = shape
        out[f"features.{n}.bias"] = shape[:1]
    return out


def split_unused(state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`(state without the droppable keys, sorted droppable keys)`; mis-shaped ones are kept, to be reported."""
    unused = unused_shapes()
    kept, dropped = {}, []
    for k, v in state.items():
        if k.startswith(UNUSED_PREFIXES) or (k in unused and tuple(np.shape(v)) == unused[k]):
            dropped.append(k)
        else:
            kept[k] = v
    return kept, sorted(dropped)


def torch_to_jax(
    state: dict[str, np.ndarray], jax_shapes: dict[str, tuple[int, ...]], source: str = "state dict"
) -> tuple[dict[str, Any], list[str]]:
    """torchvision VGG19 state dict (numpy arrays) -> `(nested JAX params, dropped keys)`.

    Raises ConversionError naming `source` when the file holds another network (a one-line
    message) or when needed keys are missing, mis-shaped, or joined by unknown keys (listed).
    """
    expected = torch_shapes(jax_shapes)
    kept, dropped = split_unused(state)
    got = {k: tuple(np.shape(v)) for k, v in kept.items()}
    extra_shapes = unused_shapes()
    expected_all = {**expected, **{k: s for k, s in extra_shapes.items() if k in got}}  # present but mis-shaped
    check_state_shapes(expected_all, got, source, "torchvision VGG19", required=expected)
    flat = {}
    for tkey, jpath, kind in key_table():
        arr = np.asarray(kept[tkey], dtype=np.float32)
        flat[jpath] = np.ascontiguousarray(np.transpose(arr, (2, 3, 1, 0)) if kind == "conv" else arr)
    return traverse_util.unflatten_dict(flat), dropped
