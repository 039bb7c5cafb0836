"""Each op against its PyTorch counterpart (float32, highest precision)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import to_nchw, to_nhwc
from dmvfn_jax.models import ops
from dmvfn_jax.parity import torch_dmvfn as tdm

TOL = dict(rtol=0, atol=1e-5)


def warp_pallas_interpret(img, flow):
    """The TPU kernel's warp (`ops.warp_pallas`) in Pallas's interpret mode, on this CPU."""
    return ops.warp_pallas(img, flow, interpret=True)


WARPS = [ops.warp_map_coordinates, ops.warp_gather, warp_pallas_interpret]


@pytest.mark.parametrize("warp", WARPS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("h,w", [(16, 16), (37, 53), (64, 96)])
def test_warp_matches_grid_sample_border(h, w, warp):
    rng = np.random.default_rng(h * w)
    img = rng.random((2, h, w, 3), dtype=np.float32)
    # displacements up to ~1.5 image sizes, so many samples leave the image (border clamp)
    flow = (rng.standard_normal((2, h, w, 2)) * np.array([w, h]) * 0.6).astype(np.float32)
    want = to_nhwc(tdm.warp(to_nchw(img), to_nchw(flow)))
    got = np.asarray(warp(jnp.asarray(img), jnp.asarray(flow)))
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("warp", WARPS, ids=lambda f: f.__name__)
def test_warp_gradients_match_grid_sample(warp):
    """d(sum(w * warp(img, flow)))/d(img, flow) against torch autograd, flows inside and beyond the border."""
    import jax

    rng = np.random.default_rng(5)
    img = rng.random((2, 19, 23, 3), dtype=np.float32)
    flow = (rng.standard_normal((2, 19, 23, 2)) * 6).astype(np.float32)
    wts = rng.standard_normal((2, 19, 23, 3)).astype(np.float32)
    ti, tf = to_nchw(img).requires_grad_(), to_nchw(flow).requires_grad_()
    (tdm.warp(ti, tf) * to_nchw(wts)).sum().backward()
    gi, gf = jax.grad(lambda i, f: (warp(i, f) * wts).sum(), argnums=(0, 1))(jnp.asarray(img), jnp.asarray(flow))
    np.testing.assert_allclose(np.asarray(gi), to_nhwc(ti.grad), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gf), to_nhwc(tf.grad), rtol=0, atol=1e-4)


@pytest.mark.parametrize("warp", WARPS, ids=lambda f: f.__name__)
def test_warp_zero_flow_is_identity(warp):
    img = np.random.default_rng(0).random((1, 20, 24, 3), dtype=np.float32)
    got = np.asarray(warp(jnp.asarray(img), jnp.zeros((1, 20, 24, 2))))
    np.testing.assert_array_equal(got, img)


def test_warp_rejects_mismatched_flow():
    for warp in WARPS:
        with pytest.raises(ValueError, match="flow"):
            warp(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 4, 2)))


@pytest.mark.parametrize("factor", [0.25, 0.5])
def test_downsample_matches_interpolate(factor):
    x = np.random.default_rng(1).random((2, 64, 96, 17), dtype=np.float32)
    want = to_nhwc(F.interpolate(to_nchw(x), scale_factor=factor, mode="bilinear", align_corners=False))
    got = np.asarray(ops.resize_by(jnp.asarray(x), factor))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_upsample_matches_interpolate(factor):
    x = np.random.default_rng(2).standard_normal((2, 8, 12, 5)).astype(np.float32)
    want = to_nhwc(F.interpolate(to_nchw(x), scale_factor=factor, mode="bilinear", align_corners=False))
    got = np.asarray(ops.resize_by(jnp.asarray(x), factor))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("factor", [8, 4, 3, 2, 1, 1 / 2, 1 / 3, 1 / 4, 1 / 8])
def test_resize_by_fast_paths_equal_the_general_resize(factor):
    """Powers of two and their inverses run as slices and adds; other factors (3, 1/3) take the
    general path, `jax.image.resize`."""
    x = np.random.default_rng(3).standard_normal((2, 24, 48, 3)).astype(np.float32)
    h, w = round(24 * factor), round(48 * factor)
    got = ops.resize_by(jnp.asarray(x), factor)
    want = ops.resize_bilinear(jnp.asarray(x), h, w)
    assert got.shape == want.shape == (2, h, w, 3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5)


def test_resize_by_rejects_fractional_pixels():
    with pytest.raises(ValueError, match="whole number"):
        ops.resize_by(jnp.zeros((1, 10, 10, 1)), 0.25)


def _torch_conv_transpose(cin, cout, k, stride, pad, x):
    torch.manual_seed(cin * k + stride)
    layer = torch.nn.ConvTranspose2d(cin, cout, k, stride, pad)
    kernel = layer.weight.detach().numpy().transpose(2, 3, 0, 1)  # (I,O,kh,kw) -> (kh,kw,I,O)
    return layer, kernel, layer.bias.detach().numpy()


@pytest.mark.parametrize("k,stride,pad", [(4, 2, 1), (3, 2, 1), (4, 2, 0), (2, 2, 0)])
def test_conv_transpose_matches_torch(k, stride, pad):
    """(4, 2, 1), DMVFN's, takes the sub-pixel path; the others the dilated-conv path."""
    x = np.random.default_rng(3).standard_normal((2, 16, 24, 48)).astype(np.float32)
    layer, kernel, bias = _torch_conv_transpose(48, 5, k, stride, pad, x)
    want = to_nhwc(layer(to_nchw(x)))
    got = np.asarray(ops.conv_transpose(jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias), stride, pad))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("impl", ["subpixel", "dilated"])
def test_conv_transpose_gradients_match_torch(impl):
    """Input and kernel gradients of a squared-output loss, both 4x4/2/1 implementations."""
    x = np.random.default_rng(5).standard_normal((2, 8, 12, 19)).astype(np.float32)
    layer, kernel, _ = _torch_conv_transpose(19, 5, 4, 2, 1, x)
    tx = to_nchw(x).requires_grad_(True)
    (layer(tx) - layer.bias[None, :, None, None]).square().sum().backward()
    want_x, want_k = to_nhwc(tx.grad), layer.weight.grad.numpy().transpose(2, 3, 0, 1)
    fn = ops.conv_transpose_subpixel if impl == "subpixel" else (lambda a, w: ops.conv_transpose_dilated(a, w, 2, 1))
    gx, gk = jax.grad(lambda a, w: jnp.sum(fn(a, w) ** 2), (0, 1))(jnp.asarray(x), jnp.asarray(kernel))
    np.testing.assert_allclose(np.asarray(gx), want_x, rtol=0, atol=1e-4 * np.abs(want_x).max())
    np.testing.assert_allclose(np.asarray(gk), want_k, rtol=0, atol=1e-4 * np.abs(want_k).max())


def test_prelu_matches_torch():
    layer = torch.nn.PReLU(7)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(-0.5, 0.9, 7))
    x = np.random.default_rng(4).standard_normal((2, 5, 6, 7)).astype(np.float32)
    want = to_nhwc(layer(to_nchw(x)))
    got = np.asarray(ops.prelu(jnp.asarray(x), jnp.asarray(layer.weight.detach().numpy())))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


def test_pad_to_multiple_edge_replicates_and_leaves_multiples_alone():
    x = jnp.arange(2 * 5 * 7 * 1, dtype=jnp.float32).reshape(2, 5, 7, 1)
    p = ops.pad_to_multiple(x, 16)
    assert p.shape == (2, 16, 16, 1)
    np.testing.assert_array_equal(p[:, :5, :7], x)
    np.testing.assert_array_equal(p[:, 10, :7], x[:, 4])  # bottom rows repeat the last row
    np.testing.assert_array_equal(p[:, :5, 15], x[:, :, 6])  # right columns repeat the last column
    y = jnp.zeros((1, 32, 48, 3))
    assert ops.pad_to_multiple(y, 16) is y


@pytest.mark.parametrize("shape,cout", [((2, 16, 24, 17), 8), ((1, 8, 6, 5), 7)])
def test_stride2_conv_and_its_gradients_match_torch(shape, cout):
    """`ops.conv3x3_stride2` (XLA forward, sub-pixel input gradient) against `F.conv2d(stride=2)`."""
    rng = np.random.default_rng(shape[1])
    x = rng.standard_normal(shape).astype(np.float32)
    k = rng.standard_normal((3, 3, shape[-1], cout)).astype(np.float32)
    up = rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, cout)).astype(np.float32)  # a cotangent
    tx = to_nchw(x).requires_grad_(True)
    tk = torch.from_numpy(k.transpose(3, 2, 0, 1).copy()).requires_grad_(True)
    ty = F.conv2d(tx, tk, stride=2, padding=1)
    (ty * to_nchw(up)).sum().backward()
    y, vjp = jax.vjp(ops.conv3x3_stride2, jnp.asarray(x), jnp.asarray(k))
    gx, gk = vjp(jnp.asarray(up))
    np.testing.assert_allclose(np.asarray(y), to_nhwc(ty.detach()), rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gx), to_nhwc(tx.grad), rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gk), tk.grad.numpy().transpose(2, 3, 1, 0), rtol=0, atol=1e-3)


def test_conv_dispatch_takes_the_fast_path_only_for_3x3_stride2():
    from flax import nnx

    from dmvfn_jax.models.layers import torch_conv

    def uses_custom(stride, hw):
        conv = torch_conv(4, 6, stride, rngs=nnx.Rngs(0))
        return "custom_vjp" in str(jax.make_jaxpr(conv)(jnp.zeros((1,) + hw + (4,))))

    assert uses_custom(2, (8, 8))
    assert not uses_custom(1, (8, 8))
    assert not uses_custom(2, (7, 8))  # odd sizes take XLA's own conv and gradient
