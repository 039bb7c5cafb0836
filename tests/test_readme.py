"""The README's converter, predict and Python examples run as written.

They run in a scratch folder laid out like the repository (`../shared/data/real` beside it),
with `python` replaced by this interpreter.
"""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO


def code_blocks(lang):
    text = (REPO / "README.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def commands(block):
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, real_data):
    root = tmp_path_factory.mktemp("readme")
    (root / "shared").mkdir()
    (root / "shared" / "data").mkdir()
    (root / "shared" / "data" / "real").symlink_to(real_data)
    work = root / "repo"
    work.mkdir()
    (work / "convert_weights.py").symlink_to(REPO / "convert_weights.py")
    return work


@pytest.fixture(scope="module")
def ran_tools(workdir):
    (block,) = [b for b in code_blocks("bash") if "make-random" in b]
    cmds = commands(block)
    assert len(cmds) == 5
    for cmd in cmds:
        assert cmd.startswith("python ")
        r = subprocess.run(cmd.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=workdir,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return workdir


def test_readme_tool_examples_run(ran_tools):
    workdir = ran_tools
    assert Image.open(workdir / "out/next.png").size == (448, 256)
    for k in range(1, 6):
        assert Image.open(workdir / f"out/rollout/pred_{k:02d}.png").size == (448, 256)
    gif = Image.open(workdir / "out/rollout/rollout.gif")
    assert gif.n_frames == 7
    arr = np.load(workdir / "out/rollout.npy")
    assert arr.shape == (3, 256, 448, 3) and arr.dtype == np.float32
    assert 0 <= arr.min() and arr.max() <= 1


def test_readme_python_examples_run(ran_tools, monkeypatch):
    monkeypatch.chdir(ran_tools)
    blocks = code_blocks("python")
    assert len(blocks) == 2
    for block in blocks:
        scope = {}
        exec(compile(block, "README.md", "exec"), scope)
    assert scope["pred"].shape == (2, 64, 64, 3)
    assert len(scope["outs"]) == 9


def test_readme_dataset_commands_run(tmp_path, real_data):
    """Prepare and build as written, on the real Cityscapes clip laid out as leftImg8bit_sequence;
    then the training command with overrides that make it a few seconds' CPU job."""
    (block,) = [b for b in code_blocks("bash") if "dmvfn_jax.data.build" in b]
    prepare, build, train = commands(block)
    city = tmp_path / "leftImg8bit_sequence" / "train" / "aachen"
    city.mkdir(parents=True)
    for f in sorted((real_data / "cityscapes_aachen00").glob("*.jpg")):
        (city / f.name).symlink_to(f)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "train.py").symlink_to(REPO / "train.py")
    quick = (" --config.batch_size=1 --config.num_train_steps=2 --config.warmup_steps=1"
             " --config.data.num_frames=3 --config.data.height=64 --config.data.width=64")
    for cmd in (prepare, build, train + quick):
        r = subprocess.run(cmd.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert len(list((tmp_path / "data/cityscapes/train/000000").glob("*.png"))) == 30
    assert (tmp_path / "data/tfds/dmvfn_cityscapes/1.0.0/dataset_info.json").is_file()
    assert (tmp_path / "runs/cityscapes/model/dmvfn.json").is_file()
