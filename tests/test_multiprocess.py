"""A real two-process run (JAX distributed runtime, CPU gloo collectives, localhost coordinator)
ends with the same parameters as the one-process run over the same two-device layout."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, finish, free_port, start
from dmvfn_jax import checkpoint as ckpt

pytestmark = pytest.mark.slow  # every test here takes minutes on a 2-core CPU

SCRIPT = str(REPO / "tests" / "scripts" / "multiprocess_train.py")


def test_two_processes_equal_one(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    port = str(free_port())
    # the one-process run and the two processes side by side: each spends most of its time compiling
    procs = [start([sys.executable, SCRIPT, str(i), "2", port, str(multi), "1"], stderr=subprocess.STDOUT)
             for i in range(2)]
    one = start([sys.executable, SCRIPT, "0", "1", "0", str(single), "2"], stderr=subprocess.STDOUT)
    outs = [finish(p) for p in procs]
    r = finish(one)
    assert r.returncode == 0, r.stdout[-4000:]
    for r in outs:
        assert r.returncode == 0, r.stdout[-4000:]
    assert "process 0/2 done: step 3" in outs[0].stdout and "process 1/2 done: step 3" in outs[1].stdout

    a, _ = ckpt.load_checkpoint(single / "model")
    b, _ = ckpt.load_checkpoint(multi / "model")
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert sorted(p.name for p in (multi / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "3"]
