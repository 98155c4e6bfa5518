r"""Gradient flow and its end point $\Phi(x) = \lim_{t\to\infty} \phi(x, t)$.

Two ways to reach Γ, and what each costs in accuracy:

* **Gradient flow** (any loss): diffrax integrates $\dot x = -\nabla L(x)$ until
  $\|\nabla L\| \le$ ``gtol``. The end point is $\Phi(x)$ up to the integrator's tolerance and
  the stopping rule: near Γ, $\|x - \Phi(x)\| \le \|\nabla L\| / \mu$ with $\mu$ the smallest
  nonzero Hessian eigenvalue. On a network the normal curvatures span many decades, so
  the flow needs a time $\sim 1/\mu$ at steps $\sim 1/\lambda_1$: it stalls.
* **Gauss–Newton** (losses $L = \tfrac12\|r(x)\|^2$ with $L^* = 0$, e.g. MSE; pass the
  residual ``residual_fn``): repeated minimum-norm corrections
  $x \leftarrow x - J^\top (JJ^\top)^{-1} r$, $J = \partial r/\partial x$, solved matrix-free
  by conjugate gradients on $JJ^\top$ (one JVP and one VJP per CG step), with backtracking
  on $L$. It solves $r = 0$ whatever the spread of curvatures, and lands on Γ at a point
  whose distance from $\Phi(x)$ is $O(\kappa\, d^2)$, where $d$ is the distance it moved
  (``ProjectResult.correction``) and $\kappa$ bounds the curvature of Γ and of the flow
  lines near it: its first step is the orthogonal projection onto the normal space of the
  level set, which is where the flow goes to first order.

``method="auto"`` runs gradient flow first (exact, within a step budget) and, when a residual
is given and the flow has not converged, continues with Gauss–Newton from where the flow
stopped, which keeps $d$ — and so the $O(d^2)$ error — small, then polishes with gradient
flow again (exact; it removes what Gauss–Newton leaves along the top curvatures).
"""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._errors import check_int
from .._tree import check_floating
from .._types import Array, Float, Int, PyTree

METHODS = ("auto", "gradient_flow", "gauss_newton")


class FlowRESULTS(eqx.Enumeration):
    """How a flow solve ended."""

    successful = "converged"
    not_converged = (
        "did not reach a stationary point within the step budget: the start may lie outside "
        "every basin (the flow diverges), the tolerance may be too tight for the dtype, or, "
        "on a network, the flow stalls along small curvatures (pass residual_fn to finish "
        "with Gauss-Newton)"
    )
    nonfinite = "the flow produced inf or nan"


class ProjectionError(RuntimeError):
    """A projection onto Γ that did not converge; ``.result`` is the :class:`ProjectResult`."""

    def __init__(self, message: str, result: "ProjectResult"):
        super().__init__(message)
        self.result = result


class ProjectResult(eqx.Module):
    r"""$\Phi(x)$ with how it was obtained and how close it got.

    Attributes:
        value: the end point (a PyTree like ``x``).
        grad_norm: $\|\nabla L\|$ at ``value``.
        distance: $\|\text{value} - x\|$, the distance moved.
        correction: the distance moved after the first gradient flow stage (Gauss–Newton and
            the polishing flow; 0 without them); the end point is
            $O(\kappa\,\text{correction}^2)$ from the exact $\Phi(x)$.
        flow_grad_norm: $\|\nabla L\|$ where the gradient flow stage stopped (the start's
            when there was none).
        time: flow time integrated.
        num_steps: gradient flow solver steps.
        num_gn_steps: Gauss–Newton steps.
        result: a :class:`FlowRESULTS`.
    """

    value: PyTree
    grad_norm: Float[Array, ""]
    time: Float[Array, ""]
    num_steps: Int[Array, ""]
    result: FlowRESULTS
    distance: Float[Array, ""] = None
    correction: Float[Array, ""] = None
    flow_grad_norm: Float[Array, ""] = None
    num_gn_steps: Int[Array, ""] = None

    @property
    def converged(self) -> Array:
        return self.result == FlowRESULTS.successful

    def summary(self) -> str:
        """One line: the result and the numbers that say how close it got."""
        msg = FlowRESULTS[self.result]
        return (f"{msg}: |grad L| = {float(self.grad_norm):.3g} after {int(self.num_steps)} flow "
                f"steps (t = {float(self.time):.3g}) and {int(self.num_gn_steps)} Gauss-Newton "
                f"steps; moved {float(self.distance):.3g} (Gauss-Newton "
                f"{float(self.correction):.3g})")



def _default_tols(dtype) -> tuple[float, float, float]:
    """(rtol, atol, gtol): 1e-10, 3e-13, 2.5e-9 in float64; 1e-5, 3e-6, 1.6e-4 in float32.

    ``gtol`` must sit above the noise floor ``atol * lambda_max`` of the gradient at the
    end of an explicit solve, or the steady-state event never fires.
    """
    eps = float(jnp.finfo(dtype).eps)
    rtol = 1e-10 if eps < 1e-10 else 1e-5
    return rtol, eps**0.8, eps**0.55


def _default_solver(size: int) -> diffrax.AbstractSolver:
    # Explicit and adaptive: its steps shrink to ~1/lambda_max across Γ, which is what GD
    # pays too, and it compiles in a fraction of the time of an implicit solver. Pass
    # diffrax.Kvaerno5() for small losses whose normal curvatures span many decades; for
    # networks pass residual_fn (Gauss-Newton) instead.
    del size
    return diffrax.Tsit5()


def _is_traced(tree) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(tree))


def project_solve(
    loss_fn: Callable[[PyTree], Array],
    x: PyTree,
    *,
    residual_fn: Callable[[PyTree], Array] | None = None,
    method: str = "auto",
    gtol: float | None = None,
    t_max: float = 1e6,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    dt0: float | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    max_steps: int | None = None,
    gn_steps: int = 30,
    cg_steps: int = 200,
    cg_rtol: float | None = None,
    throw: bool = True,
) -> ProjectResult:
    r"""$\Phi(x)$: integrate $\dot x = -\nabla L(x)$ from ``x`` until $\|\nabla L\| \le$ ``gtol``,
    finishing with Gauss–Newton when a residual is given (see the module docstring for the
    error each stage introduces).

    Args:
        loss_fn: $L$ on PyTrees like ``x``.
        x: the start.
        residual_fn: optional $r(x)$ (an array or PyTree) with $L(x) = \tfrac12\|r(x)\|^2$
            exactly and $L^* = 0$ (e.g. :meth:`eosflow.problems.Problem.full_residual` for
            the MSE conventions). Checked against ``loss_fn`` at ``x`` outside ``jit``.
        method: ``"auto"`` (gradient flow, then Gauss–Newton if ``residual_fn`` is given and
            the flow did not converge), ``"gradient_flow"`` or ``"gauss_newton"`` (from ``x``
            directly; needs ``residual_fn``).
        gtol: success when the gradient norm is at most this (default $\epsilon^{0.55}$:
            2.5e-9 in float64, 1.6e-4 in float32).
        t_max: give up the flow at this time (diffrax's constant-step grid degrades beyond
            about 1e6).
        solver: a diffrax solver; default ``Tsit5`` (explicit, adaptive). ``diffrax.Euler()``
            with ``dt0=h`` and ``diffrax.ConstantStepSize()`` is exactly GD with step ``h``.
        rtol, atol: the adaptive controller's tolerances (default 1e-10, 3e-13 in float64).
        max_steps: the flow's step budget; default 100 000, or 300 under ``"auto"`` with a
            residual (the flow only shortens the distance Gauss–Newton has to cover).
        gn_steps: at most this many Gauss–Newton steps.
        cg_steps, cg_rtol: conjugate-gradient budget and relative tolerance of each
            Gauss–Newton solve (default ``cg_rtol`` 1e-10 in float64, 1e-4 in float32).
        throw: raise :class:`ProjectionError` (outside ``jit``; an equinox runtime error
            inside) if the end point is not within ``gtol`` of stationary. With ``False`` the
            result code says so.

    Returns:
        A :class:`ProjectResult` with the end point, its $\|\nabla L\|$, the distance moved,
        the Gauss–Newton correction and the result code.

    Raises:
        ValueError: bad options, or ``residual_fn`` inconsistent with ``loss_fn``.
        ProjectionError: no convergence and ``throw=True``; the message names the final
            gradient norm.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if method == "gauss_newton" and residual_fn is None:
        raise ValueError("method='gauss_newton' needs residual_fn (r with L = 0.5 * |r|^2); "
                         "for a generic loss use method='gradient_flow'.")
    dtype = check_floating("x", x)
    d_rtol, d_atol, d_gtol = _default_tols(dtype)
    gtol = d_gtol if gtol is None else gtol
    if not gtol > 0:
        raise ValueError(f"gtol must be positive, got {gtol!r}.")
    if not t_max > 0:
        raise ValueError(f"t_max must be positive, got {t_max!r}.")
    gn_steps = check_int("gn_steps", gn_steps)
    cg_steps = check_int("cg_steps", cg_steps)
    if max_steps is None:
        max_steps = 300 if (method == "auto" and residual_fn is not None) else 100_000
    max_steps = check_int("max_steps", max_steps)
    if residual_fn is not None and not _is_traced(x):
        _check_residual(loss_fn, residual_fn, x)
    size = sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(x))
    solver = _default_solver(size) if solver is None else solver
    if stepsize_controller is None:
        stepsize_controller = diffrax.PIDController(
            rtol=d_rtol if rtol is None else rtol, atol=d_atol if atol is None else atol
        )
    cg_rtol = (1e-10 if dtype == jnp.float64 else 1e-4) if cg_rtol is None else cg_rtol
    flow = method != "gauss_newton"
    gn = residual_fn if method != "gradient_flow" else None
    res = _project(loss_fn, x, float(gtol), float(t_max), solver, dt0, stepsize_controller,
                   max_steps, flow, gn, gn_steps, cg_steps, float(cg_rtol))
    if not throw:
        return res
    if _is_traced(res.grad_norm):
        msg = ("project_solve: the projection onto Γ did not converge (call with throw=False "
               "to read its final |grad L| and result code)")
        return eqx.error_if(res, res.result != FlowRESULTS.successful, msg)
    if not bool(res.converged):
        raise ProjectionError(
            f"project_solve: the projection onto Γ failed, final |grad L| = "
            f"{float(res.grad_norm):.3g} > gtol = {gtol:.3g} ({res.summary()}). "
            + ("Pass residual_fn to finish with Gauss-Newton, or " if residual_fn is None
               else "Try ")
            + "a larger max_steps / gn_steps, or throw=False to use the point anyway.", res)
    return res


def _check_residual(loss_fn, residual_fn, x) -> None:
    value = float(loss_fn(x))
    half = 0.5 * float(optax.tree.norm(residual_fn(x)) ** 2)
    if not abs(value - half) <= 1e-3 * max(abs(value), 1e-30) + 1e-12:
        raise ValueError(
            f"residual_fn must satisfy loss_fn(x) = 0.5 * |residual_fn(x)|^2; at x they give "
            f"{value:.6g} and {half:.6g}. For a mean over n examples of c * |f - y|^2 use "
            "r = sqrt(2 c / n) * (f - y) (Problem.full_residual does this)."
        )


def _flow(grad, x, gtol, t_max, solver, dt0, controller, max_steps):
    term = diffrax.ODETerm(lambda t, y, args: optax.tree.scale(-1.0, grad(y)))
    event = diffrax.Event(diffrax.steady_state_event(rtol=0.0, atol=gtol, norm=optax.tree.norm))
    sol = diffrax.diffeqsolve(
        term, solver, 0.0, t_max, dt0, x, event=event, stepsize_controller=controller,
        max_steps=max_steps, throw=False, saveat=diffrax.SaveAt(t1=True),
    )
    return jax.tree.map(lambda a: a[-1], sol.ys), sol.ts[-1], sol.stats["num_steps"]


@eqx.filter_jit
def _project(loss_fn, x, gtol, t_max, solver, dt0, controller, max_steps, flow, residual_fn,
             gn_steps, cg_steps, cg_rtol):
    grad = jax.grad(loss_fn)
    dtype = jnp.result_type(*jax.tree.leaves(x))
    if flow:
        y, time, num_steps = _flow(grad, x, gtol, t_max, solver, dt0, controller, max_steps)
    else:
        y, time, num_steps = x, jnp.zeros((), dtype), jnp.zeros((), jnp.int32)
    flow_gnorm = optax.tree.norm(grad(y))
    if residual_fn is not None:
        z, num_gn = _gauss_newton(loss_fn, residual_fn, y, flow_gnorm, gtol, gn_steps,
                                  cg_steps, cg_rtol)
        if flow:
            # polish: Gauss-Newton leaves its residual mostly along the top curvatures, which
            # the flow removes in a time ~1/lambda_1 (an exact flow step, no added error)
            def polish(z):
                w, t, n = _flow(grad, z, gtol, t_max, solver, dt0, controller, max_steps)
                return w, t.astype(time.dtype), n.astype(num_steps.dtype)

            def skip(z):
                return z, jnp.zeros_like(time), jnp.zeros_like(num_steps)

            z, t2, n2 = jax.lax.cond(optax.tree.norm(grad(z)) > gtol, polish, skip, z)
            time, num_steps = time + t2, num_steps + n2
    else:
        z, num_gn = y, jnp.zeros((), jnp.int32)
    gnorm = optax.tree.norm(grad(z))
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(z)]))
    finite = finite & jnp.isfinite(gnorm)
    ok = finite & (gnorm <= gtol * 1.0000001)
    result = FlowRESULTS.where(
        ok, FlowRESULTS.successful,
        FlowRESULTS.where(finite, FlowRESULTS.not_converged, FlowRESULTS.nonfinite),
    )
    # int32 whatever the solver counts in (diffrax's count is int64 under x64)
    return ProjectResult(z, gnorm, time, num_steps.astype(jnp.int32), result,
                         distance=optax.tree.norm(optax.tree.sub(z, x)),
                         correction=optax.tree.norm(optax.tree.sub(z, y)),
                         flow_grad_norm=flow_gnorm, num_gn_steps=num_gn.astype(jnp.int32))


def _gauss_newton(loss_fn, residual_fn, x, gnorm0, gtol, num_steps, cg_steps, cg_rtol):
    r"""Levenberg–Marquardt steps $\Delta = -J^\top z$, $(JJ^\top + \mu I) z = r$ by CG.

    $\mu$ adapts (÷3 after a step that lowers $L$, ×4 and retry after one that does not, at
    most 12 tries): large $\mu$ is a short gradient step, $\mu \to 0$ the minimum-norm
    Gauss–Newton step, quadratically convergent near Γ. It starts at $10^{-3}$ times the
    Rayleigh quotient $\|\nabla L\|^2 / 2L$ of $JJ^\top$ at $r$. Stops at ``gtol``, after
    ``num_steps`` accepted steps, or when no $\mu$ lowers $L$.
    """
    grad = jax.grad(loss_fn)

    def body(c):
        x, k, _, mu, _ = c
        r, jvp = jax.linearize(residual_fn, x)
        vjp = jax.linear_transpose(jvp, x)
        loss0 = loss_fn(x)

        def attempt(a):
            mu, tries, _, _ = a
            z = _cg(lambda z: optax.tree.add_scale(jvp(vjp(z)[0]), mu, z), r, cg_rtol,
                    cg_steps)
            y = optax.tree.add_scale(x, -1.0, vjp(z)[0])
            better = loss_fn(y) < loss0
            return jnp.where(better, mu / 3, mu * 4), tries + 1, y, better

        mu, _, y, better = jax.lax.while_loop(lambda a: (a[1] < 12) & ~a[3], attempt,
                                              (mu, 0, x, jnp.zeros((), bool)))
        y = jax.tree.map(lambda a, b: jnp.where(better, a, b), y, x)
        return y, k + 1, optax.tree.norm(grad(y)), mu, better

    def cond(c):
        _, k, gnorm, _, moving = c
        return (k < num_steps) & (gnorm > gtol) & moving & jnp.isfinite(gnorm)

    dtype = jnp.result_type(*jax.tree.leaves(x))
    value = loss_fn(x)
    mu0 = 1e-3 * gnorm0**2 / jnp.maximum(2 * value, jnp.finfo(dtype).tiny)
    x, k, _, _, _ = jax.lax.while_loop(
        cond, body, (x, jnp.zeros((), jnp.int32), gnorm0, mu0.astype(dtype),
                     jnp.ones((), bool)))
    return x, k


def _cg(matvec, b, rtol, max_steps):
    """Conjugate gradients for ``matvec(z) = b`` (positive semidefinite) from ``z = 0``, until
    ``|b - Az| <= rtol |b|`` or ``max_steps``; stops (keeping the last finite iterate) on a
    breakdown ``p^T A p <= 0``, which float32 rounding can produce on a singular operator."""
    zero = optax.tree.zeros_like(b)
    rr0 = optax.tree.vdot(b, b)
    tol2 = (rtol**2) * rr0

    def cond(c):
        k, _, _, _, rr, ok = c
        return (k < max_steps) & (rr > tol2) & ok

    def body(c):
        k, z, r, p, rr, _ = c
        ap = matvec(p)
        pap = optax.tree.vdot(p, ap)
        ok = (pap > 0) & jnp.isfinite(pap)
        alpha = jnp.where(ok, rr / jnp.where(ok, pap, 1.0), 0.0)
        z = optax.tree.add_scale(z, alpha, p)
        r = optax.tree.add_scale(r, -alpha, ap)
        rr_new = optax.tree.vdot(r, r)
        p = optax.tree.add_scale(r, rr_new / jnp.where(rr > 0, rr, 1.0), p)
        return k + 1, z, r, p, rr_new, ok

    init = (jnp.zeros((), jnp.int32), zero, b, b, rr0, jnp.ones((), bool))
    return jax.lax.while_loop(cond, body, init)[1]


def project(loss_fn: Callable[[PyTree], Array], x: PyTree, **kwargs) -> PyTree:
    r"""$\Phi(x)$: the end point of gradient flow from ``x``.

    Raises (also under ``jit``) if the flow does not reach a stationary point; use
    :func:`project_solve` with ``throw=False`` for a result code instead. Keyword arguments
    are those of :func:`project_solve` (``residual_fn=`` for networks trained on MSE).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> jax.config.update("jax_enable_x64", True)
        >>> loss = lambda z: (1 + z[0] ** 2) * z[1] ** 2          # Γ = {y = 0}
        >>> phi = project(loss, jnp.array([1.0, 1e-3]))
        >>> bool(abs(phi[1]) < 1e-8), bool(abs(phi[0] - 1.0) < 1e-5)
        (True, True)
    """
    kwargs.setdefault("throw", True)
    return project_solve(loss_fn, x, **kwargs).value


class GradientFlowSolution(eqx.Module):
    """Gradient flow sampled at ``ts``: ``xs`` (leading axis) and the loss there."""

    ts: Array
    xs: PyTree
    loss: Array
    result: FlowRESULTS

    def __iter__(self):
        return iter((self.ts, self.xs))


def gradient_flow(
    loss_fn: Callable[[PyTree], Array],
    x0: PyTree,
    t_end: float,
    *,
    num_points: int = 101,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = 100_000,
) -> GradientFlowSolution:
    r"""Gradient flow $\dot x = -\nabla L(x)$ from ``x0`` on $[0, t_\text{end}]$.

    GD with step $\eta$ for $t$ steps follows it at time $\eta t$ while $\eta\lambda_1 < 2$
    (the "stable" regime of Cohen et al.). ``ts, xs = gradient_flow(...)`` unpacks.
    """
    if not t_end > 0:
        raise ValueError(f"t_end must be positive, got {t_end!r}.")
    num_points = check_int("num_points", num_points, 2)
    dtype = check_floating("x0", x0)
    d_rtol, d_atol, _ = _default_tols(dtype)
    size = sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(x0))
    solver = _default_solver(size) if solver is None else solver
    controller = diffrax.PIDController(rtol=d_rtol if rtol is None else rtol,
                                       atol=d_atol if atol is None else atol)
    max_steps = None if max_steps is None else check_int("max_steps", max_steps)
    return _gradient_flow(loss_fn, x0, float(t_end), num_points, solver, controller, max_steps)


@eqx.filter_jit
def _gradient_flow(loss_fn, x0, t_end, num_points, solver, controller, max_steps):
    grad = jax.grad(loss_fn)
    term = diffrax.ODETerm(lambda t, y, args: optax.tree.scale(-1.0, grad(y)))
    ts = jnp.linspace(0.0, t_end, num_points)
    sol = diffrax.diffeqsolve(
        term, solver, 0.0, t_end, None, x0, saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller, max_steps=max_steps, throw=False,
    )
    loss = jax.vmap(loss_fn)(sol.ys)
    result = FlowRESULTS.where(sol.result == diffrax.RESULTS.successful,
                               FlowRESULTS.successful, FlowRESULTS.not_converged)
    return GradientFlowSolution(ts, sol.ys, loss, result)
