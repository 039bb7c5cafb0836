"""Routing: the gate estimators' forward distribution and gradients, and the inference choices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import small_dmvfn
from dmvfn_jax.models import routing as R

V = jnp.array([0.0, 0.1, 0.5, 0.9, 1.0, 0.3])
N = 20_000  # std of a mean of N Bernoulli draws <= 0.0036; 0.015 is > 4 sigma


def draws(fn, **kw):
    keys = jax.random.split(jax.random.key(0), N)
    return np.asarray(jax.vmap(lambda k: fn(k, V, **kw))(keys))


@pytest.mark.parametrize(
    "fn,kw", [(R.bernoulli_st, {}), (R.gumbel_st, {"temperature": 1.0}), (R.gumbel_st, {"temperature": 0.3})]
)
def test_forward_is_hard_and_bernoulli_v(fn, kw):
    g = draws(fn, **kw)
    assert set(np.unique(g)) <= {0.0, 1.0}
    np.testing.assert_allclose(g.mean(0), np.asarray(V), atol=0.015)
    assert g[:, 0].max() == 0 and g[:, 4].min() == 1  # v = 0 never fires, v = 1 always does


def test_bernoulli_straight_through_gradient_is_identity():
    w = jnp.arange(1.0, 7.0)
    grad = jax.grad(lambda v: jnp.sum(w * R.bernoulli_st(jax.random.key(3), v)))(V)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(w), rtol=0, atol=0)


def test_gumbel_gradient_is_the_relaxed_one_and_depends_on_temperature():
    v = jnp.array([0.2, 0.5, 0.8])
    key = jax.random.key(5)

    def grad_at(t):
        return np.asarray(jax.grad(lambda v: jnp.sum(R.gumbel_st(key, v, t)))(v))

    g1, g2 = grad_at(1.0), grad_at(0.5)
    assert np.all(np.isfinite(g1)) and np.all(g1 > 0)  # sigmoid of increasing logit: positive
    assert not np.allclose(g1, 1.0)  # not the identity of the Bernoulli estimator
    assert not np.allclose(g1, g2)
    # analytic check: d/dv sigmoid((logit v + L)/t) = s (1 - s) / (t v (1 - v))
    noise = jax.random.logistic(key, v.shape)
    s = jax.nn.sigmoid((jnp.log(v) - jnp.log1p(-v) + noise) / 1.0)
    np.testing.assert_allclose(g1, np.asarray(s * (1 - s) / (v * (1 - v))), rtol=1e-5)


def test_gumbel_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        R.gumbel_st(jax.random.key(0), V, 0.0)


@pytest.mark.parametrize("estimator", ["bernoulli", "gumbel"])
def test_gradients_reach_routing_parameters(estimator):
    model = small_dmvfn()  # the suite's small model: the estimators' path to the routing is the point
    a = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    b = jnp.roll(a, 2, axis=2)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        outs, gates, v = m.train_forward(a, b, jax.random.key(2), estimator, 0.7)
        return sum(0.8 ** (len(outs) - 1 - i) * jnp.mean(jnp.abs(o - b)) for i, o in enumerate(outs))

    grads = nnx.to_pure_dict(jax.jit(jax.grad(loss))(params))
    for name in ("conv_a", "conv_b", "l1"):
        g = np.asarray(grads["routing"][name]["kernel"])
        assert np.all(np.isfinite(g))
        assert np.abs(g).max() > 0, f"no gradient reached routing.{name} with {estimator}"


def test_training_gates_rejects_unknown_estimator():
    with pytest.raises(ValueError, match="estimator"):
        R.training_gates(V[None], jax.random.key(0), "softmax")


def test_select_gates_choices():
    v = jnp.array([[0.2, 0.5, 0.7], [0.6, 0.49, 1.0]])
    np.testing.assert_array_equal(R.select_gates(v, "threshold"), [[0, 1, 1], [1, 0, 1]])
    np.testing.assert_array_equal(R.select_gates(v, "all"), np.ones((2, 3)))
    s1 = R.select_gates(v, "sample", jax.random.key(4))
    s2 = R.select_gates(v, "sample", jax.random.key(4))
    np.testing.assert_array_equal(s1, s2)
    assert set(np.unique(np.asarray(s1))) <= {0.0, 1.0}
    np.testing.assert_array_equal(R.select_gates(v, np.array([1, 0, 1])), [[1, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(R.select_gates(v, np.array([[1, 0, 0], [0, 0, 1]])), [[1, 0, 0], [0, 0, 1]])


def test_gates_by_index_are_select_gates_with_the_choice_as_data():
    """The predictor's one program: each choice, passed as an int32 to one jitted function, gives
    `select_gates`' gates; the routing probabilities are computed only where a choice reads them."""
    v = jnp.array([[0.2, 0.5, 0.7], [0.6, 0.49, 1.0]])
    calls = []

    def probs(a, b):
        calls.append(1)  # runs while tracing, once per branch that computes them
        return v + 0 * (a + b).sum()

    key, given = jax.random.key(4), jnp.array([[1.0, 0, 0], [0, 0, 1]])
    fn = jax.jit(lambda c: R.gates_by_index(probs, jnp.ones(2), jnp.ones(2), c, key, given))
    for i, choice in enumerate(R.CHOICES_BY_INDEX):
        want = R.select_gates(v, given if choice == "explicit" else choice, key)
        np.testing.assert_array_equal(fn(jnp.int32(i)), want, err_msg=choice)
    assert fn._cache_size() == 1 and len(calls) == 2  # one program; probs traced for the shape and the cond


@pytest.mark.parametrize(
    "routing,match",
    [("random", "unknown routing"), (np.ones(4), r"shape \(3,\)"), (np.ones((2, 2)), r"shape \(3,\)")],
)
def test_select_gates_errors(routing, match):
    with pytest.raises(ValueError, match=match):
        R.select_gates(jnp.full((2, 3), 0.5), routing)


def test_sample_needs_a_key():
    with pytest.raises(ValueError, match="key"):
        R.select_gates(jnp.full((1, 3), 0.5), "sample")


@pytest.mark.parametrize("shape", [(2, 7, 9, 5), (1, 2, 3, 4), (1, 1, 1, 3), (2, 32, 48, 32)])
def test_mean_of_conv3x3_equals_the_conv_then_the_mean(shape):
    """The routing module's shortcut against the explicit zero-padded conv, values and gradients."""
    rng = np.random.default_rng(sum(shape))
    x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, shape[-1], 6), dtype=np.float32))
    b = jnp.asarray(rng.standard_normal(6, dtype=np.float32))

    def explicit(x, k, b):
        y = jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.mean(y + b, axis=(1, 2))

    want = explicit(x, k, b)
    got = R.mean_of_conv3x3(x, k, b)
    assert got.shape == (shape[0], 6)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5)
    w = jnp.asarray(rng.standard_normal((shape[0], 6), dtype=np.float32))  # a random cotangent
    g_want = jax.grad(lambda *a: jnp.sum(explicit(*a) * w), (0, 1, 2))(x, k, b)
    g_got = jax.grad(lambda *a: jnp.sum(R.mean_of_conv3x3(*a) * w), (0, 1, 2))(x, k, b)
    for name, gw, gg in zip(("x", "kernel", "bias"), g_want, g_got):
        np.testing.assert_allclose(np.asarray(gg), np.asarray(gw), rtol=0, atol=1e-5, err_msg=name)


def test_the_cost_term_weighs_the_blocks_by_their_flops_and_reaches_only_the_routing():
    from dmvfn_jax.models.dmvfn import SCALES, WIDTHS
    from dmvfn_jax.train.step import block_costs, routing_cost

    c = np.asarray(block_costs(WIDTHS, SCALES))
    np.testing.assert_allclose(c, np.array([1600] * 6 + [1936] * 3) / (6 * 1600 + 3 * 1936), rtol=1e-6)
    assert float(routing_cost(jnp.ones((3, 9)), WIDTHS, SCALES)) == pytest.approx(1.0)
    assert float(routing_cost(jnp.zeros((3, 9)), WIDTHS, SCALES)) == 0.0
    model = small_dmvfn()
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.random((2, 32, 32, 3)), jnp.float32) for _ in range(2))
    graphdef, params = nnx.split(model, nnx.Param)

    def cost(p):
        m = nnx.merge(graphdef, p)
        return routing_cost(m.routing_probs(a, b), m.widths, m.scales)

    grads = nnx.to_flat_state(jax.jit(jax.grad(cost))(params))
    norms = {k: float(jnp.linalg.norm(v.get_value())) for k, v in grads}
    assert any(k[0] == "routing" and n > 0 for k, n in norms.items())
    assert all(n == 0 for k, n in norms.items() if k[0] != "routing")


def test_cost_weight_zero_is_the_official_step_and_a_weight_adds_the_term():
    from dmvfn_jax.train import optim
    from dmvfn_jax.train import step as step_lib

    model = small_dmvfn()
    optimizer = optim.make_train_optimizer()
    net, state = step_lib.init_state(model, optimizer, 0)
    clips = jnp.asarray(np.random.default_rng(2).integers(0, 255, (2, 3, 64, 64, 3)), jnp.uint8)
    lr = jnp.float32(1e-3)
    jaxpr = lambda **kw: str(jax.make_jaxpr(step_lib.make_train_step(net, optimizer, **kw))(state, clips, lr))  # noqa: E731
    assert jaxpr() == jaxpr(cost_weight=0.0)  # the option off: the same program, so the same loss bit for bit
    _, m1 = jax.jit(step_lib.make_train_step(net, optimizer, cost_weight=0.5))(state, clips, lr)
    assert 0 < float(m1["cost"]) <= 1
    np.testing.assert_allclose(float(m1["total"]), float(m1["lap"]) + 0.5 * float(m1["cost"]), rtol=1e-6)


def test_rescale_off_keeps_the_sigmoids_probabilities_and_the_official_rescales_them():
    """The official module rescales v to sum n/2 for every input (`rescale=True`); `rescale=False`
    leaves the sigmoid's v, so the expected number of blocks can follow the input."""
    from dmvfn_jax.models.dmvfn import DMVFN

    widths, scales = (16,) * 6, (4, 4, 2, 2, 1, 1)  # six blocks: a rescaled row sums to 3, unclipped
    on, off = (DMVFN(rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), widths=widths, scales=scales, routing_rescale=r)
               for r in (True, False))
    assert on.routing_options["routing_rescale"] and not off.routing_options["routing_rescale"]
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.random((2, 32, 32, 3)), jnp.float32) for _ in range(2))
    img0, img1 = jnp.concatenate([a[:1], a[1:]]), jnp.concatenate([a[:1], b[1:]])  # a still pair, a moving one
    with jax.default_matmul_precision("highest"):
        v_on, v_off = (np.asarray(m.routing_probs(img0, img1)) for m in (on, off))
        r = off.routing
        pooled = R.mean_of_conv3x3(jax.nn.relu(r.conv_a(jnp.concatenate([img0, img1], -1))), r.conv_b.kernel[...],
                                   r.conv_b.bias[...])
        want_off = np.asarray(jax.nn.sigmoid(r.l1(pooled)))
    np.testing.assert_allclose(v_off, want_off, rtol=0, atol=1e-6)
    np.testing.assert_allclose(v_on, np.clip(v_off / (v_off.sum(1, keepdims=True) + 1e-6) * 3, 0, 1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(v_on.sum(1), [3.0, 3.0], rtol=0, atol=1e-5)  # every input: n/2 blocks expected
    assert abs(float(v_off[0].sum() - v_off[1].sum())) > 1e-4  # without the rescaling, the sum follows the input


def test_difference_inputs_read_the_first_frame_and_the_change():
    """`inputs="difference"`: the module reads cat(img0, img1 - img0), so a still pair reads zeros in
    its last three channels; the official "frames" reads cat(img0, img1). Same parameters."""
    r = R.RoutingModule(4, rescale=False, inputs="difference", rngs=nnx.Rngs(0))
    official = R.RoutingModule(4, rescale=False, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    a, b = (jnp.asarray(rng.random((2, 16, 16, 3)), jnp.float32) for _ in range(2))
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(np.asarray(r(a, b)), np.asarray(official(a, b - a)), rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(r(a, a)), np.asarray(official(a, jnp.zeros_like(a))), rtol=0, atol=1e-6)
        assert not np.allclose(np.asarray(r(a, b)), np.asarray(official(a, b)), atol=1e-4)
    with pytest.raises(ValueError, match="routing inputs must be one of"):
        R.RoutingModule(4, inputs="flow", rngs=nnx.Rngs(0))


def test_motion_inputs_read_the_change_only_so_every_still_pair_gets_the_same_gates():
    """`inputs="motion"`: the module reads cat(img1 - img0, |img1 - img0|), nothing of the scene, so
    every still pair reads zeros and gets the same probabilities whatever it shows (with
    "difference" the first frame still tells still pairs apart)."""
    r = R.RoutingModule(4, rescale=False, inputs="motion", rngs=nnx.Rngs(0))
    diff = R.RoutingModule(4, rescale=False, inputs="difference", rngs=nnx.Rngs(0))
    official = R.RoutingModule(4, rescale=False, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(2)
    a, b, c = (jnp.asarray(rng.random((2, 16, 16, 3)), jnp.float32) for _ in range(3))
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(np.asarray(r(a, b)), np.asarray(official(b - a, jnp.abs(b - a))), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(r(a, a)), np.asarray(r(c, c)))
        assert not np.allclose(np.asarray(diff(a, a)), np.asarray(diff(c, c)), atol=1e-4)
        assert not np.allclose(np.asarray(r(a, b)), np.asarray(r(a, a)), atol=1e-4)


def test_the_config_chooses_the_routing_options_and_bad_ones_are_named():
    import configs.demo
    from configs.common import base_config
    from dmvfn_jax.errors import InputError
    from dmvfn_jax.train import build

    c = base_config()  # what every official recipe builds on
    c.model.widths, c.model.scales = (8, 8), (2, 1)
    assert build.build_model(c).routing_options == {"routing_rescale": True, "routing_inputs": "frames"}  # official
    assert c.routing.cost_weight == 0 and c.data.still_fraction == 0
    c = configs.demo.get_config()  # the demo trains with the options on
    c.model.widths, c.model.scales = (8, 8), (2, 1)
    assert build.build_model(c).routing_options == {"routing_rescale": False, "routing_inputs": "motion"}
    c.routing.inputs = "flow"
    with pytest.raises(InputError, match="config.routing.inputs must be one of"):
        build.build_model(c)
