"""What stops a training run cleanly: a preemption notice (SIGTERM) and, in a run of several
processes (a TPU pod, hosts of GPUs), a lost process.

- `Preemption`: in one process, SIGTERM sets a flag the loop reads after each step (it saves and
  stops). In several, the notice to any one process is shared through JAX's coordination service
  (its preemption sync manager, which `jax.distributed.initialize` starts and which catches
  SIGTERM itself): every process learns at the same step (`reached_preemption_sync_point`), so
  all save that step and stop together, where a flag of one process's own would leave it waiting
  at the checkpoint's barrier for the others, and them at the next step's all-reduce for it.
- `Watchdog`: every process of a multi-process run counts up a key in the coordination service's
  store once a second and watches the others'. A process whose count stops for `timeout` seconds
  is lost (killed, its host gone); so is the coordination service itself when its store stops
  answering (process 0 hosts it). The survivors then print one line (which process, the newest
  complete checkpoint, how to resume) and exit with `EXIT_PEER_LOST` at once: their collectives
  would otherwise wait for the lost peer until JAX's own heartbeat timeout aborts them with pages
  of traces. A failed collective that raises (gloo's "connection reset by peer") ends the same
  way (`PeerLost`, raised by the loop).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import jax

log = logging.getLogger("dmvfn_jax")

EXIT_PEER_LOST = 75  # EX_TEMPFAIL: relaunching every process resumes the run
_ALIVE = "dmvfn_jax/alive/"
_DONE = "done"


class PeerLost(RuntimeError):
    """A collective of a multi-process run failed: another process is gone."""


def newest_complete_checkpoint(workdir: Path) -> int | None:
    """The newest step under WORKDIR/checkpoints that orbax finalized (a save cut short is not)."""
    from orbax.checkpoint import utils  # noqa: PLC0415

    folder = Path(workdir) / "checkpoints"
    steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit() and utils.is_checkpoint_finalized(p)] \
        if folder.is_dir() else []
    return max(steps, default=None)


def lost_line(what: str, workdir: Path) -> str:
    """The one line a survivor prints: what was lost, where the run resumes, what to do."""
    step = newest_complete_checkpoint(workdir)
    where = (f"the newest complete checkpoint is step {step} ({Path(workdir) / 'checkpoints' / str(step)})"
             if step is not None else "no checkpoint was completed yet (a relaunch starts over)")
    return (f"process {jax.process_index()} of {jax.process_count()} stops: {what}; {where}; "
            f"relaunch every process with the same command to resume (exit status {EXIT_PEER_LOST})")


def exit_now(prog: str, line: str) -> None:
    """Prints `prog: line` and ends the process at once, with `EXIT_PEER_LOST`: no atexit handlers,
    which would wait for the lost process at JAX's shutdown barrier and orbax's."""
    logging.shutdown()
    print(f"{prog}: {line}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_PEER_LOST)


def initialize(prog: str, coordinator: str | None, num_processes: int | None, process_id: int | None,
               timeout: int, **kwargs) -> None:
    """`jax.distributed.initialize`, ended with one line and `EXIT_PEER_LOST` when the other
    processes have not all connected in `timeout` seconds. JAX's own client aborts the process
    there (a C++ fatal error, "Fatal Python error: Aborted" and a page of traces, about twice
    `timeout` later); a timer thread reports first."""
    import threading  # noqa: PLC0415

    def late():
        exit_now(prog, f"process {process_id} of {num_processes} stops: the {num_processes} processes did not all "
                       f"connect to the coordinator {coordinator} within {timeout} s (--initialization_timeout); "
                       f"start every process with the same command (exit status {EXIT_PEER_LOST})")

    timer = threading.Timer(timeout, late)
    timer.daemon = True
    timer.start()
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout, **kwargs)
    finally:
        timer.cancel()


class Preemption:
    """`stop_at(step)` after each step: True when the run should save this step and stop."""

    def __init__(self):
        self.requested = False
        self.shared = jax.process_count() > 1
        self._old = None

    def __enter__(self):
        if self.shared:  # the coordination service's manager handles SIGTERM (a handler here would replace its own)
            return self
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some notebook kernels): no handler
            self._old = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def stop_at(self, step: int) -> bool:
        if self.shared:
            from jax.experimental import multihost_utils  # noqa: PLC0415

            self.requested = multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class Watchdog:
    """Watches the other processes of a multi-process run through the coordination service's
    key-value store (see the module's docstring); `on_lost(what)` is called once, from its thread."""

    def __init__(self, timeout: float, on_lost, interval: float = 1.0):
        # The coordination service's client that jax.distributed.initialize made: JAX 0.10 gives no public
        # handle to it; jax.experimental.multihost_utils and orbax's multihost module read it here too.
        from jax._src import distributed  # noqa: PLC0415

        self.client = distributed.global_state.client
        if self.client is None:
            raise RuntimeError("Watchdog needs jax.distributed.initialize() first")
        self.timeout, self.on_lost, self.interval = timeout, on_lost, min(interval, timeout / 4)
        self.me, self.count = jax.process_index(), jax.process_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dmvfn-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def done(self) -> None:
        """This process finished its part cleanly: the others stop expecting its beats."""
        self._stop.set()
        self._thread.join()
        try:
            self.client.key_value_set(f"{_ALIVE}{self.me}", _DONE, allow_overwrite=True)
        except Exception as e:  # noqa: BLE001 - the others are gone already: nothing to tell
            log.debug("watchdog: %s", e)

    def silent_peers(self, wait: float = 2.5) -> list[int] | None:
        """The other processes whose beats do not move over `wait` seconds (not finished ones);
        None if the coordination service does not answer (then process 0's host is gone)."""
        try:
            before = dict(self.client.key_value_dir_get(_ALIVE))
            time.sleep(wait)
            after = dict(self.client.key_value_dir_get(_ALIVE))
        except Exception:  # noqa: BLE001
            return None
        return [p for p in range(self.count) if p != self.me and after.get(f"{_ALIVE}{p}") != _DONE
                and after.get(f"{_ALIVE}{p}") == before.get(f"{_ALIVE}{p}")]

    def _watch(self) -> None:
        beats = 0
        seen: dict[int, tuple[str, float]] = {}  # peer -> (its last value, when it changed here)
        started = time.monotonic()
        while not self._stop.wait(self.interval):
            beats += 1
            try:
                self.client.key_value_set(f"{_ALIVE}{self.me}", str(beats), allow_overwrite=True)
                values = dict(self.client.key_value_dir_get(_ALIVE))
            except Exception as e:  # noqa: BLE001 - the store is process 0's
                if self._stop.is_set():
                    return
                self.on_lost(f"the coordination service (process 0) stopped answering ({str(e).splitlines()[0]})")
                return
            now = time.monotonic()
            for peer in range(self.count):
                if peer == self.me:
                    continue
                value = values.get(f"{_ALIVE}{peer}")
                if value == _DONE:
                    continue
                last = seen.get(peer)
                if last is None or last[0] != value:
                    seen[peer] = (value, now if last is not None or value is not None else started)
                elif now - last[1] > self.timeout:
                    self.on_lost(f"process {peer} sent no heartbeat for {now - last[1]:.0f} s (lost)")
                    return
