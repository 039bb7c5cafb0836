"""One training run per workdir: a lock file held for the life of the run.

The lock is `WORKDIR/run.lock`, held with `flock` (released by the kernel when its process ends,
however it ends) and holding the holder's host, pid and start time. A second launch on the same
workdir finds it held and stops with one line naming the holder. A lock whose file still names
a holder but which nobody holds was left by a run that died (`kill -9`, a lost node): it is taken
over, with a note. The file is never deleted, only emptied on a clean exit, so two launches
cannot each lock a different file of the same name.

On a multi-host run, process 0 holds it for all hosts (they share the workdir). On network file
systems `flock` is as good as the file system's locking (NFSv4 locks are cluster-wide).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from dmvfn_jax.errors import InputError

LOCK_NAME = "run.lock"


class WorkdirInUse(InputError):
    """Another live run holds the workdir."""


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}"


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    if not data.strip():
        return None
    try:
        holder = json.loads(data)
    except ValueError:
        return {"pid": "?", "host": "?"}
    return holder if isinstance(holder, dict) else {"pid": "?", "host": "?"}


class WorkdirLock:
    """`with WorkdirLock(workdir) as lock:` holds the workdir; `lock.took_over` describes a dead
    holder whose lock was taken over (None if the lock was free)."""

    def __init__(self, workdir):
        self.path = Path(workdir) / LOCK_NAME
        self.took_over: str | None = None
        self._fd: int | None = None

    def acquire(self) -> "WorkdirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = _describe(holder) if holder else "a process that is starting"
            raise WorkdirInUse(
                f"workdir {self.path.parent} is in use by another run: {who} ({self.path}). Wait for it to "
                "end, stop it, or use another --workdir"
            ) from None
        except OSError as e:
            os.close(fd)
            raise InputError(f"{self.path}: cannot lock the workdir ({e.strerror or e})") from None
        previous = _read(fd)
        if previous:
            self.took_over = _describe(previous)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # a clean exit: no holder to take over from
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
