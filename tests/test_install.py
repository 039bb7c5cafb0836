"""The install: the core alone predicts, the console commands exist, a missing extra is one line.

The lean-install test makes a fresh virtual environment holding only the core's dependency
closure (`pip install dmvfn-jax` without extras, resolved from the installed packages' own
metadata and linked from this environment, so nothing is downloaded), and runs a prediction on
the sample frames there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO
from dmvfn_jax import extras

HEAVY = ("tensorflow", "tensorflow_datasets", "torch", "cv2", "tensorboardX", "grain", "ml_collections")


def core_requirements() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def core_closure() -> dict[str, metadata.Distribution]:
    """The distributions `pip install dmvfn-jax` (no extras) installs, dmvfn-jax itself excluded,
    as this environment has them."""
    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, frozenset]] = set()
    todo = [(r, ("",)) for r in core_requirements()]
    while todo:
        text, extras_on = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras_on):
            continue
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(req.name)
        found[key[0]] = dist
        todo += [(r, ("", *req.extras)) for r in dist.requires or []]
    return found


def lean_environment(where: Path) -> Path:
    """A venv with the core closure linked in and the repository on its path; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    site = next((where / "lib").glob("python3*/site-packages"))
    for dist in core_closure().values():
        for f in dist.files or []:
            if f.parts[0] == ".." or "__pycache__" in f.parts:
                continue
            dst = site / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(Path(dist.locate_file(f)).resolve())
    (site / "dmvfn_jax_repo.pth").write_text(str(REPO) + "\n")
    return where / "bin" / "python"


def test_core_is_what_inference_needs():
    names = {canonicalize_name(Requirement(r).name) for r in core_requirements()}
    # ml_dtypes is jax's own dependency, named to keep it below 0.7 (pyproject.toml: import time)
    assert names == {"jax", "flax", "orbax-checkpoint", "numpy", "pillow", "ml-dtypes"}
    closure = set(core_closure())
    assert not closure & {"tensorflow", "tensorflow-cpu", "tensorflow-datasets", "torch", "opencv-python-headless",
                          "tensorboardx", "grain", "array-record", "ml-collections"}, closure


@pytest.mark.slow
def test_the_core_alone_predicts_on_the_sample_frames(tmp_path, converted_dir, real_data):
    python = lean_environment(tmp_path / "lean")
    r = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr  # the environment is really lean
    frames = [real_data / "official_sample_img_0.png", real_data / "official_sample_img_1.png"]
    code = textwrap.dedent(f"""
        import sys
        from dmvfn_jax.predict.command import main
        rc = main(["--checkpoint", {str(converted_dir)!r}, "--frames", {str(frames[0])!r}, {str(frames[1])!r},
                   "--output", {str(tmp_path / "lean.png")!r}])
        print("heavy:", sorted({set(HEAVY)!r} & {{m.split(".")[0] for m in sys.modules}}))
        sys.exit(rc)
    """)
    # no compile cache there: the tests' cache turns on JAX's file lock, which needs `filelock`, not in the core
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "JAX_COMPILATION_CACHE_MAX_SIZE")}
    env["DMVFN_JAX_CACHE"] = "off"
    r = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "heavy: []" in r.stdout, r.stdout
    # the same prediction as this (full) environment's
    from dmvfn_jax.predict import command as predict

    assert predict.main(["--checkpoint", str(converted_dir), "--frames", *map(str, frames),
                         "--output", str(tmp_path / "full.png")]) == 0
    from dmvfn_jax.image_io import load_image

    np.testing.assert_array_equal(load_image(tmp_path / "lean.png"), load_image(tmp_path / "full.png"))


def test_console_commands_are_installed():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {f"dmvfn-{c}" for c in ("predict", "train", "eval", "convert", "build", "prepare",
                                                      "export", "plan")}
    installed = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    for name, target in scripts.items():
        assert installed.get(name) == target, f"{name}: reinstall (pip install -e .) to get the console commands"
    bindir = Path(sys.executable).parent
    for name, flag in (("dmvfn-predict", "--checkpoint"), ("dmvfn-train", "--workdir"), ("dmvfn-build", "--manual_dir")):
        r = subprocess.run([str(bindir / name), "--help"], capture_output=True, text=True, timeout=300)
        # argparse's --help exits 0, absl's (dmvfn-train) 1; both list the command's own flags
        assert r.returncode in (0, 1) and flag in r.stdout + r.stderr, (name, r.returncode, r.stdout[-2000:], r.stderr[-2000:])
        if name != "dmvfn-train":  # absl names the script itself in its usage line
            assert r.stdout.startswith(f"usage: {name} "), r.stdout[:200]


def test_console_commands_name_themselves_in_their_errors(tmp_path):
    """`dmvfn-eval: error: ...`, not the script's `eval.py: error: ...`."""
    bindir = Path(sys.executable).parent
    runs = {
        "dmvfn-predict": ["--checkpoint", str(tmp_path), "--frames", "a.png", "b.png", "--output", "c.png", "--steps", "0"],
        "dmvfn-eval": ["--checkpoint", str(tmp_path / "missing"), "--dataset", "vimeo", "--data_dir", str(tmp_path)],
        "dmvfn-convert": ["dmvfn", "--input", str(tmp_path / "missing.pkl"), "--output", str(tmp_path / "out")],
    }
    for name, args in runs.items():
        r = subprocess.run([str(bindir / name), *args], capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith(f"{name}: error: "), (name, r.stderr[-2000:])


BLOCK = """
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, _Absent())
"""


@pytest.mark.parametrize("command, blocked, extra, purpose", [
    ("build", "tensorflow_datasets", "data", "building TFDS datasets"),
    ("train", "tensorboardX", "train", "training"),
    ("evaluate", "grain", "data", "evaluation (it reads TFDS builds)"),
    ("convert", "torch", "torch", "converting PyTorch checkpoints"),
])
def test_a_missing_extra_is_one_line_naming_it(command, blocked, extra, purpose):
    code = BLOCK.format(blocked={blocked}) + f"from dmvfn_jax import cli\nsys.exit(cli.{command}('dmvfn-x'))\n"
    r = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        f"dmvfn-x: error: {purpose} needs the {extra!r} extra: pip install 'dmvfn-jax[{extra}]' "
        f"(not installed: {blocked})"], r.stderr
    assert set(extras.EXTRAS[extra]) >= {blocked}


def test_the_module_form_of_a_command_names_its_extra_too():
    code = BLOCK.format(blocked={"tensorflow_datasets"}) + (
        "from dmvfn_jax.data import build\n"
        "sys.exit(build.main(['--dataset', 'dmvfn_clip_folder', '--manual_dir', '.', '--data_dir', '.']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert re.fullmatch(r"python -m dmvfn_jax\.data\.build: error: building TFDS datasets needs the 'data' extra: "
                        r"pip install 'dmvfn-jax\[data\]' \(not installed: tensorflow_datasets\)\n", r.stderr), r.stderr


def test_the_training_log_writer_leaves_torch_unloaded(tmp_path):
    """tensorboardX imports torch whenever it is installed (2 s per `train.py` process); the writer
    keeps it out, writes its events, and torch still imports afterwards."""
    code = textwrap.dedent(f"""
        import sys
        from dmvfn_jax.train.report import MetricWriter
        w = MetricWriter({str(tmp_path)!r})
        w.scalars(1, {{"loss": 0.5}})
        w.close()
        print("torch loaded:", "torch" in sys.modules)
        import torch
        print("torch then:", torch.zeros(2).shape)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch loaded: False" in r.stdout and "torch then: torch.Size([2])" in r.stdout, r.stdout
    assert list(tmp_path.glob("events.out.tfevents.*")), list(tmp_path.iterdir())
