"""Flows against closed forms, convergence slopes and negative controls (docs/theory.md)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.experiments import claim_quadratic, fit_slope
from eosflow.experiments import tracking as _tracking
from eosflow.flows import (
    FlowRESULTS,
    gradient_flow,
    harmonic_sum,
    limiting_flow,
    phi_diagnostics,
    project,
    project_solve,
    reprojection_flow,
    sharpness_and_gradient,
    stableness,
    tangent_project,
    tangent_projector,
)
from eosflow.problems import toy_a, toy_b, toy_c


@pytest.mark.parametrize("make", [toy_a, toy_c])
@pytest.mark.parametrize("method", ["normalized_gd", "sqrt_loss_gd"])
def test_limiting_flow_matches_closed_form(make, method):
    toy = make()
    flow = limiting_flow(toy.loss_fn, toy.x0, method=method, t_end=3.0, num_points=7)
    assert flow.result == FlowRESULTS.successful
    exact = toy.flow(method, flow.xs[0], flow.ts)
    np.testing.assert_allclose(flow.xs, exact, atol=1e-6)
    lam = jax.vmap(toy.sharpness_on_manifold)(flow.xs)
    np.testing.assert_allclose(flow.sharpness, lam, rtol=1e-8)
    assert np.all(np.diff(np.asarray(flow.sharpness)) < 0)  # lambda_1 falls along the flow
    ts, xs = flow  # "returns times and points"
    assert ts.shape == (7,) and xs.shape == (7, toy.x0.size)


@pytest.mark.parametrize(
    ("make", "method", "t_end"),
    [(lambda: toy_a((14.7, -3.0)), "normalized_gd", 40.0), (toy_a, "sqrt_loss_gd", 3.0),
     (toy_b, "normalized_gd", 6.0), (toy_b, "sqrt_loss_gd", 6.0),
     (toy_c, "normalized_gd", 3.0), (toy_c, "sqrt_loss_gd", 3.0)],
)
def test_tracking_error_is_first_order_in_eta(make, method, t_end):
    toy = make()
    smallest = (t_end / 40_000) ** 0.5
    etas = [4 * smallest, 2 * smallest, smallest]
    _, errors, _ = _tracking(toy, method, etas, t_end)
    assert fit_slope(etas, errors) >= 0.8, errors


@pytest.mark.parametrize(("method", "wrong"), [("normalized_gd", dict(constant=0.125)),
                                               ("normalized_gd", dict(log=False)),
                                               ("sqrt_loss_gd", dict(log=True))])
def test_negative_controls_fail_the_slope_check(method, wrong):
    toy = toy_a((14.7, -3.0)) if method == "normalized_gd" else toy_a()
    t_end = 40.0 if method == "normalized_gd" else 3.0
    smallest = (t_end / 40_000) ** 0.5
    etas = [4 * smallest, 2 * smallest, smallest]
    _, errors, _ = _tracking(toy, method, etas, t_end, **wrong)
    assert fit_slope(etas, errors) < 0.8, errors


def test_theorem_3_1_on_random_quadratics():
    checks = []
    claim_quadratic(checks)
    assert len(checks) == 8
    assert all(c.passed for c in checks), [c.row() for c in checks if not c.passed]


def test_reprojection_flow_converges_to_the_ode_flow():
    toy = toy_c()
    ode = limiting_flow(toy.loss_fn, toy.x0, method="sqrt_loss_gd", t_end=2.0, num_points=2)
    errs = []
    for h in (0.025, 0.0125):
        rp = reprojection_flow(toy.loss_fn, toy.x0, method="sqrt_loss_gd", step_size=h,
                               num_steps=round(2.0 / (8 * h)), step_rtol=None)
        np.testing.assert_allclose(rp.ts[-1], 2.0)
        errs.append(float(jnp.linalg.norm(rp.xs[-1] - ode.xs[-1])))
    assert errs[1] < errs[0] < 0.05
    assert 1.6 < errs[0] / errs[1] < 2.5  # first order in h


@pytest.mark.parametrize(("method", "t_end"), [("sqrt_loss_gd", 2.0), ("normalized_gd", 8.0)])
def test_reprojection_step_control_error_falls_with_step_rtol(method, t_end):
    """The step control makes the error a function of ``step_rtol``, not of ``h``: one step
    over the whole flow on toy C (closed-form flows, integrated by ``limiting_flow``) ends
    far from the ODE flow unsubdivided (normalized GD's jumps to the other branch of Γ);
    with the control the error falls with ``step_rtol`` (first order for GD on sqrt L; for
    normalized GD, whose flow settles at the balanced point, less regularly) while the
    substeps grow."""
    toy = toy_c()
    ode = limiting_flow(toy.loss_fn, toy.x0, method=method, t_end=t_end, num_points=2)
    c = 1 / 8 if method == "sqrt_loss_gd" else 1 / 4

    def run(rtol):
        rp = reprojection_flow(toy.loss_fn, toy.x0, method=method, step_size=t_end * c,
                               num_steps=1, step_rtol=rtol)
        np.testing.assert_allclose(rp.ts[-1], t_end)
        assert int(rp.unresolved.sum()) == 0  # a smooth flow: every substep resolved
        return float(jnp.linalg.norm(rp.xs[-1] - ode.xs[-1])), int(rp.substeps[-1])

    plain, n_plain = run(None)
    rtols = [0.1, 0.03, 0.01]
    errs, subs = zip(*map(run, rtols), strict=True)
    assert n_plain == 1 and plain > 0.1
    assert errs[0] < plain / 4 and errs[0] > errs[1] > errs[2], errs
    if method == "sqrt_loss_gd":
        assert 0.8 < fit_slope(rtols, errs) < 1.2, errs
    assert subs[0] < subs[1] < subs[2], subs


def test_reprojection_fails_where_lambda_1_rises_at_the_finest_substep():
    """Toy A, GD on sqrt L: a step of h = 1.5 from x = 2 jumps to x = -10 and raises
    lambda_1 from 10 to 202, more than its first-order fall (96) could explain: without
    halvings to fall back on, the flow fails and says so. (A step of 0.6, to x = -2.8, raises
    it to 17.7, less than its first-order fall: accepted, and counted as unresolved.)"""
    toy = toy_a((2.0, 0.0))
    flow = reprojection_flow(toy.loss_fn, toy.x0, method="sqrt_loss_gd", step_size=1.5,
                             num_steps=2, max_halvings=0, throw=False)
    assert flow.status == "failed"
    assert flow.reason.startswith("re-projection step 1 of 2") and (
        "lambda_1 rose from 10 to 202 on a substep of h/1" in flow.reason), flow.reason
    kwargs = dict(method="sqrt_loss_gd", step_size=0.6, num_steps=2)
    coarse = reprojection_flow(toy.loss_fn, toy.x0, max_halvings=0, **kwargs)
    np.testing.assert_allclose(coarse.xs[1, 0], -2.8)
    np.testing.assert_array_equal(coarse.unresolved, [0, 1, 1])
    assert np.isnan(np.asarray(flow.sharpness[1:])).all()
    # with the default halvings it follows the flow x = 2 exp(-tau / 2) down to tau = 4.8
    ok = reprojection_flow(toy.loss_fn, toy.x0, **dict(kwargs, num_steps=1))
    exact = 2.0 * np.exp(-float(ok.ts[-1]) / 2)
    assert abs(np.log(float(ok.xs[-1, 0]) / exact)) < 0.1 * abs(np.log(exact / 2.0))


def test_reprojection_across_an_eigenvalue_crossing_counts_unresolved_substeps():
    """L = (1 + x^2) y^2 + (1 + (x - 1)^2) z^2: on Γ = {y = z = 0} lambda_1 =
    2 max(1 + x^2, 1 + (x - 1)^2), a kink at x = 1/2. GD on sqrt L's flow is x = 3 e^{-tau/2}
    until the kink (tau = 2 ln 6 = 3.58), then stays there (lambda_1 = 2.5). The control
    follows the smooth part with resolved substeps and zig-zags across the kink at the
    finest length, where it counts the substeps as unresolved instead of failing."""
    def loss(z):
        return (1 + z[0] ** 2) * z[1] ** 2 + (1 + (z[0] - 1) ** 2) * z[2] ** 2

    flow = reprojection_flow(loss, jnp.array([3.0, 0.0, 0.0]), method="sqrt_loss_gd",
                             step_size=0.125, num_steps=6)
    ts, x = np.asarray(flow.ts), np.asarray(flow.xs[:, 0])
    before = ts < 2 * np.log(6)
    np.testing.assert_allclose(x[before], 3 * np.exp(-ts[before] / 2), rtol=0.06)
    assert np.all(np.asarray(flow.unresolved)[before] == 0)
    assert np.all(np.asarray(flow.unresolved)[-2:] > 0)
    np.testing.assert_allclose(np.asarray(flow.sharpness)[-2:], 2.5, rtol=1e-2)


@pytest.mark.parametrize(("name", "value", "error"), [
    ("step_rtol", 0, ValueError), ("step_rtol", 1.5, ValueError),
    ("step_rtol", True, TypeError), ("step_rtol", "0.1", TypeError),
    ("step_atol", -1e-3, ValueError), ("step_atol", "1e-3", TypeError),
])
def test_reprojection_step_control_options_are_checked(name, value, error):
    toy = toy_a((2.0, 0.0))
    with pytest.raises(error, match=f"^{name} must be a number in .* got {value!r}"):
        reprojection_flow(toy.loss_fn, toy.x0, method="sqrt_loss_gd", step_size=0.1,
                          num_steps=1, **{name: value})


def test_project_reaches_its_gradient_tolerance():
    toy = toy_b()
    res = project_solve(toy.loss_fn, toy.x0, gtol=1e-10)
    assert res.result == FlowRESULTS.successful
    assert float(jnp.linalg.norm(jax.grad(toy.loss_fn)(res.value))) <= 1e-10
    # Euler with a constant step is exactly GD with that step ("many small GD steps")
    gd = project(toy.loss_fn, toy.x0, solver=diffrax.Euler(), dt0=0.01,
                 stepsize_controller=diffrax.ConstantStepSize(), gtol=1e-9, max_steps=10**6)

    def body(x):
        return x - 0.01 * jax.grad(toy.loss_fn)(x)

    by_hand = jax.lax.while_loop(
        lambda x: jnp.linalg.norm(jax.grad(toy.loss_fn)(x)) > 1e-9, body, toy.x0
    )
    np.testing.assert_allclose(gd, by_hand, rtol=1e-12, atol=1e-12)


def test_gd_with_small_steps_follows_gradient_flow():
    toy = toy_c()
    eta, n = 1e-3, 2000
    # the 2000 GD steps in one compiled loop (stepped from Python, each jax.grad call would
    # trace and dispatch anew: ~25 s of a CI run)
    step = lambda _, x: x - eta * jax.grad(toy.loss_fn)(x)
    x = jax.jit(lambda x0: jax.lax.fori_loop(0, n, step, x0))(toy.x0)
    _, xs = gradient_flow(toy.loss_fn, toy.x0, eta * n, num_points=2)
    np.testing.assert_allclose(x, xs[-1], atol=5e-3)


def test_tangent_projection_on_toy_c():
    toy = toy_c()
    x = jnp.array([2.0, 0.5])  # on Γ = {ab = 1}; T_xΓ is spanned by (a, -b)
    t = jnp.array([2.0, -0.5]) / jnp.sqrt(4.25)
    np.testing.assert_allclose(tangent_projector(toy.loss_fn, x), jnp.outer(t, t), atol=1e-12)
    v = jnp.array([0.3, -1.1])
    np.testing.assert_allclose(tangent_project(toy.loss_fn, x, v), t * (t @ v), atol=1e-12)
    np.testing.assert_allclose(tangent_project(toy.loss_fn, x, v, method="cg"), t * (t @ v),
                               atol=1e-8)


def test_sharpness_gradient_matches_finite_differences():
    toy = toy_b()
    x = jnp.array([1.3, 0.2, -0.1])
    lam, grad, _ = sharpness_and_gradient(toy.loss_fn, x)
    top = lambda z: jnp.linalg.eigvalsh(jax.hessian(toy.loss_fn)(z))[-1]
    np.testing.assert_allclose(lam, top(x), rtol=1e-12)
    h = 1e-6
    fd = jnp.array([(top(x + h * e) - top(x - h * e)) / (2 * h) for e in jnp.eye(3)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_diagnostics_on_toy_a_and_a_quadratic():
    toy = toy_a()
    x = jnp.array([2.0, 0.01])
    d = phi_diagnostics(toy.loss_fn, x)
    assert bool(d["phi_ok"])
    np.testing.assert_allclose(abs(float(d["a_t"])), 0.01, rtol=1e-3)  # v1 = e_y
    np.testing.assert_allclose(float(d["theta"]), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(d["lambda_phi"]), toy.sharpness_on_manifold(d["phi"]),
                               rtol=1e-8)
    quad = lambda z: 0.5 * (3.0 * z[0] ** 2 + z[1] ** 2)  # lambda_1 = 3 everywhere
    np.testing.assert_allclose(stableness(quad, jnp.array([1.0, 1.0]), 0.4), 1.2, rtol=1e-10)
    np.testing.assert_allclose(harmonic_sum(jnp.array([4.0, 4 / 3, 4.0])), [1.0, 1.0])


def test_bad_inputs_are_named():
    toy = toy_a()
    with pytest.raises(ValueError, match="method must be one of"):
        limiting_flow(toy.loss_fn, toy.x0, method="gd", t_end=1.0)
    with pytest.raises(ValueError, match="t_end must be positive"):
        limiting_flow(toy.loss_fn, toy.x0, method="normalized_gd", t_end=0.0)
    tie = lambda z: (1 + z[0] ** 2) * (z[1] ** 2 + z[2] ** 2)  # lambda_1 = lambda_2 on Γ
    with pytest.raises(ValueError, match="no eigen-gap"):
        limiting_flow(tie, jnp.array([1.0, 0.1, 0.1]), method="normalized_gd", t_end=1.0)
    runaway = lambda z: z[1] ** 2 - z[0] ** 2  # unbounded below: no basin at all
    with pytest.raises(ValueError, match="did not reach a minimiser"):
        limiting_flow(runaway, jnp.array([0.5, 0.5]), method="sqrt_loss_gd", t_end=1.0)
    res = project_solve(runaway, jnp.array([0.5, 0.5]), throw=False)
    assert res.result != FlowRESULTS.successful
