"""The training loss against the PyTorch oracle in `dmvfn_jax/parity/torch_losses.py`, and the VGG19 converter.

Covers the Laplacian pyramid loss (value, bands and gradient; square and non-square), the VGG19
perceptual loss with random torchvision-layout weights taken through `convert_weights.py vgg19`
(value and gradient; the VGG parameters get no gradient), the combined `dmvfn_loss` on 9
outputs, and the converter's errors: missing / mis-shaped / unknown keys listed by name,
another network, not a torch file, never overwriting.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx, traverse_util

from conftest import to_nchw, to_nhwc
from dmvfn_jax import checkpoint as ckpt
from dmvfn_jax import losses
from dmvfn_jax.convert import cli, convert_vgg19, vgg_torch
from dmvfn_jax.convert.dmvfn_torch import random_official_state
from dmvfn_jax.parity import torch_losses as tl

RTOL = 1e-5


def images(seed: int, b: int, h: int, w: int, n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((b, h, w, 3), dtype=np.float32) for _ in range(n)]


def torch_leaf(x: np.ndarray) -> torch.Tensor:
    return to_nchw(x).requires_grad_(True)


def assert_grad_close(got, want: np.ndarray, what: str) -> None:
    """Relative 1e-5, with the absolute floor at 1e-5 of the largest entry (for entries near 0)."""
    got = np.asarray(got)
    scale = float(np.abs(want).max())
    assert scale > 0, f"{what}: the oracle's gradient is all zeros"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# -- Laplacian pyramid --------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(64, 64), (64, 96)], ids=["64x64", "64x96"])
def test_laplacian_bands_match_oracle(hw):
    (x,) = images(0, 2, *hw, n=1)
    got = jax.jit(losses.laplacian_pyramid)(jnp.asarray(x))  # one program (op by op: ~200 small compiles)
    want = tl.laplacian_pyramid(to_nchw(x))
    assert len(got) == len(want) == 5
    h, w = hw
    for level, (g, t) in enumerate(zip(got, want)):
        assert g.shape == (2, h >> level, w >> level, 3)
        np.testing.assert_allclose(np.asarray(g), to_nhwc(t), rtol=0, atol=1e-6, err_msg=f"band {level}")


@pytest.mark.parametrize("hw", [(64, 64), (64, 96)], ids=["64x64", "64x96"])
def test_laplacian_loss_value_and_grad_match_oracle(hw):
    pred, gt = images(1, 2, *hw)
    value, grad = jax.jit(jax.value_and_grad(losses.laplacian_loss))(jnp.asarray(pred), jnp.asarray(gt))

    tp = torch_leaf(pred)
    want = tl.laplacian_loss(tp, to_nchw(gt))
    want.backward()
    np.testing.assert_allclose(float(value), want.item(), rtol=RTOL)
    assert_grad_close(grad, to_nhwc(tp.grad), "d laplacian_loss / d pred")


def test_laplacian_loss_of_identical_images_is_zero_and_bad_sizes_raise():
    (x,) = images(2, 1, 64, 64, n=1)
    assert float(jax.jit(losses.laplacian_loss)(jnp.asarray(x), jnp.asarray(x))) == 0.0
    for h, w in [(48, 64), (32, 32), (64, 80)]:  # not multiples of 32, or too small for 5 levels
        with pytest.raises(ValueError, match="multiples of 32"):
            losses.laplacian_pyramid(jnp.zeros((1, h, w, 3)))
    with pytest.raises(ValueError, match="differ in shape"):
        losses.laplacian_loss(jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 96, 3)))


# -- VGG19: conversion and perceptual loss ------------------------------------------------
@pytest.fixture(scope="module")
def vgg_pth(tmp_path_factory) -> Path:
    """Random weights in torchvision's layout: features 0..34 and a small fake classifier."""
    return tl.save_random_vgg_pth(tmp_path_factory.mktemp("vgg") / "vgg19-random.pth", seed=0, classifier=True)


@pytest.fixture(scope="module")
def vgg_ckpt(tmp_path_factory, vgg_pth) -> Path:
    out = tmp_path_factory.mktemp("vgg_ckpt") / "vgg19"
    assert cli.main(["vgg19", "--input", str(vgg_pth), "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def jax_vgg(vgg_ckpt) -> losses.VGG19Features:
    return losses.load_vgg19(vgg_ckpt)


@pytest.fixture(scope="module")
def torch_vgg(vgg_pth) -> tl.TorchVGG19:
    return tl.vgg_from_state(torch.load(vgg_pth, map_location="cpu", weights_only=True))


def test_converted_vgg_params_and_metadata(vgg_pth, vgg_ckpt):
    state = torch.load(vgg_pth, map_location="cpu", weights_only=True)
    params, meta = ckpt.load_checkpoint(vgg_ckpt)
    flat = traverse_util.flatten_dict(params)
    assert len(flat) == 26
    for n in losses.VGG19_CONV_INDICES:
        w = state[f"features.{n}.weight"].numpy()
        np.testing.assert_array_equal(flat[(f"conv{n}", "kernel")], w.transpose(2, 3, 1, 0), err_msg=f"conv{n}")
        np.testing.assert_array_equal(flat[(f"conv{n}", "bias")], state[f"features.{n}.bias"].numpy())
    assert meta["architecture"] == "vgg19"
    assert meta["layers"] == "features[0:29]"
    assert meta["channel_order"] == "RGB"
    assert meta["source"]["file"] == vgg_pth.name
    assert meta["source"]["sha256"] == hashlib.sha256(vgg_pth.read_bytes()).hexdigest()
    assert meta["dropped_keys"] == sorted(
        [f"features.{n}.{p}" for n in (30, 32, 34) for p in ("weight", "bias")] + ["classifier.0.bias", "classifier.0.weight"]
    )
    assert json.loads((vgg_ckpt / ckpt.METADATA_FILE).read_text()) == meta


def test_key_table_covers_the_model_exactly():
    shapes = ckpt.flat_shapes(ckpt.abstract_params(lambda: losses.VGG19Features(rngs=nnx.Rngs(0))))
    assert sorted("/".join(p) for _, p, _ in vgg_torch.key_table()) == sorted(shapes)
    want = {k: tuple(v.shape) for k, v in tl.TorchVGG19().state_dict().items() if int(k.split(".")[1]) < 29}
    assert vgg_torch.torch_shapes(shapes) == want


def test_vgg_features_match_oracle(jax_vgg, torch_vgg):
    (x,) = images(3, 1, 32, 48, n=1)
    got = nnx.jit(lambda m, a: m(a))(jax_vgg, jnp.asarray(x))
    with torch.no_grad():
        want = torch_vgg.taps(to_nchw(x))
    assert len(got) == 5
    for k, (g, t) in enumerate(zip(got, want)):
        t = to_nhwc(t)
        assert g.shape == t.shape
        np.testing.assert_allclose(np.asarray(g), t, rtol=RTOL, atol=RTOL * float(np.abs(t).max()), err_msg=f"tap {k}")


def test_perceptual_loss_value_and_grad_match_oracle(jax_vgg, torch_vgg):
    pred, gt = images(4, 2, 32, 32)
    graphdef, state = nnx.split(jax_vgg)

    def f(state, p, g):
        return losses.perceptual_loss(nnx.merge(graphdef, state), p, g)

    value, (g_state, g_pred) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(state, jnp.asarray(pred), jnp.asarray(gt))

    tp = torch_leaf(pred)
    want = tl.perceptual_loss(torch_vgg, tp, to_nchw(gt))
    want.backward()
    np.testing.assert_allclose(float(value), want.item(), rtol=RTOL)
    assert_grad_close(g_pred, to_nhwc(tp.grad), "d perceptual_loss / d pred")
    # frozen: no gradient reaches the VGG parameters
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree.leaves(g_state))


# -- the combined loss --------------------------------------------------------------------
def test_dmvfn_loss_matches_oracle(jax_vgg, torch_vgg):
    *outs, gt = images(5, 2, 64, 64, n=10)
    outs = np.stack(outs)  # (9, B, H, W, 3)
    graphdef, state = nnx.split(jax_vgg)

    def f(outputs, g, state):  # the VGG state is an argument: as a closure it would compile in as constants
        return losses.dmvfn_loss(list(outputs), g, nnx.merge(graphdef, state))

    (total, terms), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(jnp.asarray(outs), jnp.asarray(gt), state)

    touts = [torch_leaf(o) for o in outs]
    want_total, want_lap, want_vgg = tl.dmvfn_loss(touts, to_nchw(gt), torch_vgg)
    want_total.backward()
    assert set(terms) == {"lap", "vgg", "total"}
    np.testing.assert_allclose(float(terms["lap"]), want_lap.item(), rtol=RTOL)
    np.testing.assert_allclose(float(terms["vgg"]), want_vgg.item(), rtol=RTOL)
    np.testing.assert_allclose(float(total), want_total.item(), rtol=RTOL)
    assert float(terms["total"]) == float(total)
    for i, t in enumerate(touts):
        assert_grad_close(grad[i], to_nhwc(t.grad), f"d dmvfn_loss / d outputs[{i}]")


def test_dmvfn_loss_without_vgg_and_general_length():
    *outs, gt = images(6, 1, 64, 96, n=4)
    loss = jax.jit(losses.dmvfn_loss)  # one program per input structure (op by op: ~200 small compiles)
    total, terms = loss([jnp.asarray(o) for o in outs], jnp.asarray(gt))
    want_total, want_lap, _ = tl.dmvfn_loss([to_nchw(o) for o in outs], to_nchw(gt))
    assert float(terms["vgg"]) == 0.0
    np.testing.assert_allclose(float(total), want_total.item(), rtol=RTOL)
    np.testing.assert_allclose(float(terms["lap"]), want_lap.item(), rtol=RTOL)
    # weights 0.8 ** (n - 1 - i): the last output counts most
    stacked_total, _ = loss(jnp.asarray(np.stack(outs)), jnp.asarray(gt))
    np.testing.assert_allclose(float(stacked_total), float(total), rtol=1e-6)
    with pytest.raises(ValueError, match="output 1"):
        losses.dmvfn_loss([jnp.asarray(outs[0]), jnp.zeros((1, 64, 64, 3))], jnp.asarray(gt))


# -- converter errors ---------------------------------------------------------------------
def _save(tmp_path: Path, state: dict, name: str) -> Path:
    p = tmp_path / name
    torch.save(state, p)
    return p


def _convert_expect_failure(capsys, tmp_path, bad: Path) -> str:
    parent = tmp_path / "out"
    parent.mkdir()
    rc, _, err = run_cli(capsys, "vgg19", "--input", bad, "--output", parent / "vgg19")
    assert rc != 0
    assert err.startswith("convert_weights.py: error:")
    assert bad.name in err
    assert list(parent.iterdir()) == []  # nothing left behind
    return err


def test_missing_misshaped_and_unknown_keys_are_listed(tmp_path, capsys):
    state = tl.random_vgg_state(seed=1)
    del state["features.28.bias"]
    w = state["features.5.weight"]
    state["features.5.weight"] = w.reshape(w.shape[0], -1)
    state["features.30.weight"] = torch.zeros(4, 4)  # a droppable key, but not torchvision's shape
    state["features.37.weight"] = torch.zeros(3)  # not a VGG19 key at all
    err = _convert_expect_failure(capsys, tmp_path, _save(tmp_path, state, "edited.pth"))
    assert re.search(r"missing: features\.28\.bias\b", err), err
    assert re.search(r"mis-shaped: features\.5\.weight\b", err), err
    assert re.search(r"mis-shaped: features\.30\.weight\b", err), err
    assert re.search(r"unexpected: features\.37\.weight\b", err), err
    assert "4 problems" in err


def test_another_network_is_a_one_line_error(tmp_path, capsys):
    dmvfn = {k: torch.from_numpy(v) for k, v in random_official_state(0).items()}
    err = _convert_expect_failure(capsys, tmp_path, _save(tmp_path, dmvfn, "dmvfn_city.pkl"))
    assert "another network" in err
    assert err.strip().count("\n") == 0, err


def test_not_a_torch_file_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "vgg19.pth"
    bad.write_text("not weights\n" * 50)
    err = _convert_expect_failure(capsys, tmp_path, bad)
    assert "not a PyTorch checkpoint" in err
    assert err.strip().count("\n") == 0, err


def test_features_only_file_converts(tmp_path):
    state = {k: v for k, v in tl.random_vgg_state(seed=2, classifier=False).items() if int(k.split(".")[1]) < 29}
    out = convert_vgg19(_save(tmp_path, state, "features_only.pth"), tmp_path / "ckpt")
    assert ckpt.read_metadata(out)["dropped_keys"] == []
    losses.load_vgg19(out)


def test_never_overwrites_without_overwrite(tmp_path, vgg_pth, capsys):
    out = tmp_path / "vgg19"
    out.mkdir()
    (out / "sentinel.txt").write_text("keep me")
    rc, _, err = run_cli(capsys, "vgg19", "--input", vgg_pth, "--output", out)
    assert rc != 0
    assert "already exists" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == ["sentinel.txt"]

    rc, stdout, err = run_cli(capsys, "vgg19", "--input", vgg_pth, "--output", out, "--overwrite")
    assert rc == 0, err
    assert str(out) in stdout
    assert not (out / "sentinel.txt").exists()
    assert ckpt.read_metadata(out)["architecture"] == "vgg19"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vgg19"]  # no temporary leftovers


def test_load_vgg19_refuses_other_checkpoints(tmp_path):
    other = ckpt.save_checkpoint(
        tmp_path / "dmvfn_ckpt", {"a": np.zeros(2, np.float32)}, {"architecture": "dmvfn", "channel_order": "BGR"}
    )
    with pytest.raises(ckpt.CheckpointError, match="is not 'vgg19'"):
        losses.load_vgg19(other)


def full_blur(x: jax.Array, gain: float = 1.0) -> jax.Array:
    """`conv2d(pad(x, 2, 'reflect'), gain * GAUSS_KERNEL, groups=C)` on NHWC, at every pixel: what the
    pyramid's `_upsample` and `_blur_half` shortcut."""
    _, h, w, _ = x.shape
    taps = [float(t) / 16.0 for t in losses._TAPS]
    padded = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")  # PyTorch 'reflect' (edge not repeated)
    rows = sum(t * padded[:, k : k + h] for k, t in enumerate(taps))
    out = sum(t * rows[:, :, k : k + w] for k, t in enumerate(taps))
    return out * gain if gain != 1.0 else out


def test_zero_free_upsample_and_half_blur_equal_the_plain_versions(monkeypatch):
    """The pyramid's shortcuts in their shifted-add form (the one of axes longer than
    `losses.MATRIX_MAX`; 0 here puts every axis in it) against what they replace: blurring a
    zero-inserted image with 4x the kernel, and blurring everything then keeping every second pixel."""
    monkeypatch.setattr(losses, "MATRIX_MAX", 0)
    x = jnp.asarray(np.random.default_rng(9).random((2, 8, 12, 3), dtype=np.float32))
    zero_inserted = jnp.zeros((2, 16, 24, 3), jnp.float32).at[:, ::2, ::2, :].set(x)
    np.testing.assert_allclose(np.asarray(losses._upsample(x)), np.asarray(full_blur(zero_inserted, gain=4.0)),
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(losses._blur_half(x)), np.asarray(full_blur(x)[:, ::2, ::2]),
                               rtol=0, atol=1e-7)


@pytest.mark.parametrize("shape", [(2, 8, 12, 3), (1, losses.MATRIX_MAX + 4, 6, 2)], ids=["matrices", "long_rows"])
def test_pyramid_resamplings_equal_the_plain_versions_to_the_bit(shape):
    """`_upsample` and `_blur_half` as the pyramid calls them (matrix products on short axes; on
    the second shape the rows take the shifted adds) against the plain versions, on frames with 8
    fractional bits: every product and sum of those is exact in float32, whatever its order, so
    any difference is a wrong weight or a wrong edge, not rounding."""
    x = np.random.default_rng(3).integers(0, 256, shape).astype(np.float32) / 256
    b, h, w, c = shape
    zero_inserted = np.zeros((b, 2 * h, 2 * w, c), np.float32)
    zero_inserted[:, ::2, ::2] = x
    assert h > losses.MATRIX_MAX or 2 * max(h, w) <= losses.MATRIX_MAX  # the paths the ids name
    np.testing.assert_array_equal(np.asarray(losses._upsample(jnp.asarray(x))),
                                  np.asarray(full_blur(jnp.asarray(zero_inserted), gain=4.0)))
    np.testing.assert_array_equal(np.asarray(losses._blur_half(jnp.asarray(x))),
                                  np.asarray(full_blur(jnp.asarray(x))[:, ::2, ::2]))
