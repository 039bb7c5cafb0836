"""Reading and writing PyTorch checkpoint files (needs the `torch` extra).

Files are unpickled with `torch.load(weights_only=True)`, which refuses arbitrary objects, so
a checkpoint cannot run code when it is loaded.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from dmvfn_jax.files import atomic_file
from dmvfn_jax.convert.dmvfn_torch import ConversionError


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConversionError(
            "reading or writing PyTorch checkpoints needs torch: pip install 'dmvfn-jax[torch]' "
            "(or pip install torch==2.13.0 for the CPU build)"
        ) from e
    return torch


def _explain_load_failure(e: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"refused to unpickle: the file references {found.group(1)}, which could run code on load; "
            "only plain state dicts of tensors are accepted"
        )
    if "Unsupported operand" in text or "invalid load key" in text:
        return "not a PyTorch checkpoint (not a zip archive or a pickle of tensors)"
    if "zip archive" in text or "central directory" in text:
        return "not a readable PyTorch checkpoint (truncated or corrupt zip archive)"
    first = text.splitlines()[0][:160] if text else ""
    return f"not a readable PyTorch checkpoint ({type(e).__name__}{': ' + first if first else ''})"


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A PyTorch state dict file as {key: float numpy array}; clear one-line errors otherwise."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zips, foreign pickles, plain text, refused globals ...
        raise ConversionError(f"{path}: {_explain_load_failure(e)}") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ConversionError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; not a state dict")
        if not v.is_floating_point():
            raise ConversionError(f"{path}: tensor {k} has dtype {v.dtype}, expected floating point")
        out[k] = v.detach().to(torch.float32).numpy().copy() if v.dtype != torch.float32 else v.detach().numpy().copy()
    return out


def save_state_dict(path: str | os.PathLike, state: dict[str, np.ndarray], overwrite: bool = False) -> Path:
    """Writes {key: array} with `torch.save`, atomically (temporary file, then rename)."""
    torch = _torch()
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    with atomic_file(path, overwrite=overwrite) as tmp:
        torch.save(tensors, tmp)
    return Path(path)
