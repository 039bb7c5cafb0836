"""The error every user-facing failure raises, and how the commands report it."""

from __future__ import annotations

import sys
from typing import Callable


class InputError(ValueError):
    """Bad input from the user (a file, key, shape or value); the message names it."""


def run_command(prog: str, body: Callable[[], None]) -> int:
    """Runs a command's body; bad input and file-system failures become one `error:` line, exit 1."""
    try:
        body()
    except (InputError, FileExistsError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # unwritable output, a folder where a file should go, ...
        print(f"{prog}: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0
