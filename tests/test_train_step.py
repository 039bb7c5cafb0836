"""The sharded training step: 8 fake CPU devices give the same result as 1 device."""

import re
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize("mode", ["per_batch", "update_per_triplet"])
@pytest.mark.slow
def test_eight_devices_equal_one(mode):
    r = subprocess.run(
        [sys.executable, str(REPO / "tests" / "scripts" / "sharded_step_check.py"), "8", mode],
        capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    moved = float(re.search(r"moved (\S+)", r.stdout).group(1))
    diff = float(re.search(r"max_abs_diff (\S+)", r.stdout).group(1))
    l1, ln = map(float, re.search(r"loss_1 (\S+) loss_n (\S+)", r.stdout).groups())
    assert moved > 1e-6, "the step did not change the parameters"
    assert diff <= 1e-5, r.stdout
    assert abs(l1 - ln) <= 1e-5 * abs(l1), r.stdout
