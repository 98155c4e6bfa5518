"""Φ against closed forms, a converged long gradient flow, and its failure reports."""

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

from eosflow.flows import (
    FlowRESULTS,
    ProjectionError,
    cycle_start,
    distance_estimate,
    limiting_flow,
    phase_one_distance,
    prediction_start,
    project,
    project_solve,
    reprojection_flow,
)
from eosflow.problems import toy_a, toy_b, toy_c


def _phi_a(x, y):
    # (1 + x^2) / x dx = y dy along the flow: log|x| + x^2/2 - y^2/2 is conserved
    c = np.log(abs(x)) + x * x / 2 - y * y / 2
    u = brentq(lambda u: np.log(u) + u * u / 2 - c, 1e-12, abs(x) + 1)
    return np.array([np.sign(x) * u, 0.0])


def _phi_b(x, y1, y2):
    # on y2 = 0 toy B is toy A slowed by 1/2; on y1 = 0, x + 0.1 x^2 - 0.05 y2^2 is conserved
    if y2 == 0:
        return np.array([_phi_a(x, y1)[0], 0.0, 0.0])
    assert y1 == 0
    c = x + 0.1 * x * x - 0.05 * y2 * y2
    return np.array([brentq(lambda u: u + 0.1 * u * u - c, -4.9, x + 1), 0.0, 0.0])


def _phi_c(a, b):
    # a^2 - b^2 is conserved and ab = 1 on Γ
    c = a * a - b * b
    a2 = (c + np.sqrt(c * c + 4)) / 2
    return np.sign(a) * np.array([np.sqrt(a2), 1 / np.sqrt(a2)])


@pytest.mark.parametrize(
    ("toy", "start", "exact"),
    [(toy_a, (1.0, 0.3), lambda z: _phi_a(*z)), (toy_a, (-2.0, 0.7), lambda z: _phi_a(*z)),
     (toy_b, (1.5, 0.4, 0.0), lambda z: _phi_b(*z)), (toy_b, (1.5, 0.0, 0.6), lambda z: _phi_b(*z)),
     (toy_c, (2.0, 0.4), lambda z: _phi_c(*z)), (toy_c, (-0.3, -1.5), lambda z: _phi_c(*z))],
)
def test_phi_matches_closed_forms(toy, start, exact):
    x = jnp.asarray(start, jnp.float64)
    res = project_solve(toy().loss_fn, x)
    assert res.result == FlowRESULTS.successful
    np.testing.assert_allclose(res.value, exact(np.asarray(start)), atol=1e-6)
    np.testing.assert_allclose(res.distance, np.linalg.norm(res.value - x), rtol=1e-12)
    assert float(res.grad_norm) <= 2.5e-9 and float(res.correction) == 0.0


def test_gauss_newton_error_is_second_order_in_the_distance():
    toy = toy_c()
    residual = lambda z: z[:1] * z[1:] - 1  # L = 0.5 r^2
    on = jnp.array([2.0, 0.5])
    normal = jnp.array([0.5, 2.0]) / jnp.sqrt(4.25)
    ds, errs = [0.04, 0.02, 0.01], []
    for d in ds:
        x = on + d * (normal + jnp.array([0.6, -0.2]))
        res = project_solve(toy.loss_fn, x, residual_fn=residual, method="gauss_newton")
        assert res.result == FlowRESULTS.successful and int(res.num_gn_steps) > 0
        errs.append(float(jnp.linalg.norm(res.value - _phi_c(*np.asarray(x)))))
        np.testing.assert_allclose(res.correction, res.distance)
    slope = np.polyfit(np.log(ds), np.log(errs), 1)[0]
    assert 1.8 < slope < 2.2, errs


def _mlp_problem():
    """A 3-40-2 tanh MLP (242 parameters) on 6 points, MSE without the 1/2, float64; its
    smallest nonzero normal curvature is about 0.02, so a long gradient flow converges."""
    kx, ky, kp = jax.random.split(jax.random.key(3), 3)
    X = jax.random.normal(kx, (6, 3), jnp.float64)
    Y = jax.random.normal(ky, (6, 2), jnp.float64)
    k1, k2 = jax.random.split(kp)
    params = {"W1": jax.random.normal(k1, (3, 40), jnp.float64) / np.sqrt(3),
              "b1": jnp.zeros(40, jnp.float64),
              "W2": jax.random.normal(k2, (40, 2), jnp.float64) / np.sqrt(40),
              "b2": jnp.zeros(2, jnp.float64)}

    def residual(p):
        out = jnp.tanh(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return jnp.sqrt(2 / 6) * (out - Y)

    def loss(p):
        out = jnp.tanh(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return jnp.mean(jnp.sum((out - Y) ** 2, -1))

    return loss, residual, params


def _flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


@pytest.mark.slow  # issue 14's accuracy target, measured (~24 s; CI's 15 minutes)
def test_phi_on_a_small_mlp_agrees_with_a_long_gradient_flow():
    loss, residual, params = _mlp_problem()
    # a point of Γ
    on = project_solve(loss, params, residual_fn=residual, method="gauss_newton").value
    direction = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size).reshape(a.shape) + 1.0),
                             on)
    # an O(eta) displacement, eta = 0.01 as in the paper; Gauss-Newton is O(d^2) from Phi,
    # here 1.1e-3 relative at d = 0.02 and half that at d = 0.01
    scale = 0.01 / float(jnp.linalg.norm(_flat(direction)))
    x = jax.tree.map(lambda a, d: a + scale * d, on, direction)
    # the flow's floor is about rtol * |x| * lambda_max ~ 2e-9; with the smallest normal
    # curvature ~0.02 its end point is within ~5e-7 of Phi, far below the 1e-3 tolerance
    oracle = project_solve(loss, x, method="gradient_flow", gtol=1e-8, max_steps=500_000)
    assert oracle.result == FlowRESULTS.successful
    moved = float(jnp.linalg.norm(_flat(oracle.value) - _flat(x)))
    for kwargs in (dict(method="gauss_newton"), dict(max_steps=10)):  # GN alone; flow + GN
        res = project_solve(loss, x, residual_fn=residual, gtol=1e-10, **kwargs)
        assert res.result == FlowRESULTS.successful and int(res.num_gn_steps) > 0
        err = float(jnp.linalg.norm(_flat(res.value) - _flat(oracle.value)))
        assert err <= 1e-3 * moved, (err, moved)
        assert err <= 1e-3 * float(jnp.linalg.norm(_flat(oracle.value)))


def test_failure_is_reported():
    runaway = lambda z: z[1] ** 2 - z[0] ** 2  # unbounded below: no basin
    x = jnp.array([0.5, 0.5])
    with pytest.raises(ProjectionError, match=r"final \|grad L\| = inf > gtol"):
        project_solve(runaway, x)
    with pytest.raises(ProjectionError):
        project(runaway, x)
    res = project_solve(runaway, x, throw=False)
    assert res.result == FlowRESULTS.nonfinite and not bool(res.converged)
    with pytest.raises(Exception, match="did not converge"):  # inside jit: equinox's error
        eqx.filter_jit(lambda z: project_solve(runaway, z).value)(x)
    # a Gauss-Newton budget too small for the tolerance: code, then error naming the norm
    loss, residual, params = _mlp_problem()
    res = project_solve(loss, params, residual_fn=residual, method="gauss_newton", gn_steps=1,
                        throw=False)
    assert res.result == FlowRESULTS.not_converged and int(res.num_gn_steps) == 1
    with pytest.raises(ProjectionError, match=r"final \|grad L\| = [0-9.e+-]+ > gtol = 2.46e-09"):
        project_solve(loss, params, residual_fn=residual, method="gauss_newton", gn_steps=1)


def test_bad_projection_options_are_named():
    loss, residual, params = _mlp_problem()
    with pytest.raises(ValueError, match="needs residual_fn"):
        project_solve(loss, params, method="gauss_newton")
    with pytest.raises(ValueError, match="method must be one of"):
        project_solve(loss, params, method="newton")
    with pytest.raises(ValueError, match=r"0.5 \* \|residual_fn"):
        project_solve(loss, params, residual_fn=lambda p: 2 * residual(p))


def test_reprojection_failure_carries_a_reason():
    toy = toy_c()
    x0 = jnp.array([2.0, 0.5])  # on Γ: the start converges at once
    kwargs = dict(method="sqrt_loss_gd", step_size=0.05, num_steps=3,
                  project_kwargs=dict(max_steps=2))
    flow = reprojection_flow(toy.loss_fn, x0, throw=False, **kwargs)
    assert flow.status == "failed" and flow.result == FlowRESULTS.not_converged
    assert flow.reason.startswith("re-projection step 1 of 3") and "|grad L| =" in flow.reason
    with pytest.raises(ValueError, match="re-projection step 1 of 3"):
        reprojection_flow(toy.loss_fn, x0, **kwargs)
    bad = reprojection_flow(lambda z: z[1] ** 2 - z[0] ** 2, jnp.array([0.5, 0.5]),
                            method="sqrt_loss_gd", step_size=0.1, num_steps=2, throw=False)
    assert bad.status == "failed" and "did not reach a minimiser" in bad.reason
    ok = reprojection_flow(toy.loss_fn, toy.x0, method="sqrt_loss_gd", step_size=0.05,
                           num_steps=4, residual_fn=lambda z: z[:1] * z[1:] - 1)
    cols = ok.columns()
    assert ok.status == "ok" and ok.reason is None
    assert set(cols) == {"tau", "lambda_1", "grad_norm"}
    np.testing.assert_allclose(cols["tau"], np.arange(5) * 0.05 * 8)
    np.testing.assert_allclose(cols["lambda_1"], jax.vmap(toy.sharpness_on_manifold)(ok.xs),
                               rtol=1e-6)
    assert np.all(cols["grad_norm"][1:] <= 2.5e-9)


@pytest.mark.parametrize("method", ["normalized_gd", "sqrt_loss_gd"])
@pytest.mark.parametrize("start", [(1.0, 0.3), (-2.0, -0.7)])
def test_cycle_start_on_toy_a_is_the_symmetric_two_step_cycle(method, start):
    """Toy A (Γ = {y = 0}, v1 = e_y, lambda1 = 2(1 + x^2)): Phi in closed form, displaced by
    ell / 2 along v1 toward the start; from there the method's iterate alternates between
    +-ell/2 across Γ (to O(eta^2)), the cycle phase I would reach."""
    toy, eta = toy_a(), 0.01
    x = jnp.asarray(start)
    r = cycle_start(toy.loss_fn, x, eta, method=method)
    u = _phi_a(*start)[0]
    lam = 2 * (1 + u * u)
    ell = eta if method == "normalized_gd" else eta * np.sqrt(lam / 2)
    np.testing.assert_allclose(r.value, [u, np.sign(start[1]) * ell / 2], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose([r.lambda_1, r.half_width], [lam, ell / 2], rtol=1e-6)
    assert bool(r.projection.converged)
    z = r.value
    for sign in (-1, 1, -1, 1):
        g = jax.grad(toy.loss_fn)(z)
        scale = (eta / jnp.linalg.norm(g) if method == "normalized_gd"
                 else eta / (2 * jnp.sqrt(toy.loss_fn(z))))
        z = z - scale * g
        assert abs(z[1] - sign * np.sign(start[1]) * ell / 2) < 0.01 * ell, (z, sign)
    with pytest.raises(ValueError, match="method must be one of"):
        cycle_start(toy.loss_fn, x, eta, method="gd")
    with pytest.raises(ValueError, match="eta must be positive"):
        cycle_start(toy.loss_fn, x, 0.0)


def test_prediction_start_rule():
    eta = 0.01
    d = [0.3, 0.1, 0.014, 0.02, 0.012, 0.004, 0.011, 0.004]
    assert prediction_start(d, eta) == 4  # first two consecutive steps within 1.5 eta
    assert prediction_start(d, eta, factor=3.0) == 2
    assert prediction_start(d, eta, steps=np.arange(8) * 10 + 100) == 140
    assert prediction_start([0.5, 0.4, np.nan, 0.001], eta) is None
    lam = 50.0  # sqrt L: the scale is eta sqrt(lambda_1 / 2) = 0.05
    assert prediction_start([0.2, 0.06, 0.07, 0.01], eta, method="sqrt_loss_gd",
                            lambda_1=lam) == 1
    np.testing.assert_allclose(phase_one_distance(eta, method="sqrt_loss_gd", lambda_1=lam),
                               0.05)
    with pytest.raises(ValueError, match="needs lambda_1"):
        prediction_start(d, eta, method="sqrt_loss_gd")
    # the estimate |grad L| / lambda_1 is exact on a quadratic aligned with v1
    H = jnp.diag(jnp.array([4.0, 1.0, 0.0]))
    x = jnp.array([0.003, 0.0, 5.0])
    np.testing.assert_allclose(distance_estimate(jnp.linalg.norm(H @ x), 4.0), 0.003)


@pytest.mark.parametrize("loss", ["mse", "mse_nohalf", "mse_mean", "cross_entropy"])
def test_problem_residual_matches_its_loss(loss):
    from eosflow.problems import MLP, gaussian_clusters, supervised_problem

    data = gaussian_clusters(10, 3, 3, seed=1)
    model = MLP(3, 3, [5], "gelu", key=jax.random.key(0))
    problem = supervised_problem(model, data, loss=loss, chunk_size=4)  # 3 chunks, one padded
    if loss == "cross_entropy":
        assert problem.full_residual is None
        return
    r = problem.full_residual(problem.params)
    np.testing.assert_allclose(0.5 * jnp.sum(r**2), problem.full_loss(problem.params),
                               rtol=1e-5)


def test_reprojection_halves_a_step_whose_projection_fails():
    """With three Gauss-Newton steps per projection, the plain scheme (``max_halvings=0``)
    stops at step 2: the move off Γ is too long for the budget. Halving that step's
    substeps (the step control off, ``step_rtol=None``: only failed projections halve)
    finishes the flow, on the same tau grid, within 0.05 of the ODE flow (closed
    form for toy C, integrated by ``limiting_flow``); the plain scheme with a budget that
    suffices ends 0.07 from it at this step, and within 0.05 only at h = 0.025
    (test_flows.py)."""
    toy = toy_c()
    kwargs = dict(method="sqrt_loss_gd", step_size=0.0625, num_steps=4,
                  residual_fn=lambda z: z[:1] * z[1:] - 1,
                  project_kwargs=dict(max_steps=1, gn_steps=3), step_rtol=None)
    plain = reprojection_flow(toy.loss_fn, toy.x0, max_halvings=0, throw=False, **kwargs)
    assert plain.status == "failed" and plain.reason.startswith("re-projection step 2 of 4")
    halved = reprojection_flow(toy.loss_fn, toy.x0, **kwargs)
    assert halved.status == "ok"
    np.testing.assert_allclose(halved.ts, np.arange(5) * 0.0625 * 8)
    ode = limiting_flow(toy.loss_fn, toy.x0, method="sqrt_loss_gd", t_end=2.0, num_points=5)
    assert float(jnp.linalg.norm(halved.xs[-1] - ode.xs[-1])) < 0.05
    with pytest.raises(ValueError, match="max_halvings"):
        reprojection_flow(toy.loss_fn, toy.x0, max_halvings=-1, **kwargs)
