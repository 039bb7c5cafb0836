"""The sharded training step: 8 fake CPU devices give the same result as 1 device."""

import re
import sys

import pytest

from conftest import REPO, finish, start

MODES = ["per_batch", "update_per_triplet"]


@pytest.fixture(scope="module")
def checks():
    """Both update modes checked by two processes side by side (one per core): XLA compiles on one."""
    procs = {mode: start([sys.executable, str(REPO / "tests" / "scripts" / "sharded_step_check.py"), "8", mode])
             for mode in MODES}
    return {mode: finish(p) for mode, p in procs.items()}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_eight_devices_equal_one(checks, mode):
    r = checks[mode]
    stdout = r.stdout
    assert r.returncode == 0, stdout + r.stderr
    moved = float(re.search(r"moved (\S+)", stdout).group(1))
    diff = float(re.search(r"max_abs_diff (\S+)", stdout).group(1))
    l1, ln = map(float, re.search(r"loss_1 (\S+) loss_n (\S+)", stdout).groups())
    assert moved > 1e-6, "the step did not change the parameters"
    assert diff <= 1e-5, stdout
    assert abs(l1 - ln) <= 1e-5 * abs(l1), stdout
