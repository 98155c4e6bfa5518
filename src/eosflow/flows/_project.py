r"""Gradient flow and its end point $\Phi(x) = \lim_{t\to\infty} \phi(x, t)$."""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._tree import check_floating
from .._types import Array, Float, Int, PyTree


class FlowRESULTS(eqx.Enumeration):
    """How a flow solve ended."""

    successful = "converged"
    not_converged = (
        "gradient flow did not reach a stationary point within t_max / max_steps: the start "
        "may lie outside every basin (the flow diverges) or the tolerance is too tight"
    )
    nonfinite = "the flow produced inf or nan"


class ProjectResult(eqx.Module):
    r"""$\Phi(x)$ with how it was obtained."""

    value: PyTree
    grad_norm: Float[Array, ""]
    time: Float[Array, ""]
    num_steps: Int[Array, ""]
    result: FlowRESULTS


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
    # diffrax.Kvaerno5() for losses whose normal curvatures span many decades.
    del size
    return diffrax.Tsit5()


def project_solve(
    loss_fn: Callable[[PyTree], Array],
    x: PyTree,
    *,
    gtol: float | None = None,
    t_max: float = 1e6,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    dt0: float | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    max_steps: int = 100_000,
) -> ProjectResult:
    r"""Integrate $\dot x = -\nabla L(x)$ from ``x`` until $\|\nabla L\| \le$ ``gtol``.

    Args:
        loss_fn: $L$ on PyTrees like ``x``.
        x: the start.
        gtol: stop when the gradient norm is at most this (default $\epsilon^{0.55}$:
            2.5e-9 in float64, 1.6e-4 in float32).
        t_max: give up at this flow time (diffrax's constant-step grid degrades beyond
            about 1e6).
        solver: a diffrax solver; default ``Tsit5`` (explicit, adaptive); ``Kvaerno5``
            (implicit) for very stiff losses. ``diffrax.Euler()`` with ``dt0=h`` and
            ``diffrax.ConstantStepSize()`` is exactly GD with step ``h``.
        rtol, atol: the adaptive controller's tolerances (default 1e-10, 3e-13 in float64).
        max_steps: solver step budget.

    Returns:
        A :class:`ProjectResult`; ``result`` says whether a stationary point was reached.
    """
    dtype = check_floating("x", x)
    d_rtol, d_atol, d_gtol = _default_tols(dtype)
    gtol = d_gtol if gtol is None else gtol
    if not gtol > 0:
        raise ValueError(f"gtol must be positive, got {gtol!r}.")
    if not t_max > 0:
        raise ValueError(f"t_max must be positive, got {t_max!r}.")
    size = sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(x))
    solver = _default_solver(size) if solver is None else solver
    if stepsize_controller is None:
        stepsize_controller = diffrax.PIDController(
            rtol=d_rtol if rtol is None else rtol, atol=d_atol if atol is None else atol
        )
    return _project(loss_fn, x, float(gtol), float(t_max), solver, dt0, stepsize_controller,
                    int(max_steps))


@eqx.filter_jit
def _project(loss_fn, x, gtol, t_max, solver, dt0, controller, max_steps):
    grad = jax.grad(loss_fn)
    term = diffrax.ODETerm(lambda t, y, args: optax.tree.scale(-1.0, grad(y)))
    event = diffrax.Event(diffrax.steady_state_event(rtol=0.0, atol=gtol, norm=optax.tree.norm))
    sol = diffrax.diffeqsolve(
        term, solver, 0.0, t_max, dt0, x, event=event, stepsize_controller=controller,
        max_steps=max_steps, throw=False, saveat=diffrax.SaveAt(t1=True),
    )
    y = jax.tree.map(lambda a: a[-1], sol.ys)
    gnorm = optax.tree.norm(grad(y))
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(y)]))
    ok = finite & (gnorm <= gtol * 1.0000001)
    result = FlowRESULTS.where(
        ok, FlowRESULTS.successful,
        FlowRESULTS.where(finite, FlowRESULTS.not_converged, FlowRESULTS.nonfinite),
    )
    return ProjectResult(y, gnorm, sol.ts[-1], sol.stats["num_steps"], result)


def project(loss_fn: Callable[[PyTree], Array], x: PyTree, **kwargs) -> PyTree:
    r"""$\Phi(x)$: the end point of gradient flow from ``x``.

    Raises (also under ``jit``) if the flow does not reach a stationary point; use
    :func:`project_solve` for a result code instead. Keyword arguments are those of
    :func:`project_solve`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> jax.config.update("jax_enable_x64", True)
        >>> loss = lambda z: (1 + z[0] ** 2) * z[1] ** 2          # Γ = {y = 0}
        >>> phi = project(loss, jnp.array([1.0, 1e-3]))
        >>> bool(abs(phi[1]) < 1e-8), bool(abs(phi[0] - 1.0) < 1e-5)
        (True, True)
    """
    res = project_solve(loss_fn, x, **kwargs)
    msg = "project: gradient flow did not converge (the start may lie outside every basin)"
    return eqx.error_if(res.value, res.result != FlowRESULTS.successful, msg)


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
    max_steps: int = 100_000,
) -> GradientFlowSolution:
    r"""Gradient flow $\dot x = -\nabla L(x)$ from ``x0`` on $[0, t_\text{end}]$.

    GD with step $\eta$ for $t$ steps follows it at time $\eta t$ while $\eta\lambda_1 < 2$
    (the "stable" regime of Cohen et al.). ``ts, xs = gradient_flow(...)`` unpacks.
    """
    if not t_end > 0:
        raise ValueError(f"t_end must be positive, got {t_end!r}.")
    if not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"num_points must be an int >= 2, got {num_points!r}.")
    dtype = check_floating("x0", x0)
    d_rtol, d_atol, _ = _default_tols(dtype)
    size = sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(x0))
    solver = _default_solver(size) if solver is None else solver
    controller = diffrax.PIDController(rtol=d_rtol if rtol is None else rtol,
                                       atol=d_atol if atol is None else atol)
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
