"""The weight converter: official PyTorch state dicts <-> dmvfn-jax checkpoints.

Covers the bit-exact round trip, loading the exported file into the PyTorch oracle the way the
official code does, checkpoints with and without the DDP `module.` prefix, the metadata file,
one-line errors that name the input for bad files (leaving nothing behind), refusal of
code-running pickles, never overwriting without --overwrite, atomic writes when a conversion
fails half-way, the `make-random` subcommand and `load_checkpoint` on non-checkpoints.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import pickle
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from flax import traverse_util

from dmvfn_jax import checkpoint as ckpt
from dmvfn_jax.convert import cli, convert_dmvfn, export_dmvfn_to_torch
from dmvfn_jax.parity import torch_dmvfn as tdm

REPO = Path(__file__).resolve().parents[1]
PREFIX = "module."


# -- helpers ------------------------------------------------------------------------------
def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def flat_params(path) -> dict[tuple, np.ndarray]:
    params, _ = ckpt.load_checkpoint(path)
    return traverse_util.flatten_dict(params)


def assert_same_params(a, b) -> None:
    fa, fb = flat_params(a), flat_params(b)
    assert set(fa) == set(fb)
    assert len(fa) == tdm.N_TENSORS
    for key in fa:
        assert fa[key].dtype == fb[key].dtype == np.float32, key
        np.testing.assert_array_equal(fa[key], fb[key], err_msg="/".join(key))


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary / backup entries that an atomic write must never leave behind."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def strip_prefix(state: dict) -> dict:
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}


def fresh_torch_model(pkl: Path) -> tdm.TorchDMVFN:
    """Loads a `module.`-prefixed state dict as the official code does (strip, then strict)."""
    state = torch.load(pkl, map_location="cpu", weights_only=True)
    model = tdm.TorchDMVFN().eval()
    model.load_state_dict(strip_prefix(state), strict=True)
    return model


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory, official_pkl):
    """official .pkl -> checkpoint (CLI, in-process) -> .pkl again (CLI --to-torch)."""
    root = tmp_path_factory.mktemp("roundtrip")
    ckpt_dir, back = root / "ckpt", root / "back.pkl"
    assert cli.main(["dmvfn", "--input", str(official_pkl), "--output", str(ckpt_dir)]) == 0
    assert cli.main(["dmvfn", "--to-torch", "--input", str(ckpt_dir), "--output", str(back)]) == 0
    return types.SimpleNamespace(ckpt=ckpt_dir, back=back, root=root)


# -- round trip ---------------------------------------------------------------------------
def test_round_trip_torch_jax_torch_is_bit_exact(roundtrip, official_pkl):
    original = torch.load(official_pkl, map_location="cpu", weights_only=True)
    back = torch.load(roundtrip.back, map_location="cpu", weights_only=True)
    assert len(original) == tdm.N_TENSORS
    assert all(k.startswith(PREFIX) for k in back)
    assert set(back) == set(original)
    for k, t in original.items():
        assert back[k].dtype == t.dtype == torch.float32, k
        assert back[k].shape == t.shape, k
        assert torch.equal(back[k], t), k
    assert leftovers(roundtrip.root) == []


def test_convert_weights_script_runs_as_a_program(tmp_path, official_pkl, roundtrip):
    out = tmp_path / "ckpt_script"
    proc = subprocess.run(
        [sys.executable, "convert_weights.py", "dmvfn", "--input", str(official_pkl), "--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    assert_same_params(out, roundtrip.ckpt)


def test_exported_file_loads_strict_into_torch_and_predicts_identically(roundtrip, torch_model):
    fresh = fresh_torch_model(roundtrip.back)
    gen = torch.Generator().manual_seed(7)
    img0 = torch.rand(1, 3, 64, 64, generator=gen)
    img1 = torch.rand(1, 3, 64, 64, generator=gen)
    pattern = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0, 1]], dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(fresh.routing_probs(img0, img1), torch_model.routing_probs(img0, img1))
        for gates in (torch.ones(1, 9), pattern):
            want = torch_model.forward_infer(img0, img1, gates)
            got = fresh.forward_infer(img0, img1, gates)
            assert torch.equal(got, want)


def test_checkpoint_without_module_prefix_converts_to_identical_params(tmp_path, torch_model, roundtrip):
    plain = tmp_path / "plain.pkl"
    torch.save(torch_model.state_dict(), plain)  # keys without `module.`
    assert not any(k.startswith(PREFIX) for k in torch.load(plain, weights_only=True))
    out = convert_dmvfn(plain, tmp_path / "ckpt_plain")
    assert_same_params(out, roundtrip.ckpt)


def test_metadata_file(roundtrip, official_pkl):
    meta = json.loads((roundtrip.ckpt / ckpt.METADATA_FILE).read_text())
    assert meta["format"] == "dmvfn-jax"
    assert meta["architecture"] == "dmvfn"
    assert meta["channel_order"] == "BGR"
    assert meta["source"]["file"] == official_pkl.name
    assert meta["source"]["sha256"] == hashlib.sha256(official_pkl.read_bytes()).hexdigest()
    assert meta["widths"] == tdm.WIDTHS
    assert meta["scales"] == tdm.SCALES
    _, loaded = ckpt.load_checkpoint(roundtrip.ckpt)
    assert loaded == meta


def test_channel_order_option_is_recorded(tmp_path, official_pkl, capsys):
    rc, out, err = run_cli(capsys, "dmvfn", "--input", official_pkl, "--output", tmp_path / "rgb", "--channel-order", "RGB")
    assert rc == 0, err
    assert "RGB" in out
    assert ckpt.read_metadata(tmp_path / "rgb")["channel_order"] == "RGB"


# -- bad inputs ---------------------------------------------------------------------------
def _text_file(tmp_path, official_pkl, torch_model):
    p = tmp_path / "notes.pkl"
    p.write_text("these are not the weights you are looking for\n" * 20)
    return p, None


def _truncated(tmp_path, official_pkl, torch_model):
    p = tmp_path / "truncated.pkl"
    data = official_pkl.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p, None


def _missing(tmp_path, official_pkl, torch_model):
    return tmp_path / "does_not_exist.pkl", "no such file"


def _vgg(tmp_path, official_pkl, torch_model):
    torch.manual_seed(0)
    features = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(128, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    )
    p = tmp_path / "vgg_features.pth"
    torch.save(features.state_dict(), p)
    return p, "another network"


def _not_a_dict(tmp_path, official_pkl, torch_model):
    p = tmp_path / "a_list.pkl"
    torch.save([torch.zeros(3), torch.ones(2)], p)
    return p, "not a state dict"


def _integer_tensor(tmp_path, official_pkl, torch_model):
    state = tdm.official_state_dict(torch_model)
    state["module.l1.bias"] = torch.arange(9)
    p = tmp_path / "int_tensor.pkl"
    torch.save(state, p)
    return p, "l1.bias"


BAD_INPUTS = {
    "text_renamed_pkl": _text_file,
    "truncated": _truncated,
    "missing": _missing,
    "another_network": _vgg,
    "not_a_dict": _not_a_dict,
    "integer_tensor": _integer_tensor,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_one_line_error_and_leaves_nothing(case, tmp_path, official_pkl, torch_model, capsys):
    bad, expect = BAD_INPUTS[case](tmp_path, official_pkl, torch_model)
    parent = tmp_path / "out"
    parent.mkdir()
    rc, out, err = run_cli(capsys, "dmvfn", "--input", bad, "--output", parent / "ckpt")
    assert rc != 0
    assert bad.name in err
    assert err.startswith("convert_weights.py: error:")
    assert err.strip().count("\n") == 0, err  # one line
    if expect:
        assert expect in err
    assert list(parent.iterdir()) == []  # no output dir, no hidden temporary dirs


def _save_state(tmp_path, state, name) -> Path:
    p = tmp_path / name
    torch.save(state, p)
    return p


def test_missing_and_misshaped_keys_are_listed_by_name(tmp_path, torch_model, capsys):
    state = tdm.official_state_dict(torch_model)
    del state["module.l1.bias"]
    w = state["module.block3.conv_sq.0.weight"]
    state["module.block3.conv_sq.0.weight"] = w.reshape(w.shape[0], -1)
    bad = _save_state(tmp_path, state, "edited.pkl")
    parent = tmp_path / "out"
    parent.mkdir()
    rc, _, err = run_cli(capsys, "dmvfn", "--input", bad, "--output", parent / "ckpt")
    assert rc != 0
    assert bad.name in err
    assert re.search(r"missing: l1\.bias\b", err), err
    assert re.search(r"mis-shaped: block3\.conv_sq\.0\.weight\b", err), err
    assert "2 problems" in err
    assert list(parent.iterdir()) == []


def test_unexpected_extra_key_is_listed(tmp_path, torch_model, capsys):
    state = tdm.official_state_dict(torch_model)
    state["module.block9.lastconv.weight"] = torch.zeros(3, 3)
    bad = _save_state(tmp_path, state, "extra.pkl")
    parent = tmp_path / "out"
    parent.mkdir()
    rc, _, err = run_cli(capsys, "dmvfn", "--input", bad, "--output", parent / "ckpt")
    assert rc != 0
    assert bad.name in err
    assert re.search(r"unexpected: block9\.lastconv\.weight\b", err), err
    assert list(parent.iterdir()) == []


# -- malicious pickles --------------------------------------------------------------------
class _Payload:
    """Unpickling this runs code that creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_cannot_run_code(writer, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pkl"
    obj = {"module.l1.weight": _Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, evil)
    else:
        with open(evil, "wb") as f:
            pickle.dump(obj, f)

    # the payload is live: an unrestricted load does run it (in another file, as a control)
    control = tmp_path / "CONTROL"
    control_file = tmp_path / "control.pkl"
    torch.save({"x": _Payload(control)}, control_file)
    torch.load(control_file, weights_only=False)
    assert control.exists()

    parent = tmp_path / "out"
    parent.mkdir()
    rc, _, err = run_cli(capsys, "dmvfn", "--input", evil, "--output", parent / "ckpt")
    assert rc != 0
    assert evil.name in err
    assert err.strip().count("\n") == 0, err
    assert not marker.exists()
    assert list(parent.iterdir()) == []


# -- never overwrite ----------------------------------------------------------------------
def test_never_overwrites_a_checkpoint_dir_without_overwrite(tmp_path, official_pkl, capsys):
    out = tmp_path / "ckpt"
    out.mkdir()
    sentinel = out / "sentinel.txt"
    sentinel.write_text("keep me")
    rc, _, err = run_cli(capsys, "dmvfn", "--input", official_pkl, "--output", out)
    assert rc != 0
    assert "already exists" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == ["sentinel.txt"]
    assert sentinel.read_text() == "keep me"

    rc, _, err = run_cli(capsys, "dmvfn", "--input", official_pkl, "--output", out, "--overwrite")
    assert rc == 0, err
    assert (out / ckpt.METADATA_FILE).is_file()
    assert not sentinel.exists()
    params, meta = ckpt.load_checkpoint(out)
    assert meta["architecture"] == "dmvfn"
    assert leftovers(tmp_path) == []


def test_never_overwrites_a_pkl_without_overwrite(tmp_path, roundtrip, capsys):
    out = tmp_path / "existing.pkl"
    out.write_bytes(b"precious bytes")
    rc, _, err = run_cli(capsys, "dmvfn", "--to-torch", "--input", roundtrip.ckpt, "--output", out)
    assert rc != 0
    assert "already exists" in err and str(out) in err
    assert out.read_bytes() == b"precious bytes"

    rc, _, err = run_cli(capsys, "dmvfn", "--to-torch", "--input", roundtrip.ckpt, "--output", out, "--overwrite")
    assert rc == 0, err
    got = torch.load(out, map_location="cpu", weights_only=True)
    want = torch.load(roundtrip.back, map_location="cpu", weights_only=True)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    fresh_torch_model(out)  # loads strict
    assert leftovers(tmp_path) == []


def _boom(*args, **kwargs):
    raise RuntimeError("injected failure")


@pytest.mark.parametrize("where", ["metadata", "orbax"])
def test_failed_conversion_keeps_previous_checkpoint(where, tmp_path, official_pkl, roundtrip, monkeypatch):
    import orbax.checkpoint as ocp

    out = tmp_path / "ckpt"
    convert_dmvfn(official_pkl, out)
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    if where == "metadata":
        fake_json = types.SimpleNamespace(dumps=_boom, loads=json.loads, JSONDecodeError=json.JSONDecodeError)
        monkeypatch.setattr(ckpt, "json", fake_json)
    else:
        monkeypatch.setattr(ocp.StandardCheckpointer, "save", _boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        convert_dmvfn(official_pkl, out, overwrite=True)
    monkeypatch.undo()

    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before
    assert_same_params(out, roundtrip.ckpt)
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_failed_export_keeps_previous_pkl(tmp_path, roundtrip, monkeypatch):
    out = tmp_path / "existing.pkl"
    out.write_bytes(b"precious bytes")

    def half_write_then_fail(obj, f, *a, **kw):
        Path(f).write_bytes(b"half")
        raise RuntimeError("injected failure")

    monkeypatch.setattr(torch, "save", half_write_then_fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        export_dmvfn_to_torch(roundtrip.ckpt, out, overwrite=True)
    assert out.read_bytes() == b"precious bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.pkl"]


# -- make-random --------------------------------------------------------------------------
def test_make_random_writes_a_loadable_official_pkl(tmp_path, capsys):
    out = tmp_path / "random.pkl"
    rc, stdout, err = run_cli(capsys, "make-random", "--output", out, "--seed", "3")
    assert rc == 0, err
    assert str(out) in stdout
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert len(state) == tdm.N_TENSORS
    assert all(k.startswith(PREFIX) for k in state)
    assert sum(v.numel() for v in state.values()) == tdm.N_PARAMS
    model = fresh_torch_model(out)
    with torch.no_grad():
        pred = model.forward_infer(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), torch.ones(1, 9))
    assert torch.isfinite(pred).all()
    # same seed, same weights; refuses to overwrite
    again = tmp_path / "again.pkl"
    assert run_cli(capsys, "make-random", "--output", again, "--seed", "3")[0] == 0
    state2 = torch.load(again, weights_only=True)
    assert all(torch.equal(state[k], state2[k]) for k in state)
    rc, _, err = run_cli(capsys, "make-random", "--output", out, "--seed", "4")
    assert rc != 0 and "already exists" in err


# -- load_checkpoint on things that are not checkpoints -----------------------------------
def _empty_dir(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def _no_metadata(tmp_path, roundtrip):
    import shutil

    d = tmp_path / "no_meta"
    shutil.copytree(roundtrip.ckpt, d)
    (d / ckpt.METADATA_FILE).unlink()
    return d


def _broken_metadata(tmp_path, roundtrip):
    import shutil

    d = tmp_path / "broken_meta"
    shutil.copytree(roundtrip.ckpt, d)
    (d / ckpt.METADATA_FILE).write_text("{not json")
    return d


def _no_params(tmp_path, roundtrip):
    import shutil

    d = tmp_path / "no_params"
    shutil.copytree(roundtrip.ckpt, d)
    shutil.rmtree(d / ckpt.PARAMS_DIR)
    return d


NOT_CHECKPOINTS = {
    "empty_dir": lambda tmp_path, rt: _empty_dir(tmp_path),
    "missing_dir": lambda tmp_path, rt: tmp_path / "nowhere",
    "no_metadata": _no_metadata,
    "broken_metadata": _broken_metadata,
    "no_params": _no_params,
}


@pytest.mark.parametrize("case", list(NOT_CHECKPOINTS))
def test_load_checkpoint_rejects_non_checkpoints(case, tmp_path, roundtrip, capsys):
    path = NOT_CHECKPOINTS[case](tmp_path, roundtrip)
    with pytest.raises(ckpt.CheckpointError, match=re.escape(str(path))):
        ckpt.load_checkpoint(path)
    # and the CLI's --to-torch reports it without writing anything
    out = tmp_path / "out.pkl"
    rc, _, err = run_cli(capsys, "dmvfn", "--to-torch", "--input", path, "--output", out)
    assert rc != 0
    assert path.name in err
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_a_model_with_the_routing_options_is_not_exported_to_the_official_format(tmp_path):
    """The official code has neither routing option: its gates would differ, so the export refuses."""
    from conftest import small_dmvfn
    from dmvfn_jax import checkpoint as ckpt
    from dmvfn_jax.checkpoint import save_dmvfn

    path = save_dmvfn(tmp_path / "free", ckpt.model_params(small_dmvfn()), "BGR", routing_rescale=False,
                      routing_inputs="difference", widths=(16, 16), scales=(2, 1))
    with pytest.raises(ckpt.CheckpointError, match=r"free: its routing was trained with .*official code does not"):
        export_dmvfn_to_torch(path, tmp_path / "out.pkl")
    assert not (tmp_path / "out.pkl").exists()
