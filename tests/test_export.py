"""`python -m dmvfn_jax.deploy.export`: the StableHLO and ONNX artifacts against `Predictor`, alone,
and bad inputs.

Each routing is exported once per format (in-process `main`), at 56x72 (not a multiple of 16,
so the padding is inside the artifact), and that one artifact is called at batch 1 and 3. The
frames are chosen so that threshold routing gives the samples different gates. The ONNX
artifacts run in onnxruntime (the `onnx` extra, part of the `test` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from dmvfn_jax import Predictor
from dmvfn_jax.deploy import export
from dmvfn_jax.deploy.onnx_graph import node_counts

REPO = Path(__file__).resolve().parents[1]
H, W = 56, 72
SIZE = f"{W}x{H}"  # WIDTHxHEIGHT, as eval.py --size


def run_export(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = export.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def predictor(converted_dir):
    return Predictor.from_checkpoint(converted_dir)


@pytest.fixture(scope="module")
def frames():
    """RGB float32 (3, H, W, 3) pairs: noise, dark noise, a smooth pattern that moves."""
    rng = np.random.default_rng(0)
    prev, cur = rng.random((2, 3, H, W, 3), dtype=np.float32)
    prev[1] *= 0.1
    cur[1] *= 0.1
    xx = np.mgrid[0:H, 0:W][1] / 20.0
    smooth = np.stack([np.sin(xx + c) * 0.5 + 0.5 for c in (0, 1, 2)], -1).astype(np.float32)
    prev[2], cur[2] = 0.3 + 0.4 * smooth, 0.3 + 0.4 * np.roll(smooth, 2, axis=1)
    return prev, cur


def export_every_routing(converted_dir, folder: Path, fmt: str) -> dict:
    """{routing: (file, printed stdout)}: the command run once per routing, in format `fmt`."""
    made = {}
    for routing in export.ROUTINGS:
        path = folder / f"next_{routing}.{fmt}"
        rc, out, err = run_export("--checkpoint", converted_dir, "--format", fmt, "--size", SIZE,
                                  "--routing", routing, "--output", path)
        assert rc == 0, err
        made[routing] = (path, out)
    return made


@pytest.fixture(scope="module")
def artifacts(converted_dir, tmp_path_factory):
    """{routing: (artifact path, printed stdout)}, exported by the command."""
    return export_every_routing(converted_dir, tmp_path_factory.mktemp("export"), "stablehlo")


def load(path: Path) -> jax.export.Exported:
    return jax.export.deserialize(path.read_bytes())


@pytest.mark.parametrize("routing", export.ROUTINGS)
def test_one_artifact_matches_predictor_at_batch_1_and_3(artifacts, predictor, frames, routing):
    exp = load(artifacts[routing][0])
    assert [str(a.shape) for a in exp.in_avals] == [f"(b, {H}, {W}, 3)"] * 2  # the batch is symbolic
    call = jax.jit(exp.call)
    prev, cur = frames
    for b in (1, 3):
        want = predictor.predict(prev[:b], cur[:b], routing=routing)  # RGB in, RGB out
        got = call(prev[:b, ..., ::-1], cur[:b, ..., ::-1])  # the converted checkpoint is BGR
        assert got.shape == (b, H, W, 3) and got.dtype == np.float32
        np.testing.assert_allclose(np.asarray(got)[..., ::-1], want, rtol=0, atol=1e-5)


def test_threshold_routing_is_not_all_blocks_here(predictor, frames):
    """The parity above is only worth something if threshold routing switches blocks off, and
    differently per sample (the artifact runs the batch in one pass, Predictor one by one)."""
    prev, cur = frames
    gates = np.asarray(predictor.predict_full(prev, cur, routing="threshold").gates)
    assert 0 < gates.sum() < gates.size
    assert len({tuple(g) for g in gates}) > 1, gates
    v = np.asarray(predictor.model.routing_probs(prev[..., ::-1], cur[..., ::-1]))
    assert np.abs(v - 0.5).min() > 1e-4  # no gate on the edge of its threshold
    assert not np.allclose(predictor.predict(prev, cur, routing="threshold"),
                           predictor.predict(prev, cur, routing="all"), atol=1e-3)


def test_metadata_sidecar_and_printed_convention(artifacts, converted_dir):
    path, out = artifacts["threshold"]
    meta = json.loads(export.metadata_path(path).read_text())
    assert meta["artifact_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["channel_order"] == "BGR" == meta["checkpoint_metadata"]["channel_order"]
    for frame in (*meta["inputs"], meta["output"]):
        assert frame["shape"] == ["b", H, W, 3]
        assert (frame["dtype"], frame["layout"], frame["range"], frame["channel_order"]) == ("float32", "NHWC", [0, 1], "BGR")
    assert [f["name"] for f in meta["inputs"]] == ["prev", "cur"]
    assert (meta["routing"], meta["conv_form"], meta["batch_mode"], meta["matmul_precision"]) == (
        "threshold", "plain", "batched", "highest")
    assert meta["platforms"] == ["cpu", "cuda", "tpu"] == list(load(path).platforms)
    # the portable warp, not the TPU's kernel, even though the artifact carries TPU code
    assert meta["warp"] == "map_coordinates" and "tpu_custom_call" not in load(path).mlir_module()
    assert meta["block_layout"] == "pixels"
    assert meta["checkpoint"] == str(converted_dir)
    assert f"float32 (b, {H}, {W}, 3) NHWC" in out and "values in [0, 1], BGR channel order" in out
    assert f"wrote {path}" in out and f"wrote {export.metadata_path(path)}" in out


def test_weights_are_inside_the_artifact(artifacts, predictor):
    exp = load(artifacts["all"][0])
    assert len(exp.in_avals) == 2  # prev and cur only: no parameter is an argument
    n_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(predictor.model, nnx.Param)))
    assert artifacts["all"][0].stat().st_size > n_bytes


def test_runs_without_dmvfn_jax(artifacts, predictor, frames, tmp_path):
    """A fresh interpreter outside the repository, with dmvfn_jax made unimportable (the venv's
    editable install would otherwise find it), only jax and numpy: deserialize, call, save."""
    prev, cur = frames
    np.save(tmp_path / "frames.npy", np.stack([prev, cur])[..., ::-1])  # BGR, as the artifact takes
    child = textwrap.dedent("""
        import sys
        sys.modules["dmvfn_jax"] = None  # any import of dmvfn_jax now raises ImportError
        import jax
        import numpy as np
        try:
            import dmvfn_jax
        except ImportError:
            pass
        else:
            raise SystemExit("dmvfn_jax was importable")
        artifact, frames, out = sys.argv[1:4]
        with open(artifact, "rb") as f:
            exp = jax.export.deserialize(f.read())
        prev, cur = np.load(frames)
        np.save(out, np.asarray(exp.call(prev, cur)))
        ours = sorted(m for m in sys.modules if m.split(".")[0] in ("dmvfn_jax", "flax", "orbax", "torch"))
        print("modules:", ours, sys.modules["dmvfn_jax"])
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-I", "-c", child, str(artifacts["threshold"][0]),
                           str(tmp_path / "frames.npy"), str(tmp_path / "out.npy")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "modules: ['dmvfn_jax'] None" in proc.stdout  # only the blocking placeholder
    got = np.load(tmp_path / "out.npy")[..., ::-1]
    np.testing.assert_allclose(got, predictor.predict(prev, cur, routing="threshold"), rtol=0, atol=1e-5)


def test_artifact_refuses_wrong_inputs(artifacts, frames):
    exp = load(artifacts["threshold"][0])
    prev, cur = frames
    cases = [
        ((prev[:, :48], cur[:, :48]), rf"Shape mismatch for args\[0\]\.shape\[1\].*expected \(b, {H}, {W}, 3\)"),
        ((prev[..., :1], cur[..., :1]), r"Shape mismatch for args\[0\]\.shape\[3\]"),
        ((prev[0], cur[0]), r"Rank mismatch for args\[0\]"),
        ((prev[:2], cur), r"inconsistency between dimension size args\[1\]\.shape\[0\] \(= 3\)"),
        (((prev * 255).astype(np.uint8), cur), r"Dtype mismatch for args\[0\]: expected float32 and called with uint8"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            exp.call(*args)


def one_error_line(rc: int, err: str, *names: str) -> str:
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export: error: "), err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def test_bad_command_lines(converted_dir, artifacts, tmp_path):
    out = tmp_path / "x.stablehlo"
    missing = tmp_path / "no_such_checkpoint"
    one_error_line(*run_export("--checkpoint", missing, "--size", SIZE, "--output", out)[::2], str(missing))
    for size in ("72", "0x56", "72x56x3", "axb"):
        line = one_error_line(*run_export("--checkpoint", converted_dir, "--size", size, "--output", out)[::2], repr(size))
        assert "--size" in line
    line = one_error_line(*run_export("--checkpoint", converted_dir, "--format", "onnx", "--size", SIZE,
                                      "--output", out, "--platforms", "cpu", "--precision", "default")[::2])
    assert "--platforms and --precision: StableHLO options, not used by --format onnx" in line
    one_error_line(*run_export("--checkpoint", converted_dir, "--size", SIZE, "--output", out,
                               "--platforms", "cpu,gpu")[::2], "'cpu,gpu'")
    existing = artifacts["all"][0]
    one_error_line(*run_export("--checkpoint", converted_dir, "--size", SIZE, "--output", existing)[::2],
                   str(existing), "--overwrite")
    assert not out.exists() and not export.metadata_path(out).exists()
    with pytest.raises(SystemExit) as e:
        run_export("--checkpoint", converted_dir, "--size", SIZE, "--output", out, "--routing", "sample")
    assert e.value.code == 2


def test_rgb_checkpoint_records_rgb(converted_dir, tmp_path):
    """The channel order is the checkpoint's: an RGB-trained checkpoint gives an RGB artifact."""
    rgb = tmp_path / "rgb_ckpt"
    shutil.copytree(converted_dir, rgb)
    meta = json.loads((rgb / "dmvfn.json").read_text())
    (rgb / "dmvfn.json").write_text(json.dumps({**meta, "channel_order": "RGB"}))
    path = tmp_path / "rgb.stablehlo"
    rc, out, err = run_export("--checkpoint", rgb, "--size", "32x16", "--routing", "all", "--output", path,
                              "--platforms", "cpu")
    assert rc == 0, err
    side = json.loads(export.metadata_path(path).read_text())
    assert side["channel_order"] == "RGB" and side["inputs"][0]["channel_order"] == "RGB"
    assert side["platforms"] == ["cpu"] and side["inputs"][0]["shape"] == ["b", 16, 32, 3]
    assert "RGB channel order" in out


def test_runs_as_a_module(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "dmvfn_jax.deploy.export", "--checkpoint", "no_such_checkpoint",
                           "--format", "onnx", "--size", SIZE, "--output", "y"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    one_error_line(proc.returncode, proc.stderr, "no_such_checkpoint")


# -- ONNX ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_artifacts(converted_dir, tmp_path_factory):
    """{routing: (ONNX file, printed stdout)}, exported by the command."""
    return export_every_routing(converted_dir, tmp_path_factory.mktemp("export_onnx"), "onnx")


def ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3  # errors are raised; the log would repeat them
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("routing", export.ROUTINGS)
def test_onnx_matches_predictor_at_batch_1_and_3(onnx_artifacts, predictor, frames, routing):
    sess = ort_session(onnx_artifacts[routing][0])
    assert [(i.name, i.shape, i.type) for i in sess.get_inputs()] == [
        (n, ["b", H, W, 3], "tensor(float)") for n in ("prev", "cur")]  # the batch is dynamic
    assert [o.name for o in sess.get_outputs()] == ["next"]
    prev, cur = frames
    for b in (1, 3):
        with jax.default_matmul_precision("highest"):
            want = predictor.predict(prev[:b], cur[:b], routing=routing)  # RGB in, RGB out
        (got,) = sess.run(None, {"prev": prev[:b, ..., ::-1], "cur": cur[:b, ..., ::-1]})  # BGR checkpoint
        assert got.shape == (b, H, W, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got[..., ::-1], want, rtol=0, atol=1e-4)


def test_onnx_metadata_sidecar_and_printed_convention(onnx_artifacts, converted_dir):
    path, out = onnx_artifacts["threshold"]
    meta = json.loads(export.metadata_path(path).read_text())
    assert meta["artifact_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["channel_order"] == "BGR" == meta["checkpoint_metadata"]["channel_order"]
    for frame in (*meta["inputs"], meta["output"]):
        assert frame["shape"] == ["b", H, W, 3]
        assert (frame["dtype"], frame["layout"], frame["range"], frame["channel_order"]) == ("float32", "NHWC", [0, 1], "BGR")
    assert [f["name"] for f in meta["inputs"]] == ["prev", "cur"] and meta["output"]["name"] == "next"
    assert (meta["routing"], meta["conv_form"], meta["batch_mode"], meta["onnx_opset"]) == (
        "threshold", "plain", "batched", export.ONNX_OPSET)
    assert meta["onnx_graph"] == "dmvfn_jax.deploy.onnx_graph.predictor_graph" and meta["checkpoint"] == str(converted_dir)
    assert "platforms" not in meta and meta["warp"].startswith("gather") and meta["block_layout"] == "pixels"
    assert f"float32 (b, {H}, {W}, 3) NHWC" in out and "values in [0, 1], BGR channel order" in out
    assert f"wrote {path}" in out and "ONNX opset 21, NCHW" in out


def test_onnx_weights_are_inside_and_it_runs_without_dmvfn_jax(onnx_artifacts, predictor, frames, tmp_path):
    """A fresh interpreter with dmvfn_jax, jax and flax made unimportable: onnxruntime and numpy only."""
    import onnx

    path = onnx_artifacts["threshold"][0]
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["prev", "cur"]  # no parameter is an input
    assert node_counts(model)["GatherElements"] == 36  # every warp's four corners, inside the blocks' Ifs
    n_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(predictor.model, nnx.Param)))
    assert path.stat().st_size > n_bytes
    prev, cur = frames
    np.save(tmp_path / "frames.npy", np.stack([prev, cur])[..., ::-1])
    child = textwrap.dedent("""
        import sys
        for name in ("dmvfn_jax", "jax", "flax"):
            sys.modules[name] = None  # any import of them now raises ImportError
        import numpy as np
        import onnxruntime as ort
        model, frames, out = sys.argv[1:4]
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        prev, cur = np.load(frames)
        np.save(out, sess.run(None, {"prev": prev, "cur": cur})[0])
        print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("dmvfn_jax", "jax", "flax")))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([sys.executable, "-I", "-c", child, str(path), str(tmp_path / "frames.npy"),
                           str(tmp_path / "out.npy")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded: ['dmvfn_jax', 'flax', 'jax']" in proc.stdout  # only the blocking placeholders
    with jax.default_matmul_precision("highest"):
        want = predictor.predict(prev, cur, routing="threshold")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy")[..., ::-1], want, rtol=0, atol=1e-4)


def test_onnx_refuses_wrong_inputs(onnx_artifacts, frames):
    """onnxruntime checks each input's rank, fixed dimensions and dtype against the model, naming
    the input; two batch sizes are only caught inside the graph, by the first Concat."""
    sess = ort_session(onnx_artifacts["threshold"][0])
    prev, cur = frames
    cases = [
        ((prev[:, :48], cur[:, :48]), rf"Got invalid dimensions for input: prev for the following indices\s+index: 1 Got: 48 Expected: {H}"),
        ((prev[..., :1], cur[..., :1]), r"Got invalid dimensions for input: prev for the following indices\s+index: 3 Got: 1 Expected: 3"),
        ((prev[0], cur[0]), r"Invalid rank for input: prev Got: 3 Expected: 4"),
        (((prev * 255).astype(np.uint8), cur), r"Unexpected input data type. Actual: \(tensor\(uint8\)\) , expected: \(tensor\(float\)\)"),
        ((prev[:2], cur), r"Concat.*mismatched dimensions of 2 and 3|Concat.*mismatched dimensions of 3 and 2"),
    ]
    for (a, c), message in cases:
        with pytest.raises(Exception, match=message):
            sess.run(None, {"prev": a, "cur": c})


def test_onnx_without_the_extra_is_one_line(converted_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    out = tmp_path / "x.onnx"
    line = one_error_line(*run_export("--checkpoint", converted_dir, "--format", "onnx", "--size", SIZE,
                                      "--output", out)[::2])
    assert line == ("export: error: ONNX export needs the 'onnx' extra: pip install 'dmvfn-jax[onnx]' "
                    "(not installed: onnxruntime)")
    assert not out.exists()


# The export of the official model by torch.onnx (opset 17, all blocks; bench/export_speed.py) has
# 888 nodes besides its Constants: 72 Conv, 72 PRelu, 21 Resize, 18 GridSample, 9 ConvTranspose,
# 18 Transpose (issue 34). jax2onnx's export of ours had 3,412: 269 Transpose (every conv wrapped
# in two), 241 Gather and 311 Slice (the resizes), PReLU as GreaterOrEqual, Where and Mul.
LEAN = {"Conv": 72, "PRelu": 72, "ConvTranspose": 9, "GatherElements": 36, "Resize": 15}


@pytest.mark.parametrize("routing", export.ROUTINGS)
def test_onnx_graph_is_one_operator_per_op(onnx_artifacts, predictor, routing):
    """Every conv unit a Conv and a PRelu, every resize one Resize (the 17 channels of a coarse block
    at once), each block's two warps four GatherElements, NCHW throughout: a Transpose at the entry
    and the exit only, no Gather, Where or Unsqueeze besides the gates'."""
    import onnx

    graph = onnx.load(str(onnx_artifacts[routing][0]))
    counts = node_counts(graph)
    # the weights once and one (1, 4, H, W) grid of pixel positions shared by every warp
    params = sum(x.nbytes for x in jax.tree.leaves(nnx.state(predictor.model, nnx.Param)))
    constants = sum(np.prod(t.dims, dtype=np.int64) * 4 for t in graph.graph.initializer)
    assert constants <= params + 4 * 4 * 64 * 80 + 2**14, (constants, params)
    routing_convs = 2 if routing == "threshold" else 0  # the routing module's
    assert {op: counts.get(op, 0) for op in LEAN} == {**LEAN, "Conv": LEAN["Conv"] + routing_convs}
    assert counts["Transpose"] == 2 + 1
    assert counts.get("Pad") == 2 and counts.get("Gather", 0) == counts.get("Where", 0) == 0
    assert counts.get("If", 0) == counts.get("Unsqueeze", 0) == (9 if routing == "threshold" else 0)
    assert sum(counts.values()) <= 760  # the official export's 888 besides Constants; jax2onnx's 3,508-8,449


@pytest.mark.parametrize("rescale, inputs, warp", [(True, "frames", "gather"), (False, "difference", "grid_sample"),
                                                     (False, "motion", "gather")])
def test_onnx_graph_follows_the_routing_options_and_widths(rescale, inputs, warp):
    """The graph is written from the model's parameters and options, so a small model with other
    widths, scales and routing options gives the same values as the model, at a size that needs no
    padding and one that does, with either form of the warp."""
    import onnxruntime as ort

    from dmvfn_jax.models import DMVFN
    from dmvfn_jax.deploy.onnx_graph import predictor_graph

    model = DMVFN(rngs=nnx.Rngs(3), widths=(16, 8, 8), scales=(4, 2, 1), routing_rescale=rescale,
                  routing_inputs=inputs)
    rng = np.random.default_rng(1)
    for h, w in ((32, 48), (40, 36)):
        prev, cur = rng.random((2, 2, h, w, 3), dtype=np.float32)
        cur[1] = prev[1]  # a still pair beside a moving one
        for routing in export.ROUTINGS:
            sess = ort.InferenceSession(predictor_graph(model, h, w, routing, warp).SerializeToString(),
                                        providers=["CPUExecutionProvider"])
            with jax.default_matmul_precision("highest"):
                want = np.asarray(model.predict(prev, cur, routing).prediction)
            np.testing.assert_allclose(sess.run(None, {"prev": prev, "cur": cur})[0], want, rtol=0, atol=1e-5)
