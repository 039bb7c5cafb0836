"""The optional parts of the install (`pip install 'dmvfn-jax[EXTRA]'`) and the one-line error of a
command whose extra is missing. Standard library only.

The core (`pip install dmvfn-jax`) is inference: jax, flax, orbax-checkpoint, numpy, pillow.
"""

from __future__ import annotations

import importlib.util

from dmvfn_jax.errors import InputError

# extra -> the modules it provides that the package imports (as pyproject.toml lists them)
EXTRAS: dict[str, tuple[str, ...]] = {
    "data": ("tensorflow_datasets", "array_record", "grain"),
    "train": ("tensorflow_datasets", "array_record", "grain", "optax", "ml_collections", "absl", "tensorboardX"),
    "video": ("cv2",),
    "torch": ("torch",),
    "tpu": ("libtpu",),
    "onnx": ("onnx", "onnxruntime"),
}


class MissingExtra(InputError):
    """A command needs an optional part of the install that is not there; the message names it."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here."""
    return [m for m in EXTRAS[extra] if not _installed(m)]


def require(extra: str, purpose: str) -> None:
    """Raises `MissingExtra` (one line: what needs it and the pip command) unless `extra` is installed."""
    absent = missing(extra)
    if absent:
        raise MissingExtra(f"{purpose} needs the {extra!r} extra: pip install 'dmvfn-jax[{extra}]' "
                           f"(not installed: {', '.join(absent)})")
