import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eosflow.optim import gd, normalized_gd, sqrt_loss_gd
from tests.helpers import CompileCounter

TREE = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # gradient norm 5


def _flat(t):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])


def test_gd_update_rule():
    opt = gd(0.2)
    u, _ = opt.update(TREE, opt.init(TREE), TREE, value=1.0)
    np.testing.assert_allclose(_flat(u), -0.2 * _flat(TREE))


def test_normalized_gd_update_rule():
    opt = normalized_gd(0.5)
    u, s = opt.update(TREE, opt.init(TREE))
    np.testing.assert_allclose(_flat(u), -0.5 * _flat(TREE) / 5.0, rtol=1e-15)
    assert int(s.num_kicks) == 0


def test_sqrt_loss_gd_update_rule():
    opt = sqrt_loss_gd(0.5, loss_min=0.25)
    u, _ = opt.update(TREE, opt.init(TREE), value=2.5)
    np.testing.assert_allclose(_flat(u), -0.5 * _flat(TREE) / (2 * 1.5), rtol=1e-15)


@pytest.mark.parametrize("make", [lambda: normalized_gd(0.5), lambda: sqrt_loss_gd(0.5)])
def test_zero_gradient_kicks_instead_of_nan(make):
    opt = make()
    zero = jax.tree.map(jnp.zeros_like, TREE)
    u, s = jax.jit(opt.update)(zero, opt.init(zero), zero, value=0.0)
    flat = _flat(u)
    assert np.all(np.isfinite(flat))
    np.testing.assert_allclose(np.linalg.norm(flat), 1e-2 * np.finfo(np.float64).eps ** 0.5)
    assert int(s.num_kicks) == 1
    u2, s2 = opt.update(zero, s, zero, value=0.0)
    assert int(s2.num_kicks) == 2
    np.testing.assert_allclose(_flat(u2), -flat, rtol=1e-12)  # the next kick goes back


def test_sqrt_loss_gd_needs_value():
    opt = sqrt_loss_gd(0.1)
    with pytest.raises(TypeError, match="needs the current loss"):
        opt.update(TREE, opt.init(TREE), TREE)


def test_sqrt_loss_gd_rejects_loss_below_minimum():
    opt = sqrt_loss_gd(0.1, loss_min=1.0)
    with pytest.raises(Exception, match="below loss_min"):
        jax.jit(opt.update)(TREE, opt.init(TREE), TREE, value=0.5)[0]["a"].block_until_ready()
    # without the check (the runner's build): a nan step below L*, never a kick; at L* + 4
    # the step of GD with eta / (2 sqrt(4))
    quiet = sqrt_loss_gd(0.1, loss_min=1.0, check=False)
    u, s = jax.jit(quiet.update)(TREE, quiet.init(TREE), TREE, value=0.5)
    assert np.all(np.isnan(_flat(u))) and int(s.num_kicks) == 0
    u, _ = jax.jit(quiet.update)(TREE, quiet.init(TREE), TREE, value=5.0)
    np.testing.assert_allclose(_flat(u), -0.1 / 4 * _flat(TREE), rtol=1e-12)


@pytest.mark.parametrize("make", [lambda lr: gd(lr), lambda lr: normalized_gd(lr),
                                  lambda lr: sqrt_loss_gd(lr)])
def test_contract_no_recompile_and_extra_args_ignored(make):
    opt = make(0.1)
    loss = lambda p: 0.5 * sum(jnp.sum(x**2) for x in jax.tree.leaves(p)) + 1.0

    @jax.jit
    def step(p, s):
        val, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s, p, value=val, unknown_extra="ignored", another=3)
        return optax.apply_updates(p, u), s

    p, s = TREE, opt.init(TREE)
    with CompileCounter() as compiles:
        p, s = step(p, s)
        p, s = step(p, s)
    assert compiles.count("step") == 1, compiles.names


@pytest.mark.parametrize("factory", [gd, normalized_gd, sqrt_loss_gd])
def test_works_under_inject_hyperparams(factory):
    opt = optax.inject_hyperparams(factory)(lr=0.1)
    state = opt.init(TREE)
    u1, state = opt.update(TREE, state, TREE, value=4.0)
    state.hyperparams["lr"] = jnp.asarray(0.3)
    u2, _ = opt.update(TREE, state, TREE, value=4.0)
    np.testing.assert_allclose(_flat(u2), 3 * _flat(u1), rtol=1e-12)
    direct = factory(0.1)
    u0, _ = direct.update(TREE, direct.init(TREE), TREE, value=4.0)
    np.testing.assert_allclose(_flat(u1), _flat(u0), rtol=1e-15)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="lr must be positive"):
        normalized_gd(-0.1)
    with pytest.raises(TypeError, match="lr must be a number"):
        normalized_gd(optax.constant_schedule(0.1))


def test_optax_momentum_methods_drop_in():
    from eosflow.optim import METHODS

    for name in ("momentum", "nesterov", "adam", "rmsprop"):
        opt = METHODS[name].build(0.1)
        u, _ = opt.update(TREE, opt.init(TREE), TREE, value=1.0)
        assert np.all(np.isfinite(_flat(u)))


# --- issue 12: the norm of normalized GD at every scale, nan not hidden, hyperparameters ---


def _closed_form_step(g, lr):
    """-lr g / ||g|| in float64 from the entries of ``g`` (any dtypes), flattened."""
    gf = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(g)])
    gf = gf / np.max(np.abs(gf))  # ||g|| of entries near float64's largest would overflow
    return -lr * gf / np.linalg.norm(gf)


def _flat(u):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(u)])


# ||g||^2 = 8 value^2 in float32 from 5 entries: taken directly from 5 tiny/eps = 4.9e-31 on
# (at 1e-15) up to the largest float (at 5e18); from the scaled norm below (1e-16, 1e-19:
# four of the squares subnormal there, 1e-30) and above (1e19, 3e19)
@pytest.mark.parametrize("value", [1e-30, 1e-19, 1e-16, 1e-15, 1.0, 5e18, 1e19, 3e19])
def test_normalized_gd_step_has_length_lr_at_extreme_scales(value):
    opt = normalized_gd(0.1)
    g = {"w": jnp.full(3, value, jnp.float32), "b": jnp.array([value, -2 * value], jnp.float32)}
    u, st = opt.update(g, opt.init(g))
    np.testing.assert_allclose(_flat(u), _closed_form_step(g, 0.1), rtol=1e-6)
    assert int(st.num_kicks) == 0


def test_normalized_gd_counts_squares_flushed_to_zero():
    """1000 entries of 1e-19 (squares 1e-38, below float32's smallest normal number: XLA on
    CPUs flushes them to zero) and one of 4.5e-18: the sum of the squares computed in float32
    is 2e-35 of a true 3e-35, so a direct norm from it would step 22% too far; the bound
    n tiny/eps sends it to the scaled norm."""
    opt = normalized_gd(0.1)
    g = jnp.concatenate([jnp.full(1000, 1e-19, jnp.float32), jnp.array([4.5e-18], jnp.float32)])
    u, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(_flat(u), _closed_form_step(g, 0.1), rtol=1e-6)


@pytest.mark.parametrize(("entries", "dtype"), [
    ([1e38, 1.0], jnp.float32), ([3e38, -3e38, 3e38], jnp.float32),
    ([1e308, 1e308], jnp.float64), ([4.5e307, 4.5e307], jnp.float64)])
def test_normalized_gd_steps_at_the_ends_of_the_range(entries, dtype):
    """Entries above 2^126 (float32; 2^1022 in float64), where 1 / ||g||_inf is subnormal and
    flushed to zero on CPUs: a step of length lr, never a kick (found by a helper trying to
    break the change: such a step was a kick of 3.5e-6)."""
    with jax.enable_x64(True):
        g = jnp.asarray(entries, dtype)
        opt = normalized_gd(0.1)
        for update in (opt.update, jax.jit(opt.update)):
            u, st = update(g, opt.init(g))
            np.testing.assert_allclose(_flat(u), _closed_form_step(g, 0.1), rtol=1e-6,
                                       atol=1e-30)
            assert int(st.num_kicks) == 0


def test_normalized_gd_empty_leaf():
    opt = normalized_gd(0.1)
    for g in ([jnp.zeros(0), jnp.array([3.0, 4.0])], [jnp.zeros(0), jnp.array([3e-30, 4e-30])]):
        u, st = opt.update(g, opt.init(g))
        assert u[0].shape == (0,)
        np.testing.assert_allclose(np.asarray(u[1]), [-0.06, -0.08], rtol=1e-6)
        assert int(st.num_kicks) == 0


def test_normalized_gd_half_precision_and_mixed_dtypes():
    """A float16 gradient whose ||g||^2 exceeds float16's largest number (65 504) and a tree
    of float32 and float64 leaves each take one step of length lr."""
    opt = normalized_gd(0.1)
    g = jnp.full(4, 300.0, jnp.float16)  # ||g||^2 = 360 000
    u, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(_flat(u), _closed_form_step(g, 0.1), rtol=2e-3)
    with jax.enable_x64(True):
        g = {"a": jnp.array([3.0], jnp.float32), "b": jnp.array([4.0], jnp.float64)}
        u, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(_flat(u), [-0.06, -0.08], rtol=1e-6)


@pytest.mark.parametrize(("big", "small"), [([3e30, 4e30], [1.0, 2.0]),
                                            ([3e-30, 4e-30], [0.0, 0.0]),
                                            ([3e-29, 4e-29], [1e-7, 0.0])])
def test_normalized_gd_scaled_norm_with_a_narrower_leaf(big, small):
    """The scaled norm's power of two 2^-e is that of the widest leaf's largest entry; a
    float16 leaf beside a float32 one of 1e30 (or 1e-30) cannot hold it: scaled in the wide
    dtype, each leaf is its closed-form step rounded to its own dtype, never a nan."""
    opt = normalized_gd(0.1)
    g = {"a": jnp.asarray(big, jnp.float32), "b": jnp.asarray(small, jnp.float16)}
    u, st = jax.jit(lambda g: opt.update(g, opt.init(g)))(g)
    want = _closed_form_step(g, 0.1)
    np.testing.assert_allclose(np.asarray(u["a"], np.float64), want[:2], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(u["b"]), want[2:].astype(np.float16))
    assert int(st.num_kicks) == 0


def test_normalized_gd_vmapped_over_both_norms():
    """A sweep vmaps the update: points whose ||g||^2 underflows, is normal or overflows each
    get their own step, with kicks only at g = 0. Under vmap the branch of the two norms is a
    select of both, what GPUs run at every step."""
    opt = normalized_gd(0.1)
    scales = jnp.array([1e-30, 1.0, 3e19, 0.0], jnp.float32)
    g = scales[:, None] * jnp.array([3.0, 4.0], jnp.float32)
    u, st = jax.vmap(lambda x: opt.update(x, opt.init(x)))(g)
    np.testing.assert_allclose(np.asarray(u[:3]), [[-0.06, -0.08]] * 3, rtol=1e-6)
    assert np.asarray(st.num_kicks).tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize("scales", [[1.0, 2.0, 0.5, 7.0], [1e-30, 1.0, 3e19, 0.0]],
                         ids=["all direct", "mixed"])
def test_normalized_gd_under_vmap_is_each_points_update(scales):
    """Under vmap the update branches on whether every point takes the direct norm (then the
    scaled one is never computed) and selects otherwise: either way each point's update and
    state are bit for bit its own, un-vmapped, also nested, over a learning rate per point
    (inject_hyperparams, as the runner's sweeps) and under jit; its derivative is the
    closed form's, in forward and reverse mode. (Compiled against compiled: an eager nested
    vmap rounds -lr/||g|| differently, before this branch and after.)"""
    opt = normalized_gd(0.1)
    g = jnp.asarray(scales, jnp.float32)[:, None] * jnp.array([3.0, 4.0], jnp.float32)
    lrs = jnp.array([0.1, 0.2, 0.3, 0.4], jnp.float32)
    inj = optax.inject_hyperparams(normalized_gd)(lr=0.1)

    def step(lr, x):
        state = inj.init(x)
        state.hyperparams["lr"] = lr
        u, new = inj.update(x, state)
        return u, new.inner_state.num_kicks

    want = [jax.jit(step)(lr, x) for lr, x in zip(lrs, g, strict=True)]
    nested = jax.jit(jax.vmap(jax.vmap(step)))(lrs.reshape(2, 2), g.reshape(2, 2, 2))
    for got in (jax.jit(jax.vmap(step))(lrs, g),
                jax.tree.map(lambda a: a.reshape(4, *a.shape[2:]), nested)):
        for i, (u, kicks) in enumerate(want):
            np.testing.assert_array_equal(np.asarray(got[0][i]), np.asarray(u))
            assert int(got[1][i]) == int(kicks)
    # one gradient for every point (the branch's predicate is not batched), and a kick
    # size per point (traced, as inject_hyperparams makes it)
    for i in range(4):
        got = jax.jit(jax.vmap(step, in_axes=(0, None)))(lrs, g[i])
        for j in range(4):
            np.testing.assert_array_equal(np.asarray(got[0][j]),
                                          np.asarray(jax.jit(step)(lrs[j], g[i])[0]))
    kicked = optax.inject_hyperparams(normalized_gd)(lr=0.1, kick=1e-3)

    def kick_step(kick, x):
        state = kicked.init(x)
        state.hyperparams["kick"] = kick
        return kicked.update(x, state)[0]

    kicks = jnp.array([1e-3, 2e-3, 3e-3, 4e-3], jnp.float32)
    got = jax.jit(jax.vmap(kick_step))(kicks, g)
    for j in range(4):
        np.testing.assert_array_equal(np.asarray(got[j]),
                                      np.asarray(jax.jit(kick_step)(kicks[j], g[j])))
    if float(scales[3]) == 0.0:  # a kick of norm `kick`: d|u|/dkick = 1
        d = jax.grad(lambda k: jnp.linalg.norm(kick_step(k, g[3])))(jnp.float32(2e-3))
        np.testing.assert_allclose(float(d), 1.0, rtol=1e-5)
    # d/dg of -lr g/||g|| at g = (3, 4)·s: -lr (I - u u^T)/||g||, applied to (1, 1)
    x = jnp.array([3.0, 4.0], jnp.float32)
    unit = np.array([0.6, 0.8])
    want_t = -0.1 * (np.ones(2) - unit * unit.sum()) / 5.0
    t = jax.jvp(lambda x: opt.update(x, opt.init(x))[0], (x,), (jnp.ones_like(x),))[1]
    np.testing.assert_allclose(np.asarray(t), want_t, rtol=1e-5)
    grad = jax.grad(lambda x: opt.update(x, opt.init(x))[0].sum())(x)
    np.testing.assert_allclose(np.asarray(grad), want_t, rtol=1e-5)  # symmetric Jacobian
    vgrad = jax.vmap(jax.grad(lambda x: opt.update(x, opt.init(x))[0].sum()))(
        jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(np.asarray(vgrad), [want_t, want_t / 2], rtol=1e-5)


# floor 0.5: ||g|| = 0.6 is above it although ||g||^2 = 0.36 is below the floor itself (the
# test of the square must use floor^2), 0.4 at or below it; in the scaled norm 6e-31 and
# 4e-31 against 5e-31 (6e-31 = 0.76 * 2^-100: a test off by the mantissa would kick)
@pytest.mark.parametrize(("floor", "above", "below"), [(0.5, 0.6, 0.4), (5e-31, 6e-31, 4e-31)])
def test_normalized_gd_kicks_at_or_below_min_grad_norm(floor, above, below):
    opt = normalized_gd(0.1, min_grad_norm=floor, kick=1e-3)
    g = jnp.array([below, 0.0], jnp.float32)
    u, st = opt.update(g, opt.init(g))
    assert int(st.num_kicks) == 1
    np.testing.assert_allclose(float(jnp.linalg.norm(u)), 1e-3, rtol=1e-6)
    g = jnp.array([above, 0.0], jnp.float32)
    u, st = opt.update(g, opt.init(g))
    assert int(st.num_kicks) == 0
    np.testing.assert_allclose(np.asarray(u), [-0.1, 0.0], rtol=1e-6)


@pytest.mark.parametrize("make", ["normalized_gd", "sqrt_loss_gd"])
def test_nan_gradient_is_not_hidden_by_a_kick(make):
    opt = normalized_gd(0.1) if make == "normalized_gd" else sqrt_loss_gd(0.1)
    g = jnp.array([1.0, jnp.nan, 0.0])
    u, st = opt.update(g, opt.init(g), value=1.0)
    assert bool(jnp.isnan(u[1])) and int(st.num_kicks) == 0  # the nan reaches the update
    if make == "sqrt_loss_gd":
        u, st = opt.update(jnp.ones(3), opt.init(g), value=jnp.nan)
        assert bool(jnp.all(jnp.isnan(u))) and int(st.num_kicks) == 0


@pytest.mark.parametrize("n", [3, 5003])
def test_nan_in_a_zero_gradient_is_not_kicked(n):
    """A gradient of zeros with one nan: a nan step, not a kick. In a leaf of 4096 or more
    entries XLA:CPU's vectorised max drops the nan, so the largest |entry| reads 0: the check
    must not rest on it."""
    opt = normalized_gd(0.1)
    g = jnp.zeros(n, jnp.float32).at[n // 2].set(jnp.nan)
    u, st = jax.jit(opt.update)(g, opt.init(g))
    assert int(st.num_kicks) == 0 and bool(jnp.isnan(u[n // 2]))


@pytest.mark.parametrize("make", [gd, normalized_gd, sqrt_loss_gd])
@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0.0, -1.0])
def test_bad_lr_is_refused_before_tracing(make, lr):
    with pytest.raises(ValueError, match="lr must be"):
        make(lr)


def test_other_hyperparameters_are_validated():
    with pytest.raises(ValueError, match="kick must be positive"):
        normalized_gd(0.1, kick=0.0)
    with pytest.raises(ValueError, match="min_grad_norm must be finite"):
        normalized_gd(0.1, min_grad_norm=float("inf"))
    with pytest.raises(ValueError, match="loss_min must be finite"):
        sqrt_loss_gd(0.1, loss_min=float("-inf"))
    with pytest.raises(TypeError, match="lr must be a number"):
        gd("0.1")
    with pytest.raises(TypeError, match="seed must be an int"):
        normalized_gd(0.1, seed=1.5)
