"""The sharded training step: 8 fake CPU devices give the same result as 1 device."""

import re
import subprocess
import sys

import pytest

from conftest import REPO

MODES = ["per_batch", "update_per_triplet"]


@pytest.fixture(scope="module")
def checks():
    """Both update modes checked by two processes side by side (one per core): XLA compiles on one."""
    procs = {mode: subprocess.Popen([sys.executable, str(REPO / "tests" / "scripts" / "sharded_step_check.py"), "8", mode],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for mode in MODES}
    out = {}
    for mode, p in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        out[mode] = (p.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_eight_devices_equal_one(checks, mode):
    rc, stdout, stderr = checks[mode]
    assert rc == 0, stdout + stderr
    moved = float(re.search(r"moved (\S+)", stdout).group(1))
    diff = float(re.search(r"max_abs_diff (\S+)", stdout).group(1))
    l1, ln = map(float, re.search(r"loss_1 (\S+) loss_n (\S+)", stdout).groups())
    assert moved > 1e-6, "the step did not change the parameters"
    assert diff <= 1e-5, stdout
    assert abs(l1 - ln) <= 1e-5 * abs(l1), stdout
