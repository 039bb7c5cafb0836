"""notebooks/demo.ipynb runs top to bottom, headlessly, and shows what it promises.

The notebook is executed with nbclient in a kernel running this interpreter (a kernelspec written
to a temporary JUPYTER_PATH), against the checkpoint conftest converts from random weights, on
the real Vimeo clip resized to 224x128 to keep the CPU time low.
"""

from __future__ import annotations

import base64
import io
import json
import sys

import cv2
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from conftest import REPO
from dmvfn_jax.predict.predictor import Predictor

NOTEBOOK = REPO / "notebooks" / "demo.ipynb"
STEPS = 3
W, H = 224, 128  # the 448x256 clip at DMVFN_MAX_WIDTH=224


@pytest.fixture
def kernel_name(tmp_path, monkeypatch) -> str:
    """A kernelspec that starts this interpreter (the venv's python), visible only to this test."""
    spec = tmp_path / "jupyter" / "kernels" / "dmvfn-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dmvfn-jax test", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return "dmvfn-test"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 5
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    text = "\n".join(c.source for c in nb.cells)
    for var in ("DMVFN_CHECKPOINT", "DMVFN_FRAMES", "DMVFN_STEPS", "DMVFN_OUTPUT"):
        assert var in text


def outputs_of(nb, mime):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type in ("display_data", "execute_result") and mime in o.data]


def test_notebook_runs_and_shows_the_prediction(tmp_path, monkeypatch, kernel_name, converted_dir, real_data):
    clip_dir = real_data / "vimeo_00001_0002"
    out = tmp_path / "out"
    for k, v in {"DMVFN_CHECKPOINT": converted_dir, "DMVFN_FRAMES": clip_dir, "DMVFN_STEPS": STEPS,
                 "DMVFN_MAX_WIDTH": W, "DMVFN_OUTPUT": out, "DMVFN_START": 0, "DMVFN_ROUTING": "threshold"}.items():
        monkeypatch.setenv(k, str(v))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=600,
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails

    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")
    assert f"{2 + STEPS} frames of {W}x{H}: 2 inputs, {STEPS} ground truth" in text
    assert "routing 'threshold' ran" in text and "of 9 blocks" in text
    assert "PSNR t+1: DMVFN" in text and f"t+{STEPS}: PSNR" in text

    # the side-by-side picture: ten panels in two rows of five, and the same as the file saved
    (png,) = outputs_of(nb, "image/png")
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(png.data["image/png"]))).convert("RGB"))
    saved = np.asarray(Image.open(out / "prediction.png").convert("RGB"))
    np.testing.assert_array_equal(shown, saved)
    assert shown.shape[1] == 5 * W + 4 * 4
    band = shown.shape[0] // 2 - H - 2
    # its prediction panel is the Predictor's prediction on the same (resized) frames
    frames = [np.asarray(Image.open(clip_dir / f"im{i}.png").resize((W, H), Image.BILINEAR)) for i in (1, 2)]
    want = Predictor.from_checkpoint(converted_dir).predict(frames[0], frames[1])
    panel = shown[band:band + H, 2 * (W + 4):2 * (W + 4) + W].astype(np.float32) / 255
    np.testing.assert_allclose(panel, want, atol=1 / 255 + 1e-3)
    np.testing.assert_array_equal(shown[band:band + H, :W], frames[0])

    # the rollout animation: the two inputs, then the predictions beside the truth
    (gif,) = outputs_of(nb, "image/gif")
    with Image.open(io.BytesIO(base64.b64decode(gif.data["image/gif"]))) as im:
        assert im.n_frames == 2 + STEPS and im.size[0] == 2 * W + 4
    cap = cv2.VideoCapture(str(out / "rollout.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 2 + STEPS
    assert (out / "rollout.gif").read_bytes()[:6] == b"GIF89a"


def test_notebook_names_a_missing_checkpoint(tmp_path, monkeypatch, kernel_name, real_data):
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("DMVFN_CHECKPOINT", str(tmp_path / "nowhere"))
    monkeypatch.setenv("DMVFN_FRAMES", str(real_data / "vimeo_00001_0002"))
    monkeypatch.setenv("DMVFN_MAX_WIDTH", "64")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=300,
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    with pytest.raises(CellExecutionError, match=r"no checkpoint at .*nowhere: run `make demo`"):
        client.execute()
