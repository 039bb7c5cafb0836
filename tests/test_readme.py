"""The documentation's commands and examples run as written: README.md and docs/*.md.

Each block is found by its content on whichever page holds it (`code_blocks` reads them all):
the converter, predict and Python examples, the export commands and their examples, the dataset
and own-videos commands. They run in a scratch folder laid out like the repository
(`../shared/data/real` beside it), with `python` replaced by this interpreter.
"""

import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, SMALL_RECIPE_STEP, finish, start
from small_model import SMALL_MODEL_FLAGS  # tests/scripts

# Appended here to the documentation's training commands: two steps of the small model at the recipe
# tests' shapes (conftest.SMALL_RECIPE_STEP), a few seconds' CPU job compiled once for all of them.
QUICK_TRAIN = " " + shlex.join(SMALL_RECIPE_STEP + SMALL_MODEL_FLAGS) + " --config.num_train_steps=2 --config.warmup_steps=1"


def doc_pages() -> dict[str, str]:
    """README.md and every docs/*.md page, by path relative to the repository."""
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return {str(p.relative_to(REPO)): p.read_text() for p in paths}


def doc_text() -> str:
    """All the documentation pages, one after another."""
    return "\n".join(doc_pages().values())


def code_blocks(lang):
    """The ```lang blocks of every documentation page."""
    return [b for text in doc_pages().values() for b in re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)]


def page_of(block):
    """The page that holds `block`, for tracebacks."""
    return next(name for name, text in doc_pages().items() if block in text)


def test_doc_links_point_to_files():
    """Every relative link of README.md and docs/*.md points to an existing file (and, with a
    #fragment into a page, to one of its headings)."""
    def slugs(text):
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}

    bad, seen = [], 0
    for name, text in doc_pages().items():
        page = REPO / name
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            seen += 1
            path, _, anchor = target.partition("#")
            f = (page.parent / path).resolve() if path else page
            if not f.exists():
                bad.append(f"{name}: {target} (no such file)")
            elif anchor and f.suffix == ".md" and anchor not in slugs(f.read_text()):
                bad.append(f"{name}: {target} (no such heading)")
    assert seen > 0 and not bad, "\n".join(bad)


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_readme_python_examples_run(ran_tools, monkeypatch):
    monkeypatch.chdir(ran_tools)
    # Deploy: test_readme_deploy_example_runs and test_readme_onnx_example_runs
    blocks = [b for b in code_blocks("python") if "jax.export" not in b and "onnxruntime" not in b]
    assert len(blocks) == 2
    for block in blocks:
        scope = {}
        exec(compile(block, page_of(block), "exec"), scope)
    assert scope["pred"].shape == (2, 64, 64, 3)
    assert len(scope["outs"]) == 9


def run_export_command(tmp_path, real_data, checkpoint, fmt: str):
    """Deploy: the documented export command for `fmt` (docs/deploy.md), run in a folder laid out
    as the page assumes (`checkpoint` at checkpoints/dmvfn_random, ../shared/data/real); returns the folder.
    The tests give it the suite's small model: the commands are the point (the exports of the
    converted nine are test_export's)."""
    import os

    work = tmp_path / "repo"
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints" / "dmvfn_random").symlink_to(checkpoint)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "real").symlink_to(real_data)
    (block,) = [b for b in code_blocks("bash") if "dmvfn_jax.deploy.export" in b and f"--format {fmt}" in b]
    (cmd,) = commands(block)
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's dmvfn_jax, whatever the venv's editable install says
    r = subprocess.run(cmd.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=work, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    assert "BGR channel order" in r.stdout
    return work


def test_readme_deploy_example_runs(tmp_path, real_data, small_checkpoint, monkeypatch):
    """Deploy: the export command, then the plain-jax example, in a folder laid out as the page
    assumes; the prediction equals Predictor's, and a wrong size is refused as the page quotes."""
    from dmvfn_jax import Predictor

    work = run_export_command(tmp_path, real_data, small_checkpoint, "stablehlo")
    (example,) = [b for b in code_blocks("python") if "jax.export" in b]
    monkeypatch.chdir(work)
    scope = {}
    exec(compile(example, page_of(example), "exec"), scope)
    assert scope["nxt"].shape == (1, 256, 448, 3) and scope["meta"]["channel_order"] == "BGR"
    frames = [Image.open(real_data / f"official_sample_img_{i}.png").convert("RGB") for i in (0, 1)]
    want = Predictor.from_checkpoint(small_checkpoint).predict(*frames)
    np.testing.assert_allclose(scope["nxt"][0, ..., ::-1], want, rtol=0, atol=1e-5)
    quoted = re.search(r"e\.g\. `(Shape mismatch.*?)`", " ".join(doc_text().split())).group(1)
    with pytest.raises(ValueError) as e:
        scope["predict"].call(scope["prev"][:, :240], scope["cur"][:, :240])
    assert str(e.value) == quoted


def test_readme_onnx_example_runs(tmp_path, real_data, small_checkpoint, monkeypatch):
    """Deploy, ONNX: the export command, then the onnxruntime example, laid out as the page
    assumes; the prediction is within 1e-4 of Predictor's, and a wrong size is refused as quoted."""
    import jax

    from dmvfn_jax import Predictor

    work = run_export_command(tmp_path, real_data, small_checkpoint, "onnx")
    (example,) = [b for b in code_blocks("python") if "onnxruntime" in b]
    monkeypatch.chdir(work)
    scope = {}
    exec(compile(example, page_of(example), "exec"), scope)
    assert scope["nxt"].shape == (1, 256, 448, 3) and scope["meta"]["channel_order"] == "BGR"
    frames = [Image.open(real_data / f"official_sample_img_{i}.png").convert("RGB") for i in (0, 1)]
    with jax.default_matmul_precision("highest"):
        want = Predictor.from_checkpoint(small_checkpoint).predict(*frames)
    np.testing.assert_allclose(scope["nxt"][0, ..., ::-1], want, rtol=0, atol=1e-4)
    quoted = re.search(r"e\.g\. `(Got invalid dimensions.*?)`", " ".join(doc_text().split())).group(1)
    with pytest.raises(Exception) as e:
        scope["session"].run(None, {"prev": scope["prev"][:, :240], "cur": scope["cur"][:, :240]})
    assert quoted in " ".join(str(e.value).split())


@pytest.mark.slow
def test_readme_dataset_commands_run(tmp_path, real_data):
    """Datasets (docs/datasets.md): prepare and build as written, on the real Cityscapes clip laid out as leftImg8bit_sequence;
    then the training command with overrides that make it a few seconds' CPU job: the recipe
    tests' small model and shapes (conftest.cityscapes_train_cmd), whose step is compiled once."""
    (block,) = [b for b in code_blocks("bash") if "dmvfn_jax.data.prepare cityscapes" in b]
    prepare, build, train = commands(block)
    city = tmp_path / "leftImg8bit_sequence" / "train" / "aachen"
    city.mkdir(parents=True)
    for f in sorted((real_data / "cityscapes_aachen00").glob("*.jpg")):
        (city / f.name).symlink_to(f)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "train.py").symlink_to(REPO / "train.py")
    for cmd in (prepare, build, train + QUICK_TRAIN):
        r = subprocess.run(cmd.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert len(list((tmp_path / "data/cityscapes/train/000000").glob("*.png"))) == 30
    assert (tmp_path / "data/tfds/dmvfn_cityscapes/1.1.0/dataset_info.json").is_file()
    assert (tmp_path / "runs/cityscapes/model/dmvfn.json").is_file()


@pytest.mark.slow
def test_readme_own_videos_commands_run(tmp_path, real_data, small_checkpoint):
    """"Your own videos" (docs/own-videos.md) as written: videos of mixed sizes made from the real frames, the suite's
    small model with random weights in the place of the converted official ones (the commands are
    the point: converted weights are test_convert's and test_eval's), and overrides on the
    fine-tuning command that make it a few seconds' CPU job of that model."""
    import json

    cv2 = pytest.importorskip("cv2")  # in the test extra
    from dmvfn_jax.image_io import load_image, save_png

    def frames(folder, pattern, first, count):
        return [load_image(f) for f in sorted((real_data / folder).glob(pattern))[first:first + count]]

    def write_video(path, fs):
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = fs[0].shape[:2]
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
        for f in fs:
            out.write(np.ascontiguousarray(f[..., ::-1]))
        out.release()

    (block,) = [b for b in code_blocks("bash") if "configs/finetune.py" in b and "data.build" in b]
    cmds = commands(block)
    assert len(cmds) == 6 and cmds[1].startswith("python train.py") and "build clip_folder" in cmds[4]
    kitti, vimeo = frames("kitti_0023", "*.png", 0, 7), frames("vimeo_00001_0002", "im*.png", 0, 7)
    bedroom, city = frames("sam2_bedroom", "*.jpg", 0, 20), frames("cityscapes_aachen00", "*.jpg", 0, 10)
    write_video(tmp_path / "my_videos/train/kitti.mp4", kitti)  # 1242x375
    write_video(tmp_path / "my_videos/train/bedroom.mp4", bedroom[:10])  # 960x540
    write_video(tmp_path / "my_videos/test/street.mp4", city)  # 2048x1024
    write_video(tmp_path / "my_videos/test/bedroom_end.mp4", bedroom[10:])
    for name, fs in (("kitti", kitti), ("vimeo", vimeo), ("bedroom", bedroom[:10])):  # 7, 7 and 10 frames
        for t, f in enumerate(fs):
            save_png(tmp_path / "my_frames/test" / name / f"{t:04d}.png", f)
    shutil.copytree(small_checkpoint, tmp_path / "checkpoints/dmvfn_city")  # stands in for the official weights
    for name in ("configs", "train.py", "eval.py"):
        (tmp_path / name).symlink_to(REPO / name)

    def launch(cmd):
        run = cmd + (QUICK_TRAIN if cmd.startswith("python train.py") else "")
        return start(run.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=tmp_path)

    def done(proc):
        r = finish(proc)
        assert r.returncode == 0, f"{r.args}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        return r

    # in the page's order where a command needs the one before, side by side where it does not
    # (two at a time, one per core): build, then train, then evaluate and predict; the frame
    # folders' build beside the first two, their evaluation after it
    building, building_frames = launch(cmds[0]), launch(cmds[4])
    build = done(building)
    done(launch(cmds[1]))  # train
    done(building_frames)
    evaluating, predicting = launch(cmds[2]), launch(cmds[3])
    evaluate = done(evaluating)
    done(predicting)
    done(launch(cmds[5]))  # evaluate the frame folders
    assert "test 2, train 2 clips at 448x256" in build.stdout
    log = (tmp_path / "runs/mine/train.log").read_text()
    assert "trained on BGR frames); frames reach the network as BGR" in log
    res = json.loads((tmp_path / "runs/mine/eval/results.json").read_text())
    assert res["clips"] == 2 and res["frame_size"] == [448, 256] and res["checkpoint_channel_order"] == "BGR"
    assert "copy last frame" in evaluate.stdout
    cap = cv2.VideoCapture(str(tmp_path / "out/street.mp4"))
    n, size = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                                                       int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    assert n == 7 and size == (2048, 1024)  # the two inputs and five predictions at the video's own size
    # frame folders of three sizes: kept as they are, resized when evaluated, the short clips skipped
    meta = json.loads(next((tmp_path / "data/frames/dmvfn_clip_folder").glob("*/metadata.json")).read_text())
    assert sorted((h, w) for _, _, h, w in meta["clips"]["test"]) == [(256, 448), (375, 1242), (540, 960)]
    res = json.loads((tmp_path / "runs/mine/eval_frames/results.json").read_text())
    assert res["clips"] == 1 and res["frame_size"] == [448, 256] == res["resized_to"]
    assert [c["id"] for c in res["skipped"]["too_short"]] == ["test/kitti", "test/vimeo"]
