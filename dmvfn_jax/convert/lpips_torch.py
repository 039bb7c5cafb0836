"""Key mapping from torchvision AlexNet + the `lpips` package's linear layers to `LPIPS`.

torchvision's `alexnet-owt-7be5be79.pth` holds `features.{0,3,6,8,10}.{weight,bias}` and
`classifier.{1,4,6}.{weight,bias}`; the `lpips` package ships `lpips/weights/v0.1/alex.pth` with
`lin{0..4}.model.1.weight` (1, C, 1, 1) (the `.1` follows a dropout layer; `.0` is accepted too):

    features.N.weight (O, I, k, k)   -> convN/kernel (k, k, I, O)
    features.N.bias   (O,)           -> convN/bias
    linK.model.1.weight (1, C, 1, 1) -> linK/kernel (1, 1, C, 1)

`classifier.*` is dropped. Anything else, and any missing or mis-shaped key, is a
ConversionError naming the file and listing the keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import traverse_util

from dmvfn_jax.convert.dmvfn_torch import check_state_shapes
from dmvfn_jax.evaluation import lpips
from dmvfn_jax.evaluation.lpips import ALEXNET_CONVS, CHANNELS

ARCHITECTURE = lpips.ARCHITECTURE


def alexnet_shapes() -> dict[str, tuple[int, ...]]:
    out = {}
    for n, cin, cout, k, _, _ in ALEXNET_CONVS:
        out[f"features.{n}.weight"] = (cout, cin, k, k)
        out[f"features.{n}.bias"] = (cout,)
    return out


def linear_shapes() -> dict[str, tuple[int, ...]]:
    return {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(CHANNELS)}


def _normalise_linear_keys(state: dict[str, Any]) -> dict[str, Any]:
    """`linK.model.0.weight` (lpips built without dropout) -> `linK.model.1.weight`."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if len(parts) == 4 and parts[0].startswith("lin") and parts[1:] == ["model", "0", "weight"]:
            k = f"{parts[0]}.model.1.weight"
        out[k] = v
    return out


def torch_to_jax(alexnet: dict[str, np.ndarray], linear: dict[str, np.ndarray],
                 alexnet_source: str = "AlexNet state dict", linear_source: str = "LPIPS linear state dict"):
    """-> (nested params of `LPIPS`, dropped AlexNet keys)."""
    dropped = sorted(k for k in alexnet if k.startswith("classifier."))
    kept = {k: v for k, v in alexnet.items() if not k.startswith("classifier.")}
    check_state_shapes(alexnet_shapes(), {k: tuple(np.shape(v)) for k, v in kept.items()},
                       alexnet_source, "torchvision AlexNet")
    linear = _normalise_linear_keys(linear)
    check_state_shapes(linear_shapes(), {k: tuple(np.shape(v)) for k, v in linear.items()},
                       linear_source, "the LPIPS v0.1 AlexNet linear layers")
    flat = {}
    for n, *_ in ALEXNET_CONVS:
        w = np.asarray(kept[f"features.{n}.weight"], np.float32)
        flat[(f"conv{n}", "kernel")] = np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))
        flat[(f"conv{n}", "bias")] = np.asarray(kept[f"features.{n}.bias"], np.float32)
    for k in range(len(CHANNELS)):
        w = np.asarray(linear[f"lin{k}.model.1.weight"], np.float32)
        flat[(f"lin{k}", "kernel")] = np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))
    return traverse_util.unflatten_dict(flat), dropped
