r"""Processes stepped beside the optimizer (arXiv 2410.24206): discrete, midpoint, stable,
central, from one initialization, recorded under the metrics' own names.

The toy $L = -cx + \tfrac12(a + x)y^2$: at $y = 0$ the gradient is $(-c, 0)$, the sharpness
$a + x$; gradient flow raises it at rate $\eta c$ without end, the central flow holds it at
$2/\eta$ from $t^* = (2/\eta - a - x_0)/(\eta c)$ on with $\sigma^2 = 2c$.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow import Config, ConfigError, load_run, run_experiment
from eosflow.flows import central_flow
from eosflow.problems import Problem
from eosflow.runner import coerce

A, C, LR = 1.0, 0.5, 0.1


def toy_loss(w):
    return -C * w[0] + 0.5 * (A + w[0]) * w[1] ** 2


def _config(**kw):
    base = dict(name="p", problem="toy_a", dataset="none", dtype="float64", optimizer="gd",
                lr=LR, steps=40, chunk_steps=40, eig_every=1, eig_tol=1e-10,
                processes=("discrete", "midpoint", "stable", "central"), divergence_factor=None)
    return Config(**{**base, **kw})


def _run(tmp_path, x0, config=None, **kw):
    problem = Problem(toy_loss, jnp.asarray(x0, jnp.float64))
    coords = lambda w, row: {"w0": w[0], "w1": w[1]}  # the discrete iterates, for the oracle
    with jax.enable_x64(True):
        return run_experiment(config or _config(), tmp_path, problem=problem,
                              metrics_fn=coords, progress=False, **kw)


def test_central_process_equals_central_flow_and_its_closed_form(tmp_path):
    x0 = 17.0  # onset at t* = (20 - 1 - 17) / 0.05 = 40
    config = _config(steps=100, chunk_steps=50)
    _run(tmp_path / "r", [x0, 0.0], config)
    cen = load_run(tmp_path / "r").processes["central"]
    with jax.enable_x64(True):
        flow = central_flow(toy_loss, jnp.array([x0, 0.0]), lr=LR, num_steps=100,
                            tol=1e-10, substeps=config.central_substeps)
    np.testing.assert_array_equal(cen["step"], np.arange(100))
    np.testing.assert_allclose(cen["loss"], flow.metrics.loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cen["predicted_loss"], flow.metrics.predicted_loss, rtol=1e-12)
    np.testing.assert_allclose(cen["sigma2"], flow.metrics.sigma2, atol=1e-12)
    np.testing.assert_allclose(cen["lambda_1"], flow.metrics.eigenvalues[:, 0], rtol=1e-12)
    # the closed form: pinned at 2/eta after the onset, sigma^2 = 2c, L + sigma^2 / eta
    x_star = 2 / LR - A
    after = cen["step"] > 41
    np.testing.assert_allclose(cen["lambda_1"][after], 2 / LR, rtol=1e-11)
    np.testing.assert_allclose(cen["sigma2"][after], 2 * C, rtol=1e-11)
    np.testing.assert_allclose(cen["predicted_loss"][after], -C * x_star + 2 * C / LR,
                               rtol=1e-11)
    np.testing.assert_allclose(cen["loss"][after], -C * x_star, rtol=1e-11)


def test_stable_process_is_gradient_flow(tmp_path):
    """At y = 0 gradient flow is x(t) = x_0 + eta c t (Euler is exact: the gradient is
    constant), its loss -c x(t), its sharpness a + x(t), past 2/eta with no EoS."""
    x0 = 17.0
    _run(tmp_path / "r", [x0, 0.0], _config(steps=60, chunk_steps=60))
    st = load_run(tmp_path / "r").processes["stable"]
    x = x0 + LR * C * st["step"]
    np.testing.assert_allclose(st["loss"], -C * x, rtol=1e-12)
    np.testing.assert_allclose(st["grad_norm"], C, rtol=1e-12)
    np.testing.assert_allclose(st["lambda_1"], A + x, rtol=1e-9)
    assert st["lambda_1"][-1] > 2 / LR


def test_midpoint_is_the_formula_on_the_saved_iterates(tmp_path):
    r"""GD oscillates in y past the edge; the midpoint row t is L at
    $(w_{t-1} + 2w_t + w_{t+1})/4$ of the discrete iterates, nan at t = 0."""
    _run(tmp_path / "r", [18.5, 0.3], _config(steps=30, chunk_steps=15))
    run = load_run(tmp_path / "r")
    w = np.stack([run.metrics["w0"], run.metrics["w1"]], axis=1)
    mid = run.processes["midpoint"]
    assert np.isnan(mid["loss"][0]) and np.isnan(mid["grad_norm"][0])
    wm = 0.25 * (w[:-2] + 2 * w[1:-1] + w[2:])
    with jax.enable_x64(True):
        expect = np.array([toy_loss(jnp.asarray(x)) for x in wm])
        gnorm = np.array([np.linalg.norm(jax.grad(toy_loss)(jnp.asarray(x))) for x in wm])
    np.testing.assert_allclose(mid["loss"][1:-1], expect, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(mid["grad_norm"][1:-1], gnorm, rtol=1e-13)
    cen = run.processes["central"]
    dist = [np.linalg.norm(run.processes["discrete"]["w0"][0] - 18.5)]
    assert dist == [0.0]  # one initialization
    assert np.isnan(cen["dist_to_midpoint"][0]) and np.all(cen["dist_to_midpoint"][1:] >= 0)
    assert set(run.processes) == {"discrete", "midpoint", "stable", "central"}
    assert "central.loss" not in run.processes["discrete"]


# GD's case is slow (CI's 15 minutes; each case compiles three runs, ~35 s): RMSProp's
# process state has every field GD's has (w_{t-1}, the stable weights and warm start, the
# central flow's weights, warm start and X) plus the second moments of both flows
@pytest.mark.parametrize("optimizer, lr, steps", [
    pytest.param("gd", 0.5, 20, marks=pytest.mark.slow), ("rmsprop", 0.01, 8)])
def test_resume_with_processes_is_bit_for_bit(tmp_path, optimizer, lr, steps):
    """The processes' state (RMSProp's nu too) is in the checkpoint."""
    config = Config(name="r", num_examples=40, widths=(6,), lr=lr, steps=steps,
                    chunk_steps=steps // 2, eig_every=3, dtype="float64", eval_every=None,
                    optimizer=optimizer, num_eigs=2,
                    processes=("discrete", "midpoint", "stable", "central"))
    straight = run_experiment(config, tmp_path / "a", progress=False).metrics
    run_experiment(config.replace(steps=steps // 2), tmp_path / "b", progress=False)
    resumed = run_experiment(config, tmp_path / "b", resume=True, progress=False).metrics
    lam = "precond_lambda_2" if optimizer == "rmsprop" else "lambda_2"
    assert "central.predicted_loss" in straight and f"central.{lam}" in straight
    assert "stable.lambda_2" in straight
    assert set(resumed) == set(straight)
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_rmsprop_processes_are_rmsprops_flows(tmp_path, bias_correction):
    """optimizer rmsprop: the central process is central_flow(optimizer="rmsprop") from
    nu(0) = (1 - decay) grad L(w_0)^2, its eigenvalues written as precond_lambda_1; the stable
    process at y = 0 is x' = lr c / sqrt(nu_x + eps), nu_x' = -ln(decay) (c^2 - nu_x) in
    Euler steps (nu_y stays 0), in closed form for nu_x. With bias correction the flows start
    from nu_hat(0) = grad L(w_0)^2 and nu_hat's rate is -ln(decay) / (1 - decay^(t + 1)):
    the stable process from y = 0.5 is those Euler steps written out in NumPy."""
    from eosflow.optim import RMSPROP_EPS

    config = _config(optimizer="rmsprop", lr=LR, steps=30, chunk_steps=30, decay=0.9,
                     bias_correction=bias_correction)
    x0, y0 = 4.0, 0.5
    _run(tmp_path / "r", [x0, y0], config)
    run = load_run(tmp_path / "r")
    assert f"'bias_correction': {bias_correction}" in run.metadata["preconditioned_sharpness"]
    cen = run.processes["central"]
    with jax.enable_x64(True):
        flow = central_flow(toy_loss, jnp.array([x0, y0]), lr=LR, num_steps=30, tol=1e-10,
                            substeps=config.central_substeps, optimizer="rmsprop", decay=0.9,
                            eps=RMSPROP_EPS, bias_correction=bias_correction)
    np.testing.assert_allclose(cen["predicted_loss"], flow.metrics.predicted_loss, rtol=1e-12)
    np.testing.assert_allclose(cen["precond_lambda_1"], flow.metrics.eigenvalues[:, 0],
                               rtol=1e-12)
    np.testing.assert_allclose(cen["sigma2"], flow.metrics.sigma2, atol=1e-14)
    assert "lambda_1" not in cen and np.max(cen["sigma2"]) > 0  # it reached the edge

    n, dt, kappa = config.central_substeps, 1 / config.central_substeps, -np.log(0.9)
    if bias_correction:  # from (x0, y0): the gradient (-c + y^2/2, (a + x) y)
        w = np.array([x0, y0])
        grad = lambda w: np.array([-C + w[1] ** 2 / 2, (A + w[0]) * w[1]])
        nu, want = grad(w) ** 2, []
        for i in range(30 * n):
            if i % n == 0:
                want.append(toy_loss(w))
            g, rate = grad(w), kappa / (1 - 0.9 ** (i * dt + 1))
            w, nu = w - LR * dt * g / np.sqrt(nu + RMSPROP_EPS), nu + dt * rate * (g * g - nu)
        np.testing.assert_allclose(run.processes["stable"]["loss"], want, rtol=1e-12)
        return
    _run(tmp_path / "s", [x0, 0.0], config)
    st = load_run(tmp_path / "s").processes["stable"]
    nu = C**2 - (C**2 - 0.1 * C**2) * (1 - dt * kappa) ** np.arange(30 * n)
    x = x0 + np.concatenate([[0.0], np.cumsum(LR * dt * C / np.sqrt(nu + RMSPROP_EPS))])
    np.testing.assert_allclose(st["loss"], -C * x[: 30 * n : n], rtol=1e-12)


@pytest.mark.parametrize("kw, match", [
    (dict(optimizer="adam", processes=("discrete", "central")), "processes: 'central'.*adam"),
    (dict(optimizer="momentum", processes=("discrete", "stable")), "processes: 'stable'"),
    (dict(processes=("central",)), "processes: .*'discrete'"),
    (dict(processes=("discrete", "midpoint", "midpoint")), "processes: each at most once"),
    (dict(processes=("discrete", "centre")), "processes: unknown value 'centre'"),
    (dict(processes=("discrete", "midpoint"), warmup_steps=5, steps=10), "processes: .*warmup"),
    (dict(processes=("discrete", "central"), batch_size=8), "processes: .*batch_size"),
    (dict(processes=("discrete", "midpoint"), devices=2), "processes: .*one device"),
    (dict(central_substeps=0), "central_substeps: must be positive"),
])
def test_bad_processes_are_refused_naming_the_field(kw, match):
    with pytest.raises(ConfigError, match=match):
        Config(**kw)


def test_processes_from_the_command_line_string():
    config = Config().replace(processes=coerce("processes", "discrete,midpoint,central"))
    assert config.processes == ("discrete", "midpoint", "central")
    assert Config.from_dict(config.to_dict()).processes == config.processes


def test_processes_refused_in_a_sweep(tmp_path):
    config = _config(steps=4, chunk_steps=4, processes=("discrete", "midpoint"))
    with pytest.raises(ConfigError, match="processes: 'midpoint' is not stepped in a sweep"):
        _run(tmp_path / "s", [17.0, 0.0], config, sweep={"lr": [0.1, 0.2]})
