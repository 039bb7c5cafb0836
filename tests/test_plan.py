"""`python -m dmvfn_jax.planning.plan`: the training step compiled for a TPU slice on this CPU machine (libtpu's
compile-only devices, installed by `make test` / `make plan-deps`), and its errors."""

import json
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest

from conftest import REPO, default_xla_env, finish, start
from dmvfn_jax.planning import plan
from small_model import SMALL_MODEL_FLAGS  # tests/scripts

PLAN = [sys.executable, "-m", "dmvfn_jax.planning.plan"]


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """A small step that fits on v5e:2x2 and an oversized one, planned side by side (one per core).
    The small step is of the suite's small model (tests/scripts/small_model.py): the plan's
    machinery is the point, and the two blocks compile for the TPU faster than the nine
    (BENCHMARKS.md, "The small model of the tests"; the nine's plans are `bench/tpu_plan.py`'s).
    16 clips per chip: the step of 8 fits the TPU's on-chip memory and reports no HBM temporaries
    since Adam's moments are packed (4 did since the warp's Pallas kernel, 2 before it); 16 report
    56 MB and compile for the TPU in about 40 s here."""
    out = tmp_path_factory.mktemp("plan")
    runs = {
        "small": PLAN + ["--config", "configs/demo.py", "--topology", "v5e:2x2", "--config.batch_size=64",
                         *SMALL_MODEL_FLAGS, "--json", str(out / "small.json")],
        # the small model, 256 clips of 30 frames at 256x256 per chip: about 28 GiB of temporaries
        # (the nine at 64 clips need 26 GiB, and take four times as long to compile to that answer)
        "oversized": PLAN + ["--config", "configs/cityscapes.py", "--topology", "v5e-4", "--per-chip-batch", "256",
                             *SMALL_MODEL_FLAGS],
    }
    procs = {k: start(cmd, cwd=REPO, env=default_xla_env()) for k, cmd in runs.items()}
    return {k: finish(p) for k, p in procs.items()}, out


@pytest.mark.slow
def test_a_small_step_fits_and_only_all_reduces(plans):
    r, out = plans[0]["small"], plans[1]
    rc, stdout, stderr = r.returncode, r.stdout, r.stderr
    assert rc == 0, stdout[-3000:] + stderr[-3000:]
    p = json.loads((out / "small.json").read_text())
    assert p["topology"]["chips"] == 4 and p["topology"]["device_kind"] == "TPU v5 lite"
    assert p["step"]["per_chip_batch"] == 16 and p["step"]["warp"] == "pallas"  # the warp chosen for a TPU
    assert p["step"]["layout"] == "cells"  # and the blocks' layout (`grid.choose_layout`)
    assert p["step"]["model"] == {"widths": [16, 16], "scales": [2, 1]}  # the blocks planned are the config's
    m = p["memory_per_chip"]
    assert m["fits"] and 0 < m["total"] <= m["hbm"] and m["parameters"] > 0 and m["temporaries"] > 0
    assert set(p["collectives"]) == {"all-reduce"} and p["collectives"]["all-reduce"]["ops"] == 1
    # the packed all-reduce carries every float32 gradient (the parameters' bytes) and a few metrics
    assert m["parameters"] <= p["collectives"]["all-reduce"]["bytes"] <= m["parameters"] + 1024
    r = p["roofline"]
    assert p["per_chip"]["flops"] > 0 and r["step_lower_bound_s"] == max(r["compute_s"], r["memory_s"]) > 0
    import configs.demo

    assert p["schedule"]["steps"] == configs.demo.get_config().num_train_steps
    assert p["schedule"]["hours_lower_bound"] > 0
    assert p["input"]["processes_per_host"] >= 1 and p["input"]["per_process_clips_per_s"] == plan.INPUT_RATE
    assert "fits" in stdout and "collectives per step: all-reduce 1 op(s)" in stdout
    assert "2 blocks (widths [16, 16], scales [2, 1]), bernoulli routing" in stdout
    assert "one bfloat16 pass" in stdout and "JAX_DEFAULT_MATMUL_PRECISION=highest" in stdout
    assert stderr.strip() == "", stderr[-2000:]  # libtpu's start-up warnings are kept quiet
    # where the HBM goes: the step's HBM buffers by the named scope that made them, tiled >= written
    h = p["hbm_report"]
    assert 0 < h["written_bytes"] < h["tiled_bytes"] and h["estimated_cycles"] > 0
    rows = h["by_source"]
    assert sum(r["tiled_bytes"] for r in rows) == h["tiled_bytes"]
    assert [r["tiled_bytes"] for r in rows] == sorted((r["tiled_bytes"] for r in rows), reverse=True)
    sources = {r["source"] for r in rows}
    for scope in ("advance/warp/", "merge/warp/", "block0/", "block1/", "grad block1/", "laplacian_loss/", "routing/",
                  "optimizer/"):
        assert any(s.startswith(scope) for s in sources), (scope, sorted(sources))
    assert "where the HBM goes" in stdout and "warp: pallas, layout: cells" in stdout
    # the warps are the kernel's, not XLA's per-scalar gathers
    assert any(s.endswith("warp/warp_corners/pallas_call") for s in sources), sorted(sources)
    assert not any("warp/" in s and s.endswith("/gather") for s in sources), sorted(sources)


@pytest.mark.slow
def test_the_tpu_step_moves_at_most_3x_the_cpus_bytes(plans):
    """The guard of the issue "make the TPU move data, not padding": the small step's bytes per chip
    (the plan's compiler estimate, the Pallas kernels' shares declared) against the CPU compiler's
    for the same step (16 clips at 64x64; the CPU's in pixels). At 8 clips, with XLA's per-scalar
    gathers for the warp (DMVFN_WARP=map_coordinates) it was 7.3x; with the warp's kernel 3.75x
    (2026-12-06), 3.87x (2026-12-07, `grid.choose_layout` made to answer pixels); with the blocks
    over cells (`dmvfn_jax.models.grid`) 2.06x (2026-12-07). At 16 clips, with Adam's moments
    packed, 2.04x; with the parameters packed too, 2.00x. A gradient of the packed parameters left to
    autodiff (a padded vector per parameter, 58 here) would inflate the CPU's count: asserted away."""
    import jax

    from configs import demo
    from dmvfn_jax import parallel
    from dmvfn_jax.planning import plan
    from small_model import SMALL_MODEL

    r, out = plans[0]["small"], plans[1]
    assert r.returncode == 0, r.stderr[-3000:]
    p = json.loads((out / "small.json").read_text())
    config = demo.get_config()
    config.batch_size = p["step"]["per_chip_batch"]
    for key, value in SMALL_MODEL.items():
        config.model[key] = value
    compiled = plan.compile_train_step(config, parallel.data_mesh(jax.devices()[:1])).compiled
    cpu = plan.compiled_cost(compiled)
    ratio = p["per_chip"]["hbm_bytes"] / float(cpu["bytes accessed"])
    assert ratio <= 3, f"the TPU step moves {ratio:.2f}x the CPU's bytes"
    # and the CPU's count is not inflated: the gradient of the packed parameters is one vector made
    # once, not a zero vector per parameter with its gradient padded in (`parallel.unpack`)
    size = p["memory_per_chip"]["parameters"] // 4
    pads = re.findall(rf"= f32\[{size}\]\S* pad\(", compiled.as_text())
    assert not pads, f"{len(pads)} pads of the {size} parameters' vector in the CPU's step"


def test_an_oversized_step_fails_with_one_line(plans):
    r = plans[0]["oversized"]
    rc, stdout, stderr = r.returncode, r.stdout, r.stderr
    assert rc == 1, stdout[-2000:] + stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    assert re.match(r"plan: error: the step does not fit on v5e-4 \(256 clips of 30 frames at 256x256 per chip\): "
                    r"the TPU compiler says: .*HBM", lines[0]), lines[0]


def _plan(*args, env=None):
    return subprocess.run(PLAN + list(args), cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**default_xla_env(), **(env or {})})


def test_bad_input_is_one_line_before_any_compile():
    r = _plan("--config", "configs/demo.py", "--topology", "v9x:2x2")
    assert r.returncode == 1 and "unknown TPU topology 'v9x:2x2'; accepted: libtpu topologies: v4:2x2x1" in r.stderr
    r = _plan("--config", "configs/demo.py", "--topology", "v5e-8", "--config.batch_size=12")
    assert r.returncode == 1
    assert r.stderr.strip() == "plan: error: global batch 12 is not divisible by the 8 chips of v5e-8 (v5e:2x4); " \
                               "set --config.batch_size or --per-chip-batch"
    r = _plan("--config", "configs/nope.py", "--topology", "v5e-8")
    assert r.returncode == 1 and r.stderr.strip() == "plan: error: configs/nope.py: no such config file"


def test_missing_libtpu_names_the_extra(monkeypatch, tmp_path):
    from dmvfn_jax.planning import tpu
    from dmvfn_jax.errors import InputError

    monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)
    monkeypatch.setattr(tpu, "LIBTPU_TARGET", tmp_path)
    monkeypatch.setitem(sys.modules, "libtpu", None)  # `import libtpu` fails
    with pytest.raises(InputError, match=r"libtpu is not installed.*make plan-deps.*pip install -e '\.\[tpu\]'"):
        tpu.compile_only_devices(tpu.parse_topology("v5e:2x2"))


@pytest.mark.parametrize("name, libtpu, chips", [
    ("v4-8", "v4:2x2x1", 4), ("v5e-8", "v5e:2x4", 8), ("v5litepod-16", "v5e:4x4", 16), ("v5e-256", "v5e:16x16", 256),
    ("v5p-128", "v5p:4x4x4", 64), ("v6e-256", "v6e:16x16", 256), ("v5e:2x2", "v5e:2x2", 4), ("v4:2x2x2", "v4:2x2x2", 8),
])
def test_topology_names(name, libtpu, chips):
    from dmvfn_jax.planning import tpu

    t = tpu.parse_topology(name)
    assert (t.libtpu_name, t.chips) == (libtpu, chips)
    assert tpu.parse_topology(t.cloud_name) == t


def test_libtpu_is_pinned_to_jax_and_invisible_to_ordinary_runs():
    from dmvfn_jax.planning import tpu

    wanted = [r for r in metadata.requires("jax") if r.startswith("libtpu") and 'extra == "tpu"' in r]
    assert wanted and wanted[0].split(";")[0].replace(" ", "") == tpu.LIBTPU_REQUIREMENT
    assert f'LIBTPU := {tpu.LIBTPU_REQUIREMENT}' in (REPO / "Makefile").read_text()
    assert f'tpu = ["{tpu.LIBTPU_REQUIREMENT}"]' in (REPO / "pyproject.toml").read_text()
    assert tpu.find_libtpu() is not None  # make test installed it
    # ... where a plain JAX process does not look: it starts on the CPU without a word from libtpu
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
    r = subprocess.run([sys.executable, "-c", "import jax; print(jax.devices()[0].platform)"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "cpu" and r.stderr.strip() == "", r.stderr


def test_the_default_input_rate_is_the_benchmarks_measurement():
    """plan.INPUT_RATE is what `bench/input_pipeline.py --out bench/input_pipeline_cpu.json` measured
    (the package does not read bench/: an installed one has no such folder)."""
    res = json.loads((REPO / "bench" / "input_pipeline_cpu.json").read_text())
    assert plan.INPUT_RATE == round(res["best_per_process"]["clips_per_s_per_process"], 3)
