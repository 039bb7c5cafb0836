"""Faults a careful user meets, each injected and run through the commands as a user runs them:
an unreadable newest checkpoint, a second launch on a busy workdir, a changed config on resume,
a full disk, and the stderr of every command's error path (one line, no traceback).

The training runs are the demo config cut to 6 steps with checkpoints at steps 2, 4 and 6, of the
suite's small model (tests/scripts/small_model.py: the faults are the loop's, not the model's)
except on the full disk, whose checkpoints must be large (`WIDE`); they share the session's
compilation cache (conftest.py) so that only the first of each compiles.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, demo_train_cmd, finish, start
from dmvfn_jax import checkpoint as ckpt

BASE = ["--config.num_train_steps=6", "--config.warmup_steps=2", "--config.checkpoint_every=2",
        "--config.log_every=1", "--config.image_every=0", "--config.eval.num_clips=0"]


@pytest.fixture(scope="module")
def env():
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # DMVFN_JAX_CACHE: the session's cache (conftest.py)


# Two blocks of the official width at scales 4 and 1 (1.8 M parameters): checkpoints of about
# 20 MiB, large enough for the sizes of a file system to tell one from two, from a step that
# compiles in about the small model's time.
WIDE = ("--config.model.widths=(160,160,)", "--config.model.scales=(4,1,)")


def train_cmd(workdir, *extra, small: bool = True):
    return demo_train_cmd(workdir, *BASE, *extra, small=small)


def train(workdir, env, *extra, small: bool = True):
    return subprocess.run(train_cmd(workdir, *extra, small=small), capture_output=True, text=True, timeout=900,
                          env=env)


def ok(r):
    """The command succeeded without a traceback; `r.log` is its console output (log lines on
    stdout, absl's on stderr)."""
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    r.log = r.stdout + r.stderr
    return r


def one_error_line(r, prog: str = "train.py") -> str:
    """The command failed with exit status 1 and ended with its one `error:` line, no traceback."""
    assert r.returncode == 1, (r.returncode, r.stderr[-4000:])
    assert "Traceback" not in r.stderr and "Event loop is closed" not in r.stderr, r.stderr[-4000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error: "), r.stderr[-4000:]
    return last


def steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def truncate_largest(folder: Path) -> Path:
    """Cuts the largest file of a checkpoint in half, as a failing disk or a copy cut short does."""
    f = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)
    return f


def params_of(model_dir: Path):
    params, _ = ckpt.load_checkpoint(model_dir)
    import jax

    return jax.tree.leaves(params)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, env) -> Path:
    workdir = tmp_path_factory.mktemp("trained") / "run"
    ok(train(workdir, env))
    assert steps(workdir) == [2, 4, 6]
    return workdir


@pytest.mark.slow
def test_unreadable_newest_checkpoint_falls_back_to_the_next_older(tmp_path, trained, env):
    run = shutil.copytree(trained, tmp_path / "run")
    cut = truncate_largest(run / "checkpoints" / "6")
    cut_size, cut_rel = cut.stat().st_size, cut.relative_to(run / "checkpoints" / "6")
    # strict: refused, nothing moved
    last = one_error_line(train(run, env, "--config.strict_resume=True"))
    assert f"checkpoint {run / 'checkpoints' / '6'} (step 6) cannot be restored (" in last
    assert "strict_resume refuses to fall back" in last and steps(run) == [2, 4, 6]
    # default: one warning names it, it is moved aside (kept), the run resumes from step 4 and
    # trains steps 5 and 6 again to the same parameters, bit for bit
    r = ok(train(run, env))
    warning = [line for line in r.log.splitlines() if "cannot be restored" in line]
    assert len(warning) == 1 and f"{run / 'checkpoints' / '6'} (step 6)" in warning[0]
    assert "trying the next older one" in warning[0]
    assert f"moved the unreadable checkpoint of step 6 to {run / 'unreadable_checkpoints' / '6'}" in r.log
    assert f"resumed from {run / 'checkpoints' / '4'} at step 4" in r.log
    assert (run / "unreadable_checkpoints" / "6" / cut_rel).stat().st_size == cut_size  # kept as it was
    assert steps(run) == [2, 4, 6]
    for got, want in zip(params_of(run / "model"), params_of(trained / "model")):
        np.testing.assert_array_equal(got, want)
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 4


def test_no_readable_checkpoint_is_one_error_listing_them_all(tmp_path, trained, env):
    run = shutil.copytree(trained, tmp_path / "run")
    for s in (2, 4, 6):
        truncate_largest(run / "checkpoints" / str(s))
    last = one_error_line(train(run, env))
    assert f"no checkpoint under {run / 'checkpoints'} can be restored: step 6 (" in last
    assert "step 4 (" in last and "step 2 (" in last and "Nothing was moved or deleted" in last
    assert steps(run) == [2, 4, 6] and not (run / "unreadable_checkpoints").exists()


@pytest.mark.slow
def test_a_second_launch_on_a_busy_workdir_is_refused(tmp_path, env):
    run = tmp_path / "run"
    first = subprocess.Popen(train_cmd(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        lock = run / "run.lock"
        deadline = time.time() + 120
        while not (lock.is_file() and lock.read_text().strip()):
            assert first.poll() is None and time.time() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGSTOP)  # holds the lock, does nothing: a run in progress
        before = sorted(p.name for p in run.iterdir())
        last = one_error_line(train(run, env))
        assert f"workdir {run} is in use by another run: pid {first.pid} on host {socket.gethostname()}, " \
               "started 20" in last and "use another --workdir" in last
        assert sorted(p.name for p in run.iterdir()) == before
        # the holder dies (kill -9): its lock is recognised as stale and taken over, with a note
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        r = ok(train(run, env))
        assert f"took over the workdir lock of pid {first.pid} on host {socket.gethostname()}" in r.log
        assert "which is no longer running" in r.log
        assert (run / "model" / "dmvfn.json").is_file()
        assert lock.read_text() == ""  # released on a clean exit
    finally:
        if first.poll() is None:
            first.kill()


@pytest.mark.slow
def test_a_changed_config_is_refused_or_accepted_on_purpose(tmp_path, trained, env):
    run = shutil.copytree(trained, tmp_path / "run")
    saved = json.loads(next((run / "checkpoints" / "6").rglob("metadata")).read_text())
    assert saved["config"]["batch_size"] == 4 and saved["config"]["num_train_steps"] == 6
    last = one_error_line(train(run, env, "--config.batch_size=8", "--config.peak_lr=0.002",
                                "--config.num_train_steps=8", "--config.log_every=3"))
    assert "the config differs from the one step 6 was trained with" in last
    assert "batch_size: 4 -> 8" in last and "num_train_steps: 6 -> 8" in last and "peak_lr: 0.001 -> 0.002" in last
    assert "log_every" not in last and "--config.accept_config_changes=True" in last
    assert steps(run) == [2, 4, 6]
    # harmless: a note; a resumed run does not read init_checkpoint (here a folder that does not exist)
    r = ok(train(run, env, "--config.log_every=3", "--config.checkpoint_every=3",
                 f"--config.init_checkpoint={tmp_path / 'moved_away'}"))
    assert "config changes since step 6 that do not change the run: checkpoint_every: 2 -> 3; init_checkpoint: " \
           f'"" -> "{tmp_path / "moved_away"}"; log_every: 1 -> 3' in r.log
    assert "(init_checkpoint is not read)" in r.log
    r = ok(train(run, env, "--config.num_train_steps=8", "--config.accept_config_changes=True"))
    assert "resuming step 6 with a changed config (accept_config_changes): num_train_steps: 6 -> 8" in r.log
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 8 and summary["accepted_config_changes"] == ["num_train_steps: 6 -> 8"]


def _mount_tmpfs(path: Path, size: str, remount: bool = False) -> None:
    opts = f"remount,size={size}" if remount else f"size={size}"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0 and not remount:  # not root (CI machines of this project are): say so, plainly
        pytest.skip(f"a full disk is simulated with a small tmpfs, which this machine does not let us mount: "
                    f"{r.stderr.strip()}")
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_a_full_disk_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, env):
    """A 30 MiB file system: the step-2 checkpoint of two blocks of the official width (`WIDE`:
    about 20 MiB of parameters and both Adam moments) fits, the step-4 one does not."""
    disk = tmp_path / "small"
    disk.mkdir()
    _mount_tmpfs(disk, "30m")
    try:
        run = disk / "run"
        last = one_error_line(train(run, env, *WIDE, small=False))
        assert f"no space left on the device of {run} while saving the checkpoint of step 4: a checkpoint " \
               "needs about 20 MiB" in last
        assert "the newest complete checkpoint is step 2, and running again resumes from it" in last
        assert steps(run) == [2]
        _mount_tmpfs(disk, "400m", remount=True)  # space freed
        r = ok(train(run, env, *WIDE, small=False))
        assert f"resumed from {run / 'checkpoints' / '2'} at step 2" in r.log
        assert steps(run) == [2, 4, 6] and (run / "model" / "dmvfn.json").is_file()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
    # too small for even the first checkpoint: nothing to resume from, and the line says so
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    _mount_tmpfs(tiny, "10m")
    try:
        last = one_error_line(train(tiny / "run", env, *WIDE, small=False))
        assert "while saving the checkpoint of step 2" in last
        assert "no checkpoint was completed, so running again starts from step 0" in last
    finally:
        subprocess.run(["umount", str(tiny)], capture_output=True)


_UNAWAITED = """
import sys
from dmvfn_jax.errors import InputError, run_command

async def write_fragment():
    pass

def body():
    sys.modules[__name__].pending = write_fragment()  # never awaited; finalised as the process exits
    raise InputError("the disk is full")

sys.exit(run_command("cmd", body))
"""


def test_an_error_line_stays_last_when_failed_work_left_coroutines_unawaited(env):
    """A save that runs out of disk can leave orbax's write coroutines never awaited (seen in CI);
    Python warns of them at exit, after the error line, unless the report drops those warnings."""
    r = subprocess.run([sys.executable, "-c", _UNAWAITED], capture_output=True, text=True, timeout=120,
                       env={**env, "DMVFN_JAX_TRACEBACKS": ""})
    assert one_error_line(r, "cmd") == "cmd: error: the disk is full"
    loud = subprocess.run([sys.executable, "-c", _UNAWAITED], capture_output=True, text=True, timeout=120,
                          env={**env, "DMVFN_JAX_TRACEBACKS": "1"})
    assert "coroutine 'write_fragment' was never awaited" in loud.stderr, loud.stderr  # kept when asked for


def test_every_command_ends_an_error_with_one_line(tmp_path, converted_dir, real_data, env):
    """A model directory with a truncated array file, given to predict, eval and the converter,
    and a missing manual directory given to build: one `error:` line each, no traceback (orbax's
    reads still in flight used to print an `Event loop is closed` traceback each)."""
    bad = shutil.copytree(converted_dir, tmp_path / "bad")
    truncate_largest(bad / "params")
    frames = [str(real_data / f"official_sample_img_{i}.png") for i in (0, 1)]
    commands = {
        "predict": [sys.executable, "-m", "dmvfn_jax.predict", "--checkpoint", str(bad), "--frames", *frames,
                    "--output", str(tmp_path / "next.png")],
        "eval.py": [sys.executable, str(REPO / "eval.py"), "--checkpoint", str(bad), "--dataset", "vimeo",
                    "--data_dir", str(tmp_path)],
        "convert_weights.py": [sys.executable, str(REPO / "convert_weights.py"), "dmvfn", "--to-torch", "--input",
                               str(bad), "--output", str(tmp_path / "back.pkl")],
        "python -m dmvfn_jax.data.build": [sys.executable, "-m", "dmvfn_jax.data.build", "clip_folder",
                                           "--manual_dir", str(tmp_path / "missing"), "--data_dir", str(tmp_path)],
    }
    procs = {prog: start(cmd, env=env) for prog, cmd in commands.items()}  # all at once: each spends its time importing
    for prog, proc in procs.items():
        r = finish(proc, timeout=300)
        last = one_error_line(r, prog)
        assert (f"{bad / 'params'}: cannot restore parameters" in last) or prog.startswith("python -m"), last
        noise = [line for line in r.stderr.splitlines()
                 if line.strip() and not re.match(r"[IWEF]\d{4} ", line) and line != last]
        assert not noise, r.stderr  # nothing but the error line and log lines
    assert not (tmp_path / "next.png").exists() and not (tmp_path / "back.pkl").exists()
