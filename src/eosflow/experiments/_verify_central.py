r"""``eosflow verify`` rows for the central flow and for adaptive optimizers at their edge,
simulated by the runner's own compiled step (:class:`~eosflow.runner.Program`).

* Central flow (Cohen, Damian et al., ICLR 2025, arXiv 2410.24206) on
  $L = -cx + \tfrac12(a + x)y^2$ from $y = 0$: gradient flow raises the sharpness $a + x$
  at rate $\eta c$ until $2/\eta$; there the central flow holds it with $\sigma^2 = 2c$ and
  predicts the time-averaged loss $-cx^* + \sigma^2/\eta$, $x^* = 2/\eta - a$.
* Adaptive EoS (Cohen et al., arXiv 2207.14484): full-batch Adam with $\beta_1 = 0.9$ holds
  $\eta\,\lambda_1(P^{-1}H)$ near $(2 + 2\beta_1)/(1 - \beta_1) = 38$ on a small digits MLP.
* RMSProp's central flow on the same toy against ``optax.rmsprop`` itself (not the runner):
  after the oscillation settles, the flow moves $x$ at RMSProp's speed, its $\nu$ is the
  EMA's and $\Sigma_{yy} = X/\sqrt{\nu_y}$ the time average of $y^2$.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ..problems import Problem, build_problem
from ..runner import Config, Program

# the toy's constants: onset at t* = (2/eta - a - x0) / (eta c) = 40 steps
_A, _C, _X0, _LR = 1.0, 0.5, 17.0, 0.1
# Adam on 200 digits, MLP 64-32-10: eta * lambda_1(P^-1 H) over the last third of the run
ADAM = dict(name="verify-adam", num_examples=200, widths=(32,), optimizer="adam",
            momentum=0.9, lr=3e-2, steps=400, eig_every=10, eval_every=None, dtype="float64",
            chunk_steps=400)
ADAM_TOL = 0.15  # the target: within 15% of 38


def _rows(config: Config, problem, steps: int) -> dict[str, np.ndarray]:
    prog = Program(config, problem, None, None, None)
    _, rows = prog.chunk_fn(steps)(prog.initial_state(), prog.hyper(), prog.data())
    return {k: np.asarray(v) for k, v in rows.items()}


def central_flow_rows(check) -> list:
    """The central process of the runner on the closed-form toy: pinned at $2/\\eta$ and
    its predicted loss. ``check`` builds a row (:class:`~eosflow.experiments.Check`)."""
    def loss(w):
        return -_C * w[0] + 0.5 * (_A + w[0]) * w[1] ** 2

    steps = 100
    config = Config(name="verify-central", problem="toy_a", dataset="none", dtype="float64",
                    optimizer="gd", lr=_LR, steps=steps, eig_every=None, eig_tol=1e-10,
                    processes=("discrete", "central"), divergence_factor=None)
    rows = _rows(config, Problem(loss, jnp.array([_X0, 0.0])), steps)
    after = np.arange(steps) > 41  # the onset is at t = 40
    edge = 2 / _LR
    lam = rows["central.lambda_1"][after]
    pinned = float(np.max(np.abs(lam - edge)) / edge)
    x_star = edge - _A
    want = -_C * x_star + 2 * _C / _LR
    pred = float(np.max(np.abs(rows["central.predicted_loss"][after] - want)) / abs(want))
    sigma = float(np.max(np.abs(rows["central.sigma2"][after] - 2 * _C)) / (2 * _C))
    below = float(np.max(rows["central.sigma2"][:39]))
    claim = "8 central flow (arXiv 2410.24206)"
    toy = "L = -cx + (a + x)y^2/2"
    return [
        check(claim, f"{toy}: max |lambda1 - 2/eta| / (2/eta) after the onset",
              "0 (pinned at the edge)", pinned, "<= 1e-9", pinned <= 1e-9),
        check(claim, f"{toy}: sigma^2 before the onset", "0 (gradient flow)", below,
              "<= 1e-12", below <= 1e-12),
        check(claim, f"{toy}: max rel. error of sigma^2 against 2c", "0", sigma, "<= 1e-9",
              sigma <= 1e-9),
        check(claim, f"{toy}: max rel. error of the predicted loss against -c x* + 2c/eta",
              "0", pred, "<= 1e-9", pred <= 1e-9),
    ]


def adaptive_eos_rows(check) -> list:
    """Full-batch Adam's $\\eta\\lambda_1(P^{-1}H)$ over the last third against 38."""
    config = Config(**ADAM)
    rows = _rows(config, build_problem(config), config.steps)
    pre = rows["precond_lambda_1"]
    t = np.arange(config.steps)
    tail = np.isfinite(pre) & (t >= 2 * config.steps // 3)
    edge = (2 + 2 * config.momentum) / (1 - config.momentum)
    mean = float(config.lr * np.mean(pre[tail]))
    rel = abs(mean / edge - 1)
    return [check("9 adaptive EoS (arXiv 2207.14484)",
                  f"Adam b1 = 0.9, digits MLP 64-32-10, {config.steps} steps: mean eta * "
                  "lambda1(P^-1 H) over the last third", f"{edge:g}", mean,
                  f"within {ADAM_TOL:.0%}", rel <= ADAM_TOL)]


def rmsprop_central_rows(check) -> list:
    r"""RMSProp's central flow against ``optax.rmsprop`` on the toy, from $(4, 10^{-3})$ with
    $\eta = 0.1$, decay 0.9, $\epsilon = 0$, over steps 200-400."""
    import optax

    from ..flows import central_flow

    def loss(w):
        return -_C * w[0] + 0.5 * (_A + w[0]) * w[1] ** 2

    w0, n, decay = jnp.array([4.0, 1e-3]), 400, 0.9
    tx = optax.rmsprop(_LR, decay=decay, eps=0.0)

    def step(carry, _):
        w, st = carry
        u, st = tx.update(jax.grad(loss)(w), st, w)
        return (w + u, st), (w, st[0].nu)

    _, (ws, nus) = jax.lax.scan(step, (w0, tx.init(w0)), None, length=n)
    ws, nus = np.asarray(ws), np.asarray(nus)
    flow = central_flow(loss, w0, lr=_LR, num_steps=n, substeps=8, optimizer="rmsprop",
                        decay=decay, eps=0.0)
    late = slice(n // 2, n)
    speed = abs(np.diff(np.asarray(flow.params[late, 0])).mean()
                / np.diff(ws[late, 0]).mean() - 1)
    nu = float(np.max(np.abs(np.asarray(flow.state.nu) / nus[-1] - 1)))
    syy = np.asarray(flow.metrics.sigma2[late]) / np.sqrt(nus[late, 1])
    var = abs(syy.mean() / np.mean(ws[late, 1] ** 2) - 1)
    claim = "10 RMSProp central flow"
    toy = "same toy, optax.rmsprop"
    return [
        check(claim, f"{toy}: rel. error of the flow's speed in x", "0", float(speed),
              "<= 1e-3", speed <= 1e-3),
        check(claim, f"{toy}: max rel. error of nu at the end", "0", nu, "<= 5e-3",
              nu <= 5e-3),
        check(claim, f"{toy}: rel. error of Sigma_yy against the mean of y^2", "0",
              float(var), "<= 2e-2", var <= 2e-2),
    ]
