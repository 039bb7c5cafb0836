"""The persistent compilation cache: a second process finds the first one's executables."""

import os
import subprocess
import sys

from dmvfn_jax.compile_cache import enable_compilation_cache

CHILD = """
import sys
from dmvfn_jax.compile_cache import enable_compilation_cache
print(enable_compilation_cache())
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.tanh(x @ x.T) @ x)
for n in (64, 96, 128, 160, 192):
    f(jnp.ones((n, n))).block_until_ready()
"""


def test_a_second_process_reuses_the_cache(tmp_path):
    env = {**os.environ, "DMVFN_JAX_CACHE": str(tmp_path / "xla")}
    env_min = {**env, "PYTHONWARNINGS": "ignore"}
    r1 = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env_min, timeout=300)
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r1.stdout.splitlines()[0] == str(tmp_path / "xla")
    entries = sorted(p.name for p in (tmp_path / "xla").iterdir())
    assert len(entries) >= 5  # the default stores every compilation, these tiny programs included
    r2 = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env_min, timeout=300)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "xla").iterdir()) == entries  # all hits: nothing new written


def test_off_and_unwritable(tmp_path, monkeypatch):
    monkeypatch.setenv("DMVFN_JAX_CACHE", "off")
    assert enable_compilation_cache() is None
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert enable_compilation_cache(blocker / "sub") is None  # a file where the folder should be: no cache, no crash


KEEP = """
import os, sys
import jax
from dmvfn_jax.compile_cache import enable_compilation_cache
enable_compilation_cache(sys.argv[1], min_compile_seconds=1.5)
enable_compilation_cache()  # what an entry point run in this process does ($DMVFN_JAX_CACHE is the same folder)
print(jax.config.jax_persistent_cache_min_compile_time_secs)
enable_compilation_cache(sys.argv[2])  # another folder: the package's default again
print(jax.config.jax_persistent_cache_min_compile_time_secs)
"""


def test_an_entry_point_keeps_the_threshold_its_caller_chose_for_the_folder(tmp_path):
    env = {**os.environ, "DMVFN_JAX_CACHE": str(tmp_path / "a")}
    r = subprocess.run([sys.executable, "-c", KEEP, str(tmp_path / "a"), str(tmp_path / "b")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["1.5", "0.0"]
