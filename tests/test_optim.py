"""The learning-rate schedule and AdamW against the official recipe and torch.optim.AdamW."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from dmvfn_jax.train.optim import lr_schedule, make_optimizer


def spec_lr(s: int, total: int, warmup: int = 2000, base: float = 1e-5, peak: float = 1e-4):
    """The reference formula, in float64 Python."""
    if s < warmup:
        return base + (peak - base) * s / warmup
    progress = (s - warmup) / (total - warmup)
    return base + (peak - base) * (0.5 + 0.5 * math.cos(math.pi * progress))


def check_steps(total: int, warmup: int) -> list[int]:
    return sorted({0, max(warmup - 1, 0), warmup, (warmup + total) // 2, total - 1})


@pytest.mark.parametrize("total, warmup", [(20, 5), (111_600, 2000), (7, 0)])
def test_schedule_matches_spec(total, warmup):
    sched = lr_schedule(total, warmup)
    jitted = jax.jit(sched)
    for s in check_steps(total, warmup):
        want = spec_lr(s, total, warmup)
        # float32 output: relative rounding ~6e-8, plus the cosine of a float32 argument.
        np.testing.assert_allclose(float(sched(s)), want, rtol=1e-6, err_msg=f"step {s}")
        got = float(jitted(jnp.int32(s)))
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"jit step {s}")
    steps = np.array(check_steps(total, warmup))
    want = [spec_lr(int(s), total, warmup) for s in steps]
    np.testing.assert_allclose(np.asarray(sched(steps)), want, rtol=1e-6)


def test_schedule_landmarks():
    sched = lr_schedule(10_000)
    assert float(sched(0)) == pytest.approx(1e-5, rel=1e-6)
    assert float(sched(1000)) == pytest.approx(5.5e-5, rel=1e-6)
    assert float(sched(2000)) == pytest.approx(1e-4, rel=1e-6)
    assert float(sched(6000)) == pytest.approx(5.5e-5, rel=1e-6)
    assert float(sched(10_000)) == pytest.approx(1e-5, rel=1e-6)
    assert float(sched(50_000)) == pytest.approx(1e-5, rel=1e-6)  # past the end: held at base


def test_schedule_drives_torch_lambdalr():
    """The lr torch AdamW actually sees under LambdaLR(spec formula) equals lr_schedule."""
    total, warmup = 20, 5
    sched = lr_schedule(total, warmup)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    lam = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: spec_lr(s, total, warmup))
    for s in range(total):
        torch_lr = opt.param_groups[0]["lr"]
        np.testing.assert_allclose(float(sched(s)), torch_lr, rtol=1e-6, err_msg=f"step {s}")
        opt.step()
        lam.step()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(total_steps=10, warmup_steps=10), "greater than warmup_steps"),
        (dict(total_steps=5, warmup_steps=10), "greater than warmup_steps"),
        (dict(total_steps=10, warmup_steps=-1), "warmup_steps must be >= 0"),
        (dict(total_steps=10.0, warmup_steps=2), "total_steps must be an integer"),
        (dict(total_steps=True, warmup_steps=0), "total_steps must be an integer"),
        (dict(total_steps=10, warmup_steps=2, base_lr=-1e-5), "base_lr must be >= 0"),
        (dict(total_steps=10, warmup_steps=2, peak_lr=float("nan")), "peak_lr must be a finite"),
        (dict(total_steps=10, warmup_steps=2, base_lr=1e-3, peak_lr=1e-4), "must be >= base_lr"),
    ],
)
def test_schedule_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lr_schedule(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weight_decay=-1.0), "weight_decay must be >= 0"),
        (dict(b1=1.0), "b1 must be in"),
        (dict(b2=-0.1), "b2 must be >= 0"),
        (dict(eps=float("inf")), "eps must be a finite"),
        (dict(updates_per_step=0), "updates_per_step must be >= 1"),
    ],
)
def test_optimizer_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(1e-3, **kwargs)


SHAPES = [(3,), (4, 5), (2, 3, 3, 2), (6,)]
NUM_STEPS = 5


def problem(dtype):
    """Parameters of several shapes and a fixed gradient sequence.

    The last array gets gradients of order 1e-8 so that `eps` (and where it sits) matters.
    """
    rng = np.random.default_rng(0)
    params = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    grads = []
    for _ in range(NUM_STEPS):
        g = [rng.normal(size=s).astype(dtype) for s in SHAPES]
        g[-1] = (g[-1] * 1e-8).astype(dtype)
        grads.append(g)
    return params, grads


def run_torch(params, grads, lr_at, weight_decay):
    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = torch.optim.AdamW(ps, lr=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    lam = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    for g in grads:
        for p, gi in zip(ps, g):
            p.grad = torch.from_numpy(gi.copy())
        opt.step()
        lam.step()
    return [p.detach().numpy() for p in ps]


def run_optax(params, grads, tx):
    ps = [jnp.asarray(p) for p in params]
    state = tx.init(ps)

    @jax.jit
    def step(ps, state, g):
        updates, state = tx.update(g, state, ps)
        return optax.apply_updates(ps, updates), state

    for g in grads:
        ps, state = step(ps, state, [jnp.asarray(gi) for gi in g])
    return [np.asarray(p) for p in ps]


# Larger learning rates than the recipe's so the five updates move the parameters visibly
# (up to ~3e-2 each), and a weight decay large enough that getting it wrong would show.
TOTAL, WARMUP, BASE, PEAK = 20, 5, 1e-3, 1e-2
CASES = [(1e-3, 1), (0.5, 1), (0.5, 2)]  # (weight_decay, updates_per_step)


def optimizer(weight_decay, k):
    sched = lr_schedule(TOTAL, WARMUP, BASE, PEAK)
    return make_optimizer(sched, weight_decay=weight_decay, updates_per_step=k)


def torch_lr(k):
    """LambdaLR factor for update n: the batch step's lr, k updates per batch step."""
    return lambda n: spec_lr(n // k, TOTAL, WARMUP, BASE, PEAK)


@pytest.mark.parametrize("weight_decay, k", CASES)
def test_adamw_matches_torch_float32(weight_decay, k):
    """Float32: same parameters as torch.optim.AdamW + LambdaLR after 5 steps.

    Tolerance: both sides round each elementary op to float32 but in a different order (torch
    uses lerp for the moments; optax `(1 - b) * g + b * m`), so each step may differ by an ulp
    or so of |p| ~ 1; we allow 8 ulps, about rtol 1e-6 (measured: at most 4 ulps, 3e-7).
    Plain `optax.adamw` fails this (~90 ulps, 7e-6): its float32 `1 - 0.999**t` is off by ~2e-5.
    """
    params, grads = problem(np.float32)
    got = run_optax(params, grads, optimizer(weight_decay, k))
    want = run_torch(params, grads, torch_lr(k), weight_decay)
    for g, w, p0 in zip(got, want, params):
        assert g.dtype == np.float32
        assert not np.array_equal(w, p0)
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
        assert np.max(np.abs(g - w) / np.spacing(np.abs(w))) <= 8


@pytest.mark.parametrize("weight_decay, k", CASES)
def test_adamw_matches_torch_float64(weight_decay, k):
    """Float64: the two updates are the same formula, so the parameter *changes* agree to 1e-10.

    Comparing changes (not parameters) makes the check sensitive to the update itself,
    including the eps-dominated tiny-gradient array and the lr-scaled decay.
    """
    params, grads = problem(np.float64)
    want = run_torch(params, grads, torch_lr(k), weight_decay)
    with jax.enable_x64(True):
        got = run_optax(params, grads, optimizer(weight_decay, k))
    for g, w, p0 in zip(got, want, params):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g - p0, w - p0, rtol=1e-10, atol=1e-15)


def test_decay_is_multiplied_by_lr():
    """With zero gradients Adam's step is 0, so one update is exactly p * (1 - lr * wd)."""
    p = [jnp.full((3,), 2.0)]
    tx = make_optimizer(0.01, weight_decay=0.5)
    updates, _ = tx.update([jnp.zeros(3)], tx.init(p), p)
    new = np.asarray(optax.apply_updates(p, updates)[0])
    np.testing.assert_allclose(new, 2.0 * (1 - 0.01 * 0.5), rtol=1e-7)


def test_state_has_the_structure_of_optax_adamw():
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    sched = lr_schedule(20, 5)
    ours = make_optimizer(sched, updates_per_step=3).init(params)
    theirs = optax.adamw(sched, weight_decay=1e-3).init(params)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)


def test_train_optimizer_with_per_batch_lr_equals_scheduled_adamw():
    """The training step's optimiser (learning rate set per batch) is the same AdamW."""
    from dmvfn_jax.train.optim import learning_rate, make_train_optimizer, set_learning_rate

    schedule = lr_schedule(20, 5, 1e-3, 1e-2)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((4, 5)), jnp.float32), "b": jnp.zeros((5,))}
    ref_opt, opt = make_optimizer(schedule, weight_decay=0.1), make_train_optimizer(weight_decay=0.1)
    p_ref, p = params, params
    s_ref, s = ref_opt.init(params), opt.init(params)
    for step in range(6):
        g = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)
        u, s_ref = ref_opt.update(g, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u)
        s = set_learning_rate(s, schedule(step))
        np.testing.assert_allclose(float(learning_rate(s)), float(schedule(step)), rtol=1e-7)
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
    for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def _params_and_grads(rng, n: int):
    shapes = {"conv": (3, 3, 6, 5), "bias": (5,), "last": (4, 4, 7, 2)}
    params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}
    grads = [{k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()} for _ in range(n)]
    return params, grads


@pytest.mark.parametrize("jit", [False, True])
def test_adamw_on_packed_parameters_updates_as_on_a_tree(jit):
    """Training gives its AdamW the parameters and gradients packed into one vector (lane-dense on a
    TPU: one vector for each of Adam's moments too); it makes the tree's parameters packed, and its
    state is the tree's with the moments packed (`optim.packed_moments_state`): bit for bit op by op;
    under `jit` to 1e-6 relative (XLA fuses the two programs' elementwise arithmetic differently:
    1 ulp seen)."""
    from dmvfn_jax import parallel
    from dmvfn_jax.train.optim import make_train_optimizer, packed_moments_state, set_learning_rate

    params, grads = _params_and_grads(np.random.default_rng(1), 5)
    opt = make_train_optimizer(weight_decay=0.1)

    def run(pack):
        def one(p, s, g, lr):
            u, s = opt.update(g, set_learning_rate(s, lr), p)
            return optax.apply_updates(p, u), s

        one = jax.jit(one) if jit else one
        p = pack(params)
        s = opt.init(p)
        for i, g in enumerate(grads):
            p, s = one(p, s, pack(g), 1e-2 * (i + 1))
        return p, s

    (p_packed, s_packed), (p_tree, s_tree) = run(parallel.pack), run(lambda tree: tree)
    assert p_packed.shape == s_packed[0].mu.shape == s_packed[0].nu.shape == (sum(x.size for x in params.values()),)
    same = (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)) if jit else np.testing.assert_array_equal
    same(np.asarray(p_packed), np.asarray(parallel.pack(p_tree)))
    converted = packed_moments_state(s_tree)
    assert jax.tree.structure(converted) == jax.tree.structure(s_packed)
    for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(s_packed)):
        same(np.asarray(a), np.asarray(b))


def test_packed_parameters_unpack_and_differentiate_to_one_vector():
    """`step.PackedModel`: the training state's parameter vector unpacks to the parameters (shapes,
    dtypes, values), a vector of another size fails naming both, and the gradient with respect to
    the vector is the tree's gradient packed."""
    from dmvfn_jax import parallel
    from dmvfn_jax.train.step import PackedModel

    params, grads = _params_and_grads(np.random.default_rng(3), 1)
    net, flat = PackedModel.of(None, params), parallel.pack(params)
    assert net.size == flat.size == sum(x.size for x in params.values())
    for k, v in net.params(flat).items():
        assert v.shape == params[k].shape and v.dtype == params[k].dtype
        np.testing.assert_array_equal(v, params[k])
    with pytest.raises(ValueError, match=rf"\({flat.size - 1},\); this model has \({flat.size},\)"):
        net.params(flat[1:])

    def loss(tree):
        return sum(jnp.sum(jnp.sin(x) * g) for x, g in zip(jax.tree.leaves(tree), jax.tree.leaves(grads[0])))

    np.testing.assert_array_equal(jax.jit(jax.grad(lambda f: loss(net.params(f))))(flat),
                                  parallel.pack(jax.jit(jax.grad(loss))(params)))


@pytest.mark.parametrize("form", ["per_parameter", "packed_moments"])
def test_a_checkpoint_of_an_older_form_resumes_packed(tmp_path, form):
    """A training checkpoint written before the parameters were packed (`checkpoints.saved_form`:
    "per_parameter", before 03d7ba4, a moment per parameter too; "packed_moments", since) restores
    into today's state, its parameters and moments packed; today's form restores as it is; a
    checkpoint of another model still fails to restore."""
    import orbax.checkpoint as ocp
    from ml_collections import ConfigDict

    from dmvfn_jax import parallel
    from dmvfn_jax.train import checkpoints
    from dmvfn_jax.train.optim import make_train_optimizer, packed_moments_state
    from dmvfn_jax.train.step import PackedModel, TrainState

    params, grads = _params_and_grads(np.random.default_rng(2), 2)
    opt = make_train_optimizer()
    s_old = opt.init(params)  # a moment per parameter
    for g in grads:
        _, s_old = opt.update(g, s_old, params)
    if form == "packed_moments":
        s_old = packed_moments_state(s_old)
    scalar = jnp.zeros((), jnp.int32)
    old = TrainState(params, s_old, scalar + 7, jnp.zeros((2,), jnp.uint32), scalar, scalar)
    config = ConfigDict({"keep_checkpoints": 3, "async_checkpoints": False})
    mngr = checkpoints.checkpoint_manager(tmp_path, config)

    def save(step, state):
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave({"step": step})))
        mngr.wait_until_finished()

    save(7, old)
    assert checkpoints.saved_form(mngr, 7) == form
    net, flat = PackedModel.of(None, params), parallel.pack(params)
    today = old._replace(params=flat, opt_state=make_train_optimizer().init(flat), step=scalar)
    state, meta = checkpoints.restore(mngr, today, net, tmp_path, strict=True)
    assert meta["step"] == 7 and int(state.step) == 7
    assert jax.tree.structure(state) == jax.tree.structure(today)
    np.testing.assert_array_equal(state.params, flat)
    for name in ("mu", "nu"):
        np.testing.assert_array_equal(getattr(state.opt_state[0], name), parallel.pack(getattr(s_old[0], name)))
    assert int(state.opt_state[0].count) == 2
    for a, b in zip(jax.tree.leaves(net.params(state.params)), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)

    save(8, state._replace(step=scalar + 8))  # today's form, as it is
    assert checkpoints.saved_form(mngr, 8) == "packed"
    again, meta = checkpoints.restore(mngr, today, net, tmp_path, strict=True)
    assert meta["step"] == 8
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(state._replace(step=scalar + 8))):
        np.testing.assert_array_equal(a, b)

    other = {k: jnp.zeros((2,) + v.shape) for k, v in params.items()}  # another model's parameters
    other_flat = parallel.pack(other)
    with pytest.raises(Exception, match="cannot be restored"):
        checkpoints.restore(mngr, today._replace(params=other_flat, opt_state=make_train_optimizer().init(other_flat)),
                            PackedModel.of(None, other), tmp_path, strict=True)
    mngr.close()
