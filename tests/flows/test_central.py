r"""The central flow against closed forms (arXiv 2410.24206).

Toys of the form $L = f(u) + \tfrac12(a + s(u))\,y^\top y$ at $y = 0$: there $\nabla L = (\nabla f,
0)$, the top Hessian eigenvalue is $a + s(u)$ with eigenvectors in the $y$ block (while it
exceeds $\nabla^2 f$), and $\nabla^3L[e_y, e_y] = (\nabla s, 0)$. Gradient flow raises the
sharpness when $\langle\nabla f, \nabla s\rangle < 0$; once $a + s = 2/\eta$ the central flow is
projected gradient flow on $\{s = 2/\eta - a\}$ with
$\sigma^2 = -2\langle\nabla f, \nabla s\rangle / \|\nabla s\|^2$.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.flows import central_flow

LR = 0.1  # 2/lr = 20


def test_onset_then_pinned():
    r"""$L = -cx + \tfrac12(a + x)y^2$: $x(t) = \min(x_0 + \eta c t, 2/\eta - a)$; after the
    onset $\sigma^2 = 2c$ and the predicted loss is $-c x^* + \tfrac12\sigma^2\cdot 2/\eta$."""
    a, c, x0 = 1.0, 0.5, 15.0
    loss = lambda w: -c * w[0] + 0.5 * (a + w[0]) * w[1] ** 2
    flow = central_flow(loss, jnp.array([x0, 0.0]), lr=LR, num_steps=200, save_every=10)
    x_star = 2 / LR - a
    t = np.asarray(flow.saved_steps)
    np.testing.assert_allclose(flow.params[:, 0], np.minimum(x0 + LR * c * t, x_star), atol=1e-11)
    np.testing.assert_allclose(flow.params[:, 1], 0.0)
    steps = np.asarray(flow.steps)
    after = steps > 81  # onset at t = (x* - x0) / (lr c) = 80
    before = steps < 80
    np.testing.assert_allclose(flow.metrics.sigma2[after], 2 * c, rtol=1e-12)
    np.testing.assert_allclose(flow.metrics.sigma2[before], 0.0)
    np.testing.assert_allclose(flow.metrics.eigenvalues[after, 0], 2 / LR, rtol=1e-12)
    np.testing.assert_allclose(flow.metrics.predicted_loss[after], -c * x_star + 2 * c / LR,
                               rtol=1e-12)
    np.testing.assert_allclose(flow.metrics.predicted_loss[before], flow.metrics.loss[before])


def test_projected_flow_with_closed_form_decay():
    r"""$L = -cx + \tfrac b2(z - mx)^2 + \tfrac12(a + x)y^2$ from the edge ($x_0 = 2/\eta - a$):
    $x$ stays, $d = z - mx^*$ decays as $\dot d = -\eta b d$ and
    $\sigma^2 = 2(c + mbd)$. The Euler substeps give $d_n = (1 - \eta b\Delta t)^{n} d_0$
    exactly, and $d_0 e^{-\eta b t}$ to $O(\Delta t)$."""
    a, b, c, m, d0 = 1.0, 2.0, 0.5, 1.0, 3.0
    x_star = 2 / LR - a

    def loss(w):
        x, z, y = w
        return -c * x + 0.5 * b * (z - m * x) ** 2 + 0.5 * (a + x) * y**2

    substeps, n = 4, 60
    flow = central_flow(loss, jnp.array([x_star, m * x_star + d0, 0.0]), lr=LR, num_steps=n,
                        substeps=substeps)
    t = np.asarray(flow.saved_steps)
    d_euler = d0 * (1 - LR * b / substeps) ** (substeps * t)
    np.testing.assert_allclose(flow.params[:, 0], x_star, atol=1e-10)
    np.testing.assert_allclose(flow.params[:, 1] - m * x_star, d_euler, atol=1e-10)
    np.testing.assert_allclose(flow.params[:, 1] - m * x_star, d0 * np.exp(-LR * b * t),
                               atol=0.02 * d0)  # Euler's O(dt): (lr b)^2 t/(2s) e^{-lr b t}
    sig = 2 * (c + m * b * d_euler[:-1])
    np.testing.assert_allclose(flow.metrics.sigma2, sig, rtol=1e-10)


@pytest.mark.parametrize("degenerate", [False, True])
def test_two_critical_eigenvalues(degenerate):
    r"""Two $y$ directions. Decoupled ($x_1, x_2$ with rates $c_1, c_2$): each is pinned at its
    own onset and $X = \operatorname{diag}(2c_1, 2c_2)$. Degenerate (one $x$, $L = -cx +
    \tfrac12(a + x)(y_1^2 + y_2^2)$, a tied critical pair): $x$ is pinned and
    $\operatorname{tr}X = 2c$ (X itself is not unique)."""
    a = 1.0
    if degenerate:
        c = 0.5
        loss = lambda w: -c * w[0] + 0.5 * (a + w[0]) * (w[1] ** 2 + w[2] ** 2)
        w0 = jnp.array([17.0, 0.0, 0.0])
    else:
        c1, c2 = 0.5, 0.25
        loss = lambda w: (-c1 * w[0] - c2 * w[1] + 0.5 * (a + w[0]) * w[2] ** 2
                          + 0.5 * (a + w[1]) * w[3] ** 2)
        w0 = jnp.array([17.0, 16.5, 0.0, 0.0])
    flow = central_flow(loss, w0, lr=LR, num_steps=200, k=2, save_every=5)
    t = np.asarray(flow.saved_steps)
    x_star = 2 / LR - a
    late = np.asarray(flow.steps) > 150
    if degenerate:
        np.testing.assert_allclose(flow.params[:, 0], np.minimum(17 + LR * c * t, x_star),
                                   atol=1e-9)
        np.testing.assert_allclose(flow.metrics.sigma2[late], 2 * c, rtol=1e-8)
    else:
        np.testing.assert_allclose(flow.params[:, 0], np.minimum(17 + LR * c1 * t, x_star),
                                   atol=1e-9)
        np.testing.assert_allclose(flow.params[:, 1], np.minimum(16.5 + LR * c2 * t, x_star),
                                   atol=1e-9)
        X = flow.metrics.X[late]
        np.testing.assert_allclose(jnp.sort(jnp.diagonal(X, axis1=1, axis2=2), -1),
                                   np.broadcast_to([2 * c2, 2 * c1], (X.shape[0], 2)), rtol=1e-8)
        np.testing.assert_allclose(X[:, 0, 1], 0.0, atol=1e-9)
    assert float(flow.metrics.sdcp_residual.max()) < 1e-10


def test_below_the_edge_is_gradient_flow(key):
    """A quadratic with lambda_max = 15 < 2/lr: X = 0 and the flow is gradient flow, i.e.
    w_n = (I - lr A / s)^{s n} w_0 (Euler), and exp(-lr A t) w_0 to O(dt)."""
    D = 60
    Q = jnp.linalg.qr(jax.random.normal(key, (D, D)))[0]
    evals = jnp.linspace(0.5, 15.0, D)
    A = (Q * evals) @ Q.T
    w0 = jax.random.normal(jax.random.fold_in(key, 1), (D,))
    s, n = 4, 20
    flow = central_flow(lambda w: 0.5 * w @ A @ w, w0, lr=LR, num_steps=n, k=2, substeps=s,
                        tol=1e-6)
    assert float(jnp.max(flow.metrics.sigma2)) == 0.0
    M = jnp.linalg.matrix_power(jnp.eye(D) - LR * A / s, s)
    ws = [w0]
    for _ in range(n):
        ws.append(M @ ws[-1])
    np.testing.assert_allclose(flow.params, jnp.stack(ws), atol=1e-12)
    np.testing.assert_allclose(flow.metrics.eigenvalues[:, 0], 15.0, rtol=1e-6)
    exact = jax.vmap(lambda t: (Q * jnp.exp(-LR * evals * t)) @ Q.T @ w0)(flow.saved_steps)
    np.testing.assert_allclose(flow.params, exact, atol=0.1)


def test_bad_input():
    loss = lambda w: jnp.sum(w**2)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        central_flow(loss, jnp.ones(2), lr=0.1, num_steps=2, optimizer="adam")
    with pytest.raises(ValueError, match="lr must be a positive"):
        central_flow(loss, jnp.ones(2), lr=0.0, num_steps=2)
    with pytest.raises(ValueError, match="must be a multiple of save_every"):
        central_flow(loss, jnp.ones(2), lr=0.1, num_steps=5, save_every=2)


@pytest.mark.slow
def test_predicts_gd_loss_on_a_small_mlp():
    """GD at the EoS on a 64-32-10 tanh MLP (300 digits, MSE, lr 0.3, 1000 steps): after the
    central flow's onset, its predicted loss L + <Sigma, H>/2 matches GD's two-step-averaged
    loss on average (measured: 0.5% over t = 224..999, median pointwise 4.7%), and better than
    L(w_central) alone (8.8%). ~4 min on 2 busy CPU cores."""
    from eosflow.problems import MLP, load_digits, supervised_problem

    model = MLP(64, 10, (32,), "tanh", key=jax.random.key(0), dtype=jnp.float64)
    prob = supervised_problem(model, load_digits(300), loss="mse", dtype=jnp.float64)
    batch = jax.tree.map(lambda x: x[0], prob.batches)
    loss = lambda p: prob.loss_fn(p, batch)
    lr, n = 0.3, 1000

    def step(w, _):
        L, g = jax.value_and_grad(loss)(w)
        return jax.tree.map(lambda a, b: a - lr * b, w, g), L

    ls = np.asarray(jax.lax.scan(step, prob.params, None, length=n + 1)[1])
    two = 0.5 * (ls[1:] + ls[:-1])
    flow = central_flow(loss, prob.params, lr=lr, num_steps=n, k=2, save_every=n)
    onset = int(np.argmax(np.asarray(flow.metrics.sigma2) > 0))
    assert 100 < onset < 500
    sl = slice(onset, n)
    pred = np.asarray(flow.metrics.predicted_loss)[sl]
    bare = np.asarray(flow.metrics.loss)[sl]
    assert abs(pred.mean() / two[sl].mean() - 1) < 0.05
    rel = np.median(np.abs(pred - two[sl]) / two[sl])
    assert rel < 0.1
    assert np.mean(np.abs(pred - two[sl])) < np.mean(np.abs(bare - two[sl]))


# RMSProp (optax.rmsprop, eps = 0): on L = -cx + (a + x) y^2 / 2 the preconditioned sharpness
# is (a + x)/sqrt(nu_y); with s = E y^2 the central flow reduces to three scalars,
#   x' = lr (c - s/2)/sqrt(nu_x),  nu_x' = kappa ((c - s/2)^2 - nu_x),
#   nu_y' = kappa (s (a + x)^2 - nu_y),  kappa = -ln(decay),
# with s = 0 below the edge and, on it, s fixed by d/dt[(a + x) - (2/lr) sqrt(nu_y)] = 0:
#   s = (lr^2 c r + kappa nu_y) / (kappa (a + x)^2 + lr^2 r / 2),  r = sqrt(nu_y / nu_x).
RMS_DECAY, RMS_C, RMS_A = 0.9, 0.5, 1.0


def _rms_toy(w):
    return -RMS_C * w[0] + 0.5 * (RMS_A + w[0]) * w[1] ** 2


def _rms_reference(x0, nu0, t_end, h=1e-3, bias_correction=False):
    """RK4 on the reduced system; returns x, nu_x, nu_y and s at integer times. Once on the
    edge it stays there (s > 0 throughout on this toy): nu_y is then a function of x. With
    ``bias_correction`` the state is nu_hat and the rate kappa / (1 - decay^(t + 1))."""
    lr, c = LR, RMS_C

    def rate(t):
        kappa = -np.log(RMS_DECAY)
        return kappa / (1 - RMS_DECAY ** (t + 1)) if bias_correction else kappa

    def s_of(z, edge, t):
        x, nx, ny = z
        kappa = rate(t)
        if not edge:
            return 0.0
        r = np.sqrt(ny / nx)
        return (lr**2 * c * r + kappa * ny) / (kappa * (RMS_A + x) ** 2 + lr**2 * r / 2)

    def f(z, edge, t):
        x, nx, ny = z
        s, kappa = s_of(z, edge, t), rate(t)
        return np.array([lr * (c - s / 2) / np.sqrt(nx), kappa * ((c - s / 2) ** 2 - nx),
                         kappa * (s * (RMS_A + x) ** 2 - ny)])

    z, out, edge = np.array([x0, *nu0], float), [], False
    per = round(1 / h)
    for step in range(t_end + 1):
        out.append([*z, s_of(z, edge, step)])
        for i in range(per):
            t = step + i * h
            k1 = f(z, edge, t)
            k2 = f(z + h / 2 * k1, edge, t + h / 2)
            k3 = f(z + h / 2 * k2, edge, t + h / 2)
            k4 = f(z + h * k3, edge, t + h)
            z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            edge = edge or (RMS_A + z[0]) >= (2 / lr) * np.sqrt(z[2])
            if edge:  # the onset, to within one RK4 step h
                z[2] = (lr * (RMS_A + z[0]) / 2) ** 2
    return np.array(out)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_rmsprop_against_the_reduced_flow(bias_correction):
    r"""Below the edge ($\nu_y$ 4x, or 40x, its edge value) then on it: $x$, $\nu$ and
    $\Sigma_{yy} = X/\sqrt{\nu_y}$ follow the reduced system, and the error is Euler's
    (it falls ~4x from 4 to 16 substeps); with bias correction, at its time-dependent rate."""
    x0, n = 4.0, 120
    above = 40.0 if bias_correction else 4.0  # nu_hat's early rate is ~1 per step
    nu0 = np.array([RMS_C**2, above * (LR * (RMS_A + x0) / 2) ** 2])
    ref = _rms_reference(x0, nu0, n, bias_correction=bias_correction)
    onset = int(np.argmax(ref[:, 3] > 0))
    assert 5 < onset < 60
    errs = []
    for substeps in (4, 16):
        flow = central_flow(_rms_toy, jnp.array([x0, 0.0]), lr=LR, num_steps=n,
                            substeps=substeps, optimizer="rmsprop", decay=RMS_DECAY, eps=0.0,
                            nu0=jnp.asarray(nu0), bias_correction=bias_correction)
        m = flow.metrics
        np.testing.assert_allclose(flow.params[:, 1], 0.0)
        after = slice(onset + 3, n)
        np.testing.assert_allclose(m.eigenvalues[after, 0], 2 / LR, rtol=1e-5)
        assert np.all(np.asarray(m.eigenvalues[: onset - 2, 0]) < 2 / LR)
        assert np.all(np.asarray(m.sigma2[: onset - 2]) == 0)
        nu_y = (LR * (RMS_A + np.asarray(flow.params[after, 0])) / 2) ** 2
        s = np.asarray(m.sigma2[after]) / np.sqrt(nu_y)
        errs.append([np.max(np.abs(flow.params[:, 0] - ref[:, 0])),
                     np.max(np.abs(flow.state.nu - ref[-1, 1:3]) / ref[-1, 1:3]),
                     np.max(np.abs(s - ref[after, 3]) / ref[after, 3])])
    errs = np.array(errs)
    # bias correction's early rate (~1 per step) makes Euler's error in x larger, not slower
    assert np.all(errs[1] < [2e-4 if bias_correction else 5e-5, 5e-5, 5e-4]), errs
    assert np.all(errs[1] < errs[0] / 3), errs


@pytest.mark.parametrize(("decay", "bias_correction"), [(RMS_DECAY, False), (0.99, True)])
def test_rmsprop_predicts_discrete_rmsprop(decay, bias_correction):
    """optax.rmsprop itself on the toy, from y = 1e-3 (the flow from the same point, nu(0)
    its first step's): after the oscillation settles, the flow's x moves at RMSProp's speed,
    nu matches the EMA, and Sigma_yy the time average of y^2. With bias correction (at 0.99
    it still matters at step 200: 1 - 0.99^200 = 0.87) the flow's nu_hat is optax's."""
    import optax

    w0, n = jnp.array([4.0, 1e-3]), 400
    tx = optax.rmsprop(LR, decay=decay, eps=0.0, bias_correction=bias_correction)

    def step(carry, _):
        w, st = carry
        u, st = tx.update(jax.grad(_rms_toy)(w), st, w)
        rms = st[0]  # (ScaleByRms[WithCount]State, ScaleByLearningRate)
        nu = rms.nu / (1 - decay**rms.count) if bias_correction else rms.nu
        return (w + u, st), (w, nu)

    _, (ws, nus) = jax.lax.scan(step, (w0, tx.init(w0)), None, length=n)
    ws, nus = np.asarray(ws), np.asarray(nus)
    flow = central_flow(_rms_toy, w0, lr=LR, num_steps=n, substeps=8, optimizer="rmsprop",
                        decay=decay, eps=0.0, bias_correction=bias_correction)
    late = slice(200, n)
    speed = np.diff(ws[late, 0]).mean(), np.diff(np.asarray(flow.params[late, 0])).mean()
    np.testing.assert_allclose(speed[0], speed[1], rtol=1e-3)
    np.testing.assert_allclose(flow.state.nu, nus[-1], rtol=5e-3)
    sigma_yy = np.asarray(flow.metrics.sigma2[late]) / np.sqrt(nus[late, 1])
    np.testing.assert_allclose(sigma_yy.mean(), np.mean(ws[late, 1] ** 2), rtol=2e-2)


def test_rmsprop_rate():
    """-ln(decay) per step; bias-corrected -ln(decay) / (1 - decay^(t + 1)): at t = 0
    -ln(decay) / (1 - decay), tending to -ln(decay)."""
    from eosflow.flows import rmsprop_rate

    k = -np.log(0.99)
    assert rmsprop_rate(0.99, 5.0) == pytest.approx(k, rel=1e-15)
    got = np.asarray(rmsprop_rate(0.99, jnp.array([0.0, 1.0, 0.5, 1e4]), bias_correction=True))
    want = k / (1 - 0.99 ** np.array([1.0, 2.0, 1.5, 1e4 + 1]))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for bad in (0.0, 1.0, True):
        with pytest.raises(ValueError, match="decay must be a number in"):
            rmsprop_rate(bad, 0.0)


def test_rmsprop_bad_input():
    loss = lambda w: jnp.sum(w**2)
    kw = dict(lr=0.1, num_steps=2, optimizer="rmsprop")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        central_flow(loss, jnp.ones(2), lr=0.1, num_steps=2, optimizer="adam")
    with pytest.raises(ValueError, match="decay must be"):
        central_flow(loss, jnp.ones(2), decay=1.0, **kw)
    with pytest.raises(ValueError, match="eps must be"):
        central_flow(loss, jnp.ones(2), eps=-1.0, **kw)
    with pytest.raises(ValueError, match="bias_correction must be True or False"):
        central_flow(loss, jnp.ones(2), bias_correction=1, **kw)
    with pytest.raises(ValueError, match=r"eps = 0.0 with 1 zero entries of nu0"):
        central_flow(loss, jnp.ones(2), eps=0.0, nu0=jnp.array([1.0, 0.0]), **kw)
    with pytest.raises(ValueError, match="negative or non-finite"):
        central_flow(loss, jnp.ones(2), nu0=jnp.array([1.0, -1.0]), **kw)
    with pytest.raises(ValueError, match="shaped like params"):
        central_flow(loss, jnp.ones(2), nu0=jnp.ones(3), **kw)
    with pytest.raises(ValueError, match=r"eps = 0.0 with 1 zero entries"):  # default nu0
        central_flow(loss, jnp.array([1.0, 0.0]), eps=0.0, **kw)
