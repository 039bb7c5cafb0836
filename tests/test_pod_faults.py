"""A run of two processes (`train.py --distributed`, CPU gloo collectives, a localhost coordinator;
the suite's small model) that loses one of them, or whose one process gets a preemption notice:
the survivors stop at once with one line, and the relaunch ends where an uninterrupted run does,
bit for bit (tests/scripts/pod_train.py delivers the faults)."""

import functools
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from orbax.checkpoint import utils as ocp_utils

from conftest import REPO, finish, free_port, model_params, start

pytestmark = pytest.mark.slow  # two-process runs, each mostly compiling

SCRIPT = str(REPO / "tests" / "scripts" / "pod_train.py")
RUN = ("--config.num_train_steps=20", "--config.warmup_steps=2", "--config.checkpoint_every=5",
       "--config.log_every=1", "--peer_timeout=5")
EXIT_PEER_LOST = 75


def launch(workdir, fault="none", at=0) -> list[subprocess.Popen]:
    """Both processes; process 1 gets `fault` as it feeds step `at` of this launch."""
    port = str(free_port())
    return [start([sys.executable, SCRIPT, str(pid), port, str(workdir), fault if pid == 1 else "none", str(at), *RUN])
            for pid in (0, 1)]


def both(procs, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Both processes' results; a run still going after `timeout` seconds (a hang: each of these
    runs takes seconds) is killed and fails the test."""
    try:
        return [finish(p, timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the two processes were still running after {timeout} s: {[p.poll() for p in procs]}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run without faults, started at once and waited for when a test first needs it (before
    the first faulty launch: two processes compiling the same step beside two others would each
    compile it; after, they read it from the compilation cache)."""
    workdir = tmp_path_factory.mktemp("pod") / "straight"
    procs = launch(workdir)

    @functools.cache
    def done():
        for r in both(procs):
            assert r.returncode == 0, r.stderr[-3000:]
        return workdir

    return done


def assert_resumes_exactly(workdir, step: int, reference):
    """The relaunch resumes from checkpoint `step` and ends with the uninterrupted run's parameters."""
    for r in both(launch(workdir)):
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"resumed from {workdir / 'checkpoints' / str(step)} at step {step}" in r.stderr + r.stdout
    for a, b in zip(model_params(reference / "model"), model_params(workdir / "model"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_lost_process_stops_the_other_at_once_with_one_line(tmp_path, uninterrupted):
    workdir = tmp_path / "killed"
    reference = uninterrupted()  # first: its processes compile the step once, for the cache; these read it
    p0, p1 = launch(workdir, "kill", 8)
    p1.wait(timeout=300)
    lost_at = time.monotonic()
    (r0,) = both([p0], timeout=120)
    took = time.monotonic() - lost_at
    assert p1.returncode == -9
    # measured 2.6 s (the failed all-reduce at once, then 2.5 s to see whose beats stopped), where it
    # was 87-106 s (JAX's heartbeat timeout) with pages of traces
    assert r0.returncode == EXIT_PEER_LOST and took < 20, (r0.returncode, took, r0.stderr[-3000:])
    last = r0.stderr.strip().splitlines()[-1]
    m = re.fullmatch(r"train\.py: process 0 of 2 stops: process 1 is lost: a collective failed \(.+\); the newest "
                     r"complete checkpoint is step (\d+) \((.+)\); relaunch every process with the same command to "
                     r"resume \(exit status 75\)", last)
    assert m, last
    assert "Traceback" not in r0.stderr and "Fatal Python error" not in r0.stderr, r0.stderr[-3000:]
    step = int(m.group(1))
    assert 5 <= step <= 8 and m.group(2) == str(workdir / "checkpoints" / str(step))
    # nothing half-written is taken for a checkpoint: every step folder is finalized, the line's is the newest
    steps = [p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert all(ocp_utils.is_checkpoint_finalized(p) for p in steps) and max(int(p.name) for p in steps) == step
    assert not (workdir / "model").exists()
    assert_resumes_exactly(workdir, step, reference)


def test_a_hung_process_is_found_by_the_watchdog(tmp_path):
    """A process that stops answering without failing the others' collectives (SIGSTOP: its sockets
    stay open; a host that hangs) is found by its missing beats in --peer_timeout (5 s) seconds."""
    workdir = tmp_path / "hung"
    p0, p1 = launch(workdir, "stop", 8)
    try:
        (r0,) = both([p0], timeout=120)
    finally:
        p1.kill()
    assert r0.returncode == EXIT_PEER_LOST, (r0.returncode, r0.stderr[-3000:])
    last = r0.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"train\.py: process 0 of 2 stops: process 1 sent no heartbeat for \d+ s \(lost\); the newest "
                        r"complete checkpoint is step \d+ \(.+\); relaunch every process .+", last), last
    assert "Traceback" not in r0.stderr and "Fatal Python error" not in r0.stderr, r0.stderr[-3000:]


def test_a_preemption_notice_to_one_process_stops_both_at_the_same_step(tmp_path, uninterrupted):
    workdir = tmp_path / "preempted"
    r0, r1 = both(launch(workdir, "term", 3), timeout=120)
    saved = []
    for r in (r0, r1):
        assert r.returncode == 0, r.stderr[-3000:]
        m = re.search(r"SIGTERM \(a preemption notice to one of the processes, shared\): saved a checkpoint at step "
                      r"(\d+) and stopped", r.stderr + r.stdout)
        assert m, (r.stderr + r.stdout)[-3000:]
        saved.append(int(m.group(1)))
        assert "Reached preemption sync point" not in r.stderr  # orbax's own warnings of it, dropped
    assert saved[0] == saved[1] < 20, saved  # the same step in both, before the end
    assert not (workdir / "model").exists()
    assert ocp_utils.is_checkpoint_finalized(workdir / "checkpoints" / str(saved[0]))
    assert_resumes_exactly(workdir, saved[0], uninterrupted())


def test_a_process_whose_peers_never_start_stops_with_one_line(tmp_path):
    """Process 0 of 2 alone: after --initialization_timeout seconds it ends with one line and the
    peer-lost status, where JAX's client aborted it with a page of traces."""
    alone = start([sys.executable, SCRIPT, "0", str(free_port()), str(tmp_path / "alone"), "none", "0", *RUN,
                   "--initialization_timeout=3"])
    (r,) = both([alone], timeout=120)
    assert r.returncode == EXIT_PEER_LOST, (r.returncode, r.stderr[-3000:])
    assert r.stderr.strip().splitlines()[-1] == (
        "train.py: process 0 of 2 stops: the 2 processes did not all connect to the coordinator "
        f"127.0.0.1:{r.args[3]} within 3 s (--initialization_timeout); start every process with the same command "
        "(exit status 75)"), r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Fatal Python error" not in r.stderr, r.stderr[-3000:]
