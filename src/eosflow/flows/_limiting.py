r"""The limiting flows on Γ of normalized GD and of GD on $\sqrt{L - L^*}$.

Arora, Li & Panigrahi (2022), Thms 4.4 and 4.6: with $\tau = \eta^2 t$,

* normalized GD: $\dfrac{dX}{d\tau} = -\tfrac14\, \partial\Phi(X)\, \nabla \log\lambda_1(X)$,
* GD on $\sqrt{L}$: $\dfrac{dX}{d\tau} = -\tfrac18\, \partial\Phi(X)\, \nabla\lambda_1(X)$,

from $X(0) = \Phi(x_0)$, where $\partial\Phi(X)$ projects onto $T_XΓ = \ker\nabla^2 L(X)$ and
$\nabla\lambda_1 = \nabla^3 L[v_1, v_1]$. Both decrease $\lambda_1$ along Γ.
"""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._tree import check_floating
from .._types import Array, PyTree
from ..optim import METHODS
from ._geometry import eigen_gap, sharpness_and_gradient, tangent_project
from ._project import FlowRESULTS, _default_tols, _is_traced, project_solve

# method: (constant c in dX/dtau = -c dPhi grad g, whether g = log lambda_1), from the records
CONSTANTS: dict[str, tuple[float, bool]] = {
    name: (m.flow_constant, m.flow_log) for name, m in METHODS.items()
    if m.flow_constant is not None
}


class LimitingFlow(eqx.Module):
    r"""A trajectory on Γ: times ``ts`` ($\tau$), points ``xs`` (leading axis), $\lambda_1$ there.

    ``ts, xs = limiting_flow(...)`` unpacks the first two. ``tau``, ``lambda_1``, ``status``,
    ``reason`` and :meth:`columns` are the prediction as a runner stores it.

    Attributes:
        ts: $\tau = \eta^2 t$ from the prediction's start.
        xs: the points (a PyTree with a leading axis).
        sharpness: $\lambda_1(\nabla^2 L)$ at ``xs``.
        result: a :class:`FlowRESULTS` for the whole trajectory.
        grad_norms: $\|\nabla L\|$ at ``xs`` (the distance from Γ: the integrator's drift,
            or how close each re-projection got).
        reason: ``None`` on success, else why the prediction failed (first failure).
    """

    ts: Array
    xs: PyTree
    sharpness: Array
    result: FlowRESULTS
    grad_norms: Array | None = None  # |grad L| at the saved points: the distance from Γ
    reason: str | None = eqx.field(static=True, default=None)

    def __iter__(self):
        return iter((self.ts, self.xs))

    @property
    def tau(self) -> Array:
        return self.ts

    @property
    def lambda_1(self) -> Array:
        return self.sharpness

    @property
    def status(self) -> str:
        """``"ok"`` or ``"failed"``."""
        return "ok" if self.reason is None else "failed"

    def columns(self) -> dict[str, np.ndarray]:
        """The prediction as columns of equal length: ``tau``, ``lambda_1`` and
        ``grad_norm`` (NaN where not computed); check :attr:`status` / :attr:`reason` first."""
        n = int(np.shape(self.ts)[0])
        g = np.full(n, np.nan) if self.grad_norms is None else np.asarray(self.grad_norms)
        return {"tau": np.asarray(self.ts), "lambda_1": np.asarray(self.sharpness),
                "grad_norm": g}


def _failed(x0, reason: str) -> LimitingFlow:
    """A one-point trajectory at ``x0`` carrying the reason it could not start."""
    dtype = jnp.result_type(*jax.tree.leaves(x0))
    nan = jnp.full((1,), jnp.nan, dtype)
    return LimitingFlow(jnp.zeros((1,), dtype), jax.tree.map(lambda a: a[None], x0), nan,
                        FlowRESULTS.not_converged, nan, reason)


def flow_field(loss_fn: Callable, x: PyTree, *, method: str, constant: float | None = None,
               log: bool | None = None, projection: str = "dense") -> PyTree:
    r"""The vector field $-c\,\partial\Phi(x)\nabla g(x)$ at a point ``x`` of Γ.

    ``constant`` and ``log`` override the method's $c$ and whether $g = \log\lambda_1$
    (else $g = \lambda_1$); the verification uses them for negative controls.
    """
    c, use_log = _method(method)
    c = c if constant is None else constant
    use_log = use_log if log is None else log
    return _field(loss_fn, x, c, use_log, projection)


def _field(loss_fn, x, c, use_log, projection):
    """``-c dPhi grad g``; ``c`` and ``use_log`` may be traced (one compile serves all)."""
    lam, dlam, _ = sharpness_and_gradient(loss_fn, x)
    g = optax.tree.scale(jnp.where(use_log, 1 / lam, 1.0), dlam)
    return optax.tree.scale(-c, tangent_project(loss_fn, x, g, method=projection))


def _method(method: str) -> tuple[float, bool]:
    try:
        return CONSTANTS[method]
    except KeyError:
        raise ValueError(
            f"method must be one of {sorted(CONSTANTS)}, got {method!r}."
        ) from None


def _start(loss_fn, x0, gap_rtol, project_kwargs, residual_fn=None):
    """``(Phi(x0), None)`` or ``(None, reason)``."""
    kwargs = dict(project_kwargs, throw=False)
    if residual_fn is not None:
        kwargs["residual_fn"] = residual_fn
    start = project_solve(loss_fn, x0, **kwargs)
    if start.result != FlowRESULTS.successful:
        return None, (
            "x0: the projection from x0 did not reach a minimiser (|grad L| = "
            f"{float(start.grad_norm):.3g} at t = {float(start.time):.3g}; {start.summary()}); "
            "x0 may lie outside every basin of Γ, or the projection needs residual_fn / a "
            "larger budget."
        )
    lam1, lam2 = eigen_gap(loss_fn, start.value)
    if not float(lam1 - lam2) > gap_rtol * abs(float(lam1)):
        return None, (
            f"x0: the Hessian at Phi(x0) has no eigen-gap (lambda_1 = {float(lam1):.6g}, "
            f"lambda_2 = {float(lam2):.6g}); the limiting flow needs lambda_1 > lambda_2."
        )
    return start.value, None


def limiting_flow(
    loss_fn: Callable[[PyTree], Array],
    x0: PyTree,
    *,
    method: str,
    t_end: float,
    num_points: int = 101,
    constant: float | None = None,
    log: bool | None = None,
    projection: str = "dense",
    rtol: float | None = None,
    atol: float | None = None,
    gap_rtol: float = 1e-6,
    restoring: float = 1.0,
    residual_fn: Callable[[PyTree], Array] | None = None,
    project_kwargs: dict | None = None,
    throw: bool = True,
) -> LimitingFlow:
    r"""The predicted trajectory $X(\tau)$ on Γ from $\Phi(x_0)$, $\tau \in [0, t_\text{end}]$.

    Integrated by diffrax (``Tsit5``, adaptive) and saved at ``num_points`` equally spaced
    times. The field is tangent to Γ; a restoring term $-\kappa\nabla L(X)$, which vanishes
    on Γ and so leaves the exact solution unchanged, pulls the integrator's drift back onto
    the manifold (``grad_norms`` reports $\|\nabla L(X)\|$ at the saved points).

    Args:
        loss_fn: $L$ on PyTrees like ``x0``.
        x0: the optimizer's start; the flow starts at $\Phi(x_0)$.
        method: ``"normalized_gd"`` ($c = 1/4$, $g = \log\lambda_1$) or ``"sqrt_loss_gd"``
            ($c = 1/8$, $g = \lambda_1$).
        t_end: end of the flow in $\tau = \eta^2 t$ (steps times $\eta^2$).
        num_points: saved points, ``ts = linspace(0, t_end, num_points)``.
        constant, log: override $c$ and the choice of $g$ (negative controls).
        projection: ``"dense"`` or ``"cg"`` for $\partial\Phi$.
        rtol, atol: integration tolerances (default 1e-10 and 1e-12 in float64).
        gap_rtol: the start is rejected if $\lambda_1 - \lambda_2 \le$ ``gap_rtol`` $\lambda_1$.
        restoring: $\kappa$, the rate of the restoring term (0 switches it off).
        residual_fn: $r$ with $L = \tfrac12\|r\|^2$, for $\Phi(x_0)$ on networks (see
            :func:`project_solve`).
        project_kwargs: passed to :func:`project_solve` for $\Phi(x_0)$.
        throw: raise on a failed start; with ``False`` return a failed :class:`LimitingFlow`
            whose ``reason`` says why (``status == "failed"``).

    Returns:
        A :class:`LimitingFlow`.

    Raises:
        ValueError: unknown ``method``, ``t_end <= 0``, and (with ``throw``) a start whose
            projection fails or no eigen-gap at $\Phi(x_0)$.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> jax.config.update("jax_enable_x64", True)
        >>> loss = lambda z: (1 + z[0] ** 2) * z[1] ** 2   # toy A: dx/dtau = -x/2 for sqrt L
        >>> ts, xs = limiting_flow(loss, jnp.array([2.0, 0.0]), method="sqrt_loss_gd",
        ...                        t_end=1.0, num_points=3)
        >>> round(float(xs[-1, 0]), 6), round(2.0 * float(jnp.exp(-0.5)), 6)
        (1.213061, 1.213061)
    """
    _method(method)
    if not (isinstance(t_end, int | float) and t_end > 0):
        raise ValueError(f"t_end must be positive, got {t_end!r}.")
    if not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"num_points must be an int >= 2, got {num_points!r}.")
    dtype = check_floating("x0", x0)
    project_kwargs = dict(project_kwargs or {})
    X0, reason = _start(loss_fn, x0, gap_rtol, project_kwargs, residual_fn)
    if reason is not None:
        if throw:
            raise ValueError(reason)
        return _failed(x0, reason)
    d_rtol, d_atol, _ = _default_tols(dtype)
    controller = diffrax.PIDController(rtol=d_rtol if rtol is None else rtol,
                                       atol=d_atol if atol is None else atol)
    c, use_log = _method(method)
    c = jnp.asarray(c if constant is None else constant, dtype)
    use_log = jnp.asarray(use_log if log is None else log)
    flow = _integrate(loss_fn, X0, jnp.asarray(t_end, dtype), num_points, controller, c,
                      use_log, projection, jnp.asarray(restoring, dtype))
    if _is_traced(flow.ts) or flow.result == FlowRESULTS.successful:
        return flow
    reason = ("the limiting-flow ODE failed (step budget, or a non-finite field): "
              f"|grad L| along it up to {float(jnp.nanmax(flow.grad_norms)):.3g}")
    if throw:
        raise ValueError(reason)
    return LimitingFlow(flow.ts, flow.xs, flow.sharpness, flow.result, flow.grad_norms, reason)


@eqx.filter_jit
def _integrate(loss_fn, X0, t_end, num_points, controller, c, use_log, projection, restoring):
    grad = jax.grad(loss_fn)

    def field(t, y, args):
        # -c dPhi grad g is tangent to Γ; -kappa grad L vanishes on Γ and pulls the
        # integrator's drift back onto it (Baumgarte-style stabilisation)
        drift = _field(loss_fn, y, c, use_log, projection)
        return optax.tree.add_scale(drift, -restoring, grad(y))

    ts = jnp.linspace(0.0, 1.0, num_points) * t_end
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, t_end, None, X0,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller, max_steps=1_000_000,
        throw=False,
    )
    xs = sol.ys
    lam = jax.vmap(lambda x: sharpness_and_gradient(loss_fn, x)[0])(xs)
    off = jax.vmap(lambda x: optax.tree.norm(grad(x)))(xs)
    failed = (sol.result != diffrax.RESULTS.successful) | ~jnp.all(jnp.isfinite(off))
    result = FlowRESULTS.where(failed, FlowRESULTS.not_converged, FlowRESULTS.successful)
    return LimitingFlow(ts, xs, lam, result, off)


def reprojection_flow(
    loss_fn: Callable[[PyTree], Array],
    x0: PyTree,
    *,
    method: str,
    step_size: float,
    num_steps: int,
    gap_rtol: float = 1e-6,
    residual_fn: Callable[[PyTree], Array] | None = None,
    project_kwargs: dict | None = None,
    max_halvings: int = 4,
    throw: bool = True,
) -> LimitingFlow:
    r"""The scalable form of the limiting flow: descend $g$, then re-project onto Γ.

    $X_{k+1} = \Phi(X_k - h\nabla g(X_k))$ with $g = \log\lambda_1$ (normalized GD) or
    $g = \lambda_1$ (GD on √L), $h$ = ``step_size``. To first order
    $\Phi(X - h\nabla g) = X - h\,\partial\Phi\nabla g$, so $X_k \approx X(\tau_k)$ with
    $\tau_k = k h / c$ ($c = 1/4$ or $1/8$), with an $O(h)$ error. This is the explicit
    "Riemannian GD on $\log\lambda_1$" the paper's authors ran on networks: it needs only
    gradients, HVPs and a projection, never $\partial\Phi$ itself.

    Each $\Phi$ is :func:`project_solve` (``project_kwargs``; ``residual_fn`` for networks
    on MSE, where it finishes with Gauss–Newton). Each step starts $O(h)$ from Γ, so a
    Gauss–Newton projection is $O(h^2)$ from the exact $\Phi$ per step, $O(h)$ over the
    $O(1/h)$ steps: the same order as the scheme's own error.

    Args:
        loss_fn, x0, method: as for :func:`limiting_flow`; the flow starts at $\Phi(x_0)$.
        step_size: $h$.
        num_steps: outer steps; ``ts`` has ``num_steps + 1`` points.
        gap_rtol: the start is rejected without an eigen-gap.
        residual_fn: $r$ with $L = \tfrac12\|r\|^2$ (see :func:`project_solve`).
        project_kwargs: options of :func:`project_solve` for every projection.
        max_halvings: a step whose projection fails is retried as substeps of $h/2$, $h/4$,
            ... down to $h/2^{\text{max\_halvings}}$ (the substep doubles again after each
            success), so that a fast stretch of the flow (e.g. GD on √L just after phase I)
            does not stop the prediction; the saved points stay on the grid $kh$. With no
            failure this is the plain scheme, one projection per step; after a step fails
            the rest are not computed (``sharpness`` and ``grad_norms`` are nan there).
        throw: raise ``ValueError`` with the reason when the start or any projection fails;
            with ``False`` the result's ``status`` is ``"failed"`` and ``reason`` says at
            which step and with what $\|\nabla L\|$.

    Returns:
        A :class:`LimitingFlow`; ``grad_norms`` holds $\|\nabla L\|$ at each projected point.
    """
    c, use_log = _method(method)
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}.")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}.")
    if isinstance(max_halvings, bool) or not isinstance(max_halvings, int) or not (
            0 <= max_halvings <= 20):
        raise ValueError(f"max_halvings must be an int in 0..20, got {max_halvings!r}.")
    check_floating("x0", x0)
    project_kwargs = dict(project_kwargs or {})
    X0, reason = _start(loss_fn, x0, gap_rtol, project_kwargs, residual_fn)
    if reason is not None:
        if throw:
            raise ValueError(reason)
        return _failed(x0, reason)
    if residual_fn is not None:
        project_kwargs["residual_fn"] = residual_fn
    project_kwargs["throw"] = False
    dtype = jnp.result_type(*jax.tree.leaves(X0))
    flow, ok = _reproject(loss_fn, X0, jnp.asarray(step_size, dtype), num_steps,
                          jnp.asarray(c, dtype), jnp.asarray(use_log), project_kwargs,
                          2**max_halvings)
    if _is_traced(ok) or bool(jnp.all(ok)):
        return flow
    k = int(jnp.argmin(ok))
    halved = f" (substeps down to h/{2**max_halvings})" if max_halvings else ""
    reason = (f"re-projection step {k + 1} of {num_steps} (tau = {float(flow.ts[k + 1]):.4g}): "
              f"Phi did not converge{halved}, |grad L| = {float(flow.grad_norms[k + 1]):.3g} "
              f"after the projection (start of that step: {float(flow.grad_norms[k]):.3g})")
    if throw:
        raise ValueError(reason)
    return LimitingFlow(flow.ts, flow.xs, flow.sharpness, flow.result, flow.grad_norms, reason)


@eqx.filter_jit
def _reproject(loss_fn, X0, h, num_steps, c, use_log, project_kwargs, units):
    """``num_steps`` steps of ``h``, each as substeps of ``u`` of its ``units`` parts: ``u``
    starts at ``units``, halves when a projection fails, doubles after a success (capped by
    what is left of the step); the step fails when a substep of one part does. After a
    failed step the rest are skipped (the result is failed anyway)."""
    grad = jax.grad(loss_fn)
    units = int(units)

    def descent(x):  # the direction of -grad g at x, and lambda_1 there
        lam, dlam, _ = sharpness_and_gradient(loss_fn, x)
        return lam, optax.tree.scale(jnp.where(use_log, 1 / lam, 1.0), dlam)

    def substep(carry):
        x, g, done, u, _, _ = carry
        u = jnp.minimum(u, units - done)
        move = h * u.astype(h.dtype) / units
        proj = project_solve(loss_fn, optax.tree.add_scale(x, -move, g), **project_kwargs)
        ok = proj.result == FlowRESULTS.successful
        x = jax.tree.map(lambda a, b: jnp.where(ok, a, b), proj.value, x)
        done = done + jnp.where(ok, u, 0)
        # a new direction only where the iterate moved and the step goes on
        g = jax.lax.cond(ok & (done < units), lambda: descent(x)[1], lambda: g)
        return (x, g, done, jnp.where(ok, jnp.minimum(2 * u, units), u // 2),
                proj.grad_norm, ~ok & (u == 1))

    def step(carry, _):
        x, dead = carry

        def go():
            lam, g = descent(x)
            start = (x, g, jnp.int32(0), jnp.int32(units), jnp.asarray(jnp.nan, h.dtype),
                     jnp.bool_(False))
            y, _, _, _, gnorm, failed = jax.lax.while_loop(
                lambda s: (s[2] < units) & ~s[5], substep, start)
            return y, lam, gnorm, failed

        def skip():
            nan = jnp.asarray(jnp.nan, h.dtype)
            return x, nan, nan, jnp.bool_(True)

        y, lam, gnorm, failed = jax.lax.cond(dead, skip, go)
        return (y, dead | failed), (y, lam, gnorm, ~failed)

    (xl, _), (ys, lams, gnorms, ok) = jax.lax.scan(step, (X0, jnp.bool_(False)), None,
                                                  length=num_steps)
    xs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), X0, ys)
    lam_last = sharpness_and_gradient(loss_fn, xl)[0]
    ts = jnp.arange(num_steps + 1) * (h / c)
    g0 = optax.tree.norm(grad(X0))
    result = FlowRESULTS.where(jnp.all(ok), FlowRESULTS.successful, FlowRESULTS.not_converged)
    flow = LimitingFlow(ts, xs, jnp.append(lams, lam_last), result, jnp.append(g0, gnorms))
    return flow, ok
