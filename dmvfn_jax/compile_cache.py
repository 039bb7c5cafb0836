"""A persistent XLA compilation cache, so that a second run of a command starts fast.

The entry points (`train.py`, `eval.py`, `python -m dmvfn_jax.predict`) call
`enable_compilation_cache()` before compiling anything. The cache lives in
`$DMVFN_JAX_CACHE` (default `~/.cache/dmvfn_jax/xla`); `DMVFN_JAX_CACHE=off` disables it.
Every compilation is stored by default (`min_compile_seconds=0`), small ones included: building
a fresh DMVFN runs about 90 small initialisation programs, 9 s to compile on a 2-core CPU and
2 s to load from the cache. A caller that enabled the cache on a folder with its own threshold
keeps it when an entry point enables the same folder again without one (a notebook, or the test
suite, which stores only its own compilations of 1 s or more).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("dmvfn_jax")

DEFAULT_DIR = Path.home() / ".cache" / "dmvfn_jax" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None, min_compile_seconds: float | None = None) -> Path | None:
    """Points JAX's persistent compilation cache at `path` (or $DMVFN_JAX_CACHE); returns the folder or None.

    `min_compile_seconds`: store only compilations that took at least this long. None: 0 (store
    all), or, when the cache already points at this folder, the threshold it was given then."""
    import jax

    setting = os.environ.get("DMVFN_JAX_CACHE", "") if path is None else str(path)
    if setting.lower() in ("off", "0", "false", "none"):
        return None
    folder = Path(setting).expanduser() if setting else DEFAULT_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # an unwritable cache only costs speed
        log.warning("compilation cache %s unavailable (%s); continuing without it", folder, e.strerror or e)
        return None
    if min_compile_seconds is None:
        same = jax.config.jax_compilation_cache_dir == str(folder)
        min_compile_seconds = jax.config.jax_persistent_cache_min_compile_time_secs if same else 0.0
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
