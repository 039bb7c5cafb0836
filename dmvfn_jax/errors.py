"""The error every user-facing failure raises, and how the commands report it."""

from __future__ import annotations

import logging
import numbers
import os
import re
import sys
import warnings
from typing import Callable


class InputError(ValueError):
    """Bad input from the user (a file, key, shape or value); the message names it."""


def check_int(name: str, value, low: int | None = None) -> int:
    """`value` as an int, or an `InputError` (a `ValueError`) naming `name`: not an integer (bools
    are not), or below `low`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise InputError(f"{name} must be >= {low}, got {value}")
    return int(value)


class BadClipError(InputError):
    """A clip (or drive) that cannot be prepared; the message names it and the file at fault."""

    def __init__(self, clip: str, file: str | os.PathLike | None, reason: str):
        self.clip, self.file, self.reason = clip, None if file is None else str(file), reason
        super().__init__(f"{clip}: {reason}")


def _through_orbax(tb) -> bool:
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


_TENSORSTORE_STATUS = re.compile(r"^[A-Z_]{4,}: ")


def _is_orphaned_read(unraisable) -> bool:
    """An in-flight read of a failed restore: its callback into orbax's closed event loop, or its
    coroutine finalised with the read's error."""
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    code = getattr(unraisable.object, "cr_code", None)
    return (code is not None and "orbax" in code.co_filename) or _through_orbax(unraisable.exc_traceback)


class _OrbaxAftermath(logging.Filter):
    """On the `asyncio` logger: drops "exception was never retrieved" reports of orbax's reads and
    writes (the other arrays of a restore or save that failed). On the `absl` logger (orbax logs
    there): orbax's error reports keep their first line and lose their traceback, and its warnings
    that a preemption sync point was reached go (the training loop says it once, `train/pod.py`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "asyncio":
            if "exception was never retrieved" not in str(record.msg) or not record.exc_info:
                return True
            exc = record.exc_info[1]
            return not (_through_orbax(record.exc_info[2]) or _TENSORSTORE_STATUS.match(str(exc)))
        if "orbax" in record.pathname and "Reached preemption sync point" in str(record.msg):
            return False
        if "orbax" in record.pathname and record.levelno >= logging.ERROR and record.exc_info:
            record.msg, record.args = (record.getMessage().splitlines() or [""])[0], None
            record.exc_info, record.exc_text = None, None
        return True


def quiet_orbax_noise() -> None:
    """After a failed restore or save, orbax's reads or writes of the other arrays are still in
    flight; each later reports its own error: as `RuntimeError: Event loop is closed` (an
    unraisable exception) when orbax has closed its event loop, as an unraisable exception of the
    finalised coroutine, or as asyncio's "exception was never retrieved"; and orbax logs each
    failed background thread with a traceback. The commands report the failure once, in one
    line: these are dropped (orbax's own log lines are kept, without traceback). Other unraisable
    exceptions and log records get through unchanged. `DMVFN_JAX_TRACEBACKS=1` keeps everything.
    Idempotent; process-wide."""
    if os.environ.get("DMVFN_JAX_TRACEBACKS", "") not in ("", "0"):
        return
    previous = sys.unraisablehook
    if not getattr(previous, "_dmvfn_quiet", False):
        def hook(unraisable):
            if not _is_orphaned_read(unraisable):
                previous(unraisable)

        hook._dmvfn_quiet = True
        sys.unraisablehook = hook
    for name in ("asyncio", "absl"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OrbaxAftermath) for f in logger.filters):
            logger.addFilter(_OrbaxAftermath())


def report_error(prog: str, message: str) -> None:
    """Prints the command's one `prog: error: message` line, which stays its last line: the work
    that failed may leave coroutines never awaited (orbax's writes of the other arrays of a save
    that ran out of disk), and Python warns of each as the process exits; after a reported
    failure those warnings are dropped. `DMVFN_JAX_TRACEBACKS=1` keeps them."""
    if os.environ.get("DMVFN_JAX_TRACEBACKS", "") in ("", "0"):
        warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning)
    print(f"{prog}: error: {message}", file=sys.stderr)


def run_command(prog: str, body: Callable[[], None]) -> int:
    """Runs a command's body; bad input and file-system failures become one `error:` line, exit 1."""
    quiet_orbax_noise()
    try:
        body()
    except (InputError, FileExistsError) as e:
        report_error(prog, str(e))
        return 1
    except OSError as e:  # unwritable output, a folder where a file should go, ...
        report_error(prog, f"{e.filename}: {e.strerror or e}")
        return 1
    return 0
