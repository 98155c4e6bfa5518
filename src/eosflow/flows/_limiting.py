r"""The limiting flows on Γ of normalized GD and of GD on $\sqrt{L - L^*}$.

Arora, Li & Panigrahi (2022), Thms 4.4 and 4.6: with $\tau = \eta^2 t$,

* normalized GD: $\dfrac{dX}{d\tau} = -\tfrac14\, \partial\Phi(X)\, \nabla \log\lambda_1(X)$,
* GD on $\sqrt{L}$: $\dfrac{dX}{d\tau} = -\tfrac18\, \partial\Phi(X)\, \nabla\lambda_1(X)$,

from $X(0) = \Phi(x_0)$, where $\partial\Phi(X)$ projects onto $T_XΓ = \ker\nabla^2 L(X)$ and
$\nabla\lambda_1 = \nabla^3 L[v_1, v_1]$. Both decrease $\lambda_1$ along Γ.
"""

import numbers
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._errors import check_int
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
        substeps: :func:`reprojection_flow` only: the accepted substeps of each step (0 at
            the start), the step control's cost; ``None`` for :func:`limiting_flow`.
        unresolved: :func:`reprojection_flow` only: of those, the substeps of the finest
            length accepted although $\lambda_1$ changed non-linearly (it rose no more than
            its first-order change), where the step control could not resolve the flow (an
            eigenvalue crossing, or too few halvings).
    """

    ts: Array
    xs: PyTree
    sharpness: Array
    result: FlowRESULTS
    grad_norms: Array | None = None  # |grad L| at the saved points: the distance from Γ
    reason: str | None = eqx.field(static=True, default=None)
    substeps: Array | None = None  # reprojection_flow: accepted substeps per step
    unresolved: Array | None = None  # reprojection_flow: accepted unresolved, per step

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
    num_points = check_int("num_points", num_points, 2)
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
    max_halvings: int = 8,
    step_rtol: float | None = 0.05,
    step_atol: float | None = None,
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
    $O(1/h)$ steps: the same order as the scheme's own error. (Gauss–Newton alone from the
    moved point is cheaper, 103 s against 174 s for ``paper-mnist-ngd-cpu``'s prediction,
    but lands where $\lambda_1$ is lower: that prediction fell 48% against 46%, 16.3%
    below $\lambda_1$ at $\Phi(x_t)$ against 12.4%; not used.)

    **Step control.** A step may be too long for the first-order scheme while its projection
    converges: it lands on Γ far along (or off) the flow, and $\lambda_1$ can even rise
    (GD on √L on MNIST: the flow moves $\lambda_1/2 \approx 30$ times faster than normalized
    GD's). So each step runs as substeps $s = h/2^m$, and a substep from $X$ to
    $Y = \Phi(X - s\nabla g)$ is accepted only if its projection converged and $\lambda_1$
    changed as its first-order prediction says,
    $|\lambda_1(Y) - \lambda_1(X) - \langle\nabla\lambda_1(X), Y - X\rangle|
    \le \text{step\_rtol}\,|\langle\nabla\lambda_1(X), Y - X\rangle| + a\,\lambda_1(X)$
    with $a$ = ``step_atol``, the noise in $\lambda_1$ of points that are on Γ only to the
    projection's ``gtol`` (in float32 a tiny substep of normalized GD's flow on the MNIST
    MLP can show $\lambda_1$ "rising" by 1e-3 of itself: noise, not the flow). A rejected
    substep is retried at half the length; an accepted one doubles the next when its error
    was under a quarter of the bound (the length carries over to the next step). At the
    finest substep $h/2^{\text{max\_halvings}}$ a non-linear change is accepted if
    $\lambda_1$ rose by at most $|\langle\nabla\lambda_1(X), Y - X\rangle| + a\lambda_1$
    (the zig-zag across an eigenvalue crossing, where $\lambda_1$ has a kink; counted in
    ``unresolved``), and the flow fails if it rose more (the step left the flow, e.g. for
    another basin) or the projection did not converge. The saved points stay on the grid
    $kh$. An accepted substep's test costs nothing ($\lambda_1$ and $\nabla\lambda_1$ at
    $Y$ are the next substep's direction); a rejected one costs its projection and
    $\nabla\lambda_1$ at $Y$.
    The bound is per substep: in float32 the default $a$ dominates short substeps, so there
    the error stops shrinking with ``step_rtol`` once $a\lambda_1$ exceeds
    ``step_rtol`` times a substep's change.

    Args:
        loss_fn, x0, method: as for :func:`limiting_flow`; the flow starts at $\Phi(x_0)$.
        step_size: $h$.
        num_steps: outer steps; ``ts`` has ``num_steps + 1`` points.
        gap_rtol: the start is rejected without an eigen-gap.
        residual_fn: $r$ with $L = \tfrac12\|r\|^2$ (see :func:`project_solve`).
        project_kwargs: options of :func:`project_solve` for every projection.
        max_halvings: the finest substep is $h/2^{\text{max\_halvings}}$ (an int in 0..20).
        step_rtol: the step control's relative bound (a float in (0, 1]); ``None`` turns it
            off: every step starts as one substep and only a failed projection halves it
            (the plain first-order scheme, whose order the tests check). In float64 the
            flow's error is about proportional to it (toys: 0.1, 0.03, 0.01 give errors in
            that ratio, whatever $h$).
        step_atol: $a$, relative to $\lambda_1$ (default 1e-9 in float64, 2e-3 in float32).
        throw: raise ``ValueError`` with the reason when the start or any step fails; with
            ``False`` the result's ``status`` is ``"failed"`` and ``reason`` says at which
            step and why. After a failed step the rest are not computed (``sharpness`` and
            ``grad_norms`` are nan there).

    Returns:
        A :class:`LimitingFlow`; ``grad_norms`` holds $\|\nabla L\|$ at each projected point,
        ``substeps`` the accepted substeps of each step (0 for the start) and ``unresolved``
        how many of them the control accepted at the finest length although non-linear.

    Raises:
        ValueError: bad options (one line naming the argument); with ``throw``, a failed
            start or step.
    """
    c, use_log = _method(method)
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}.")
    num_steps = check_int("num_steps", num_steps)
    if isinstance(max_halvings, bool) or not isinstance(max_halvings, int) or not (
            0 <= max_halvings <= 20):
        raise ValueError(f"max_halvings must be an int in 0..20, got {max_halvings!r}.")
    _check_tolerance("step_rtol", step_rtol, lambda v: 0 < v <= 1, "(0, 1], e.g. 0.05,")
    _check_tolerance("step_atol", step_atol, lambda v: v >= 0, "[0, inf), e.g. 2e-3,")
    x0_dtype = check_floating("x0", x0)
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
    rtol = None if step_rtol is None else jnp.asarray(step_rtol, dtype)
    step_atol = step_noise(x0_dtype) if step_atol is None else step_atol
    flow, code, tried = _reproject(loss_fn, X0, jnp.asarray(step_size, dtype), num_steps,
                                   jnp.asarray(c, dtype), jnp.asarray(use_log),
                                   project_kwargs, 2**max_halvings, rtol,
                                   jnp.asarray(step_atol, dtype))
    if _is_traced(code) or not bool(jnp.any(code)):
        return flow
    k = int(jnp.argmax(code != 0))
    where = f"re-projection step {k + 1} of {num_steps} (tau = {float(flow.ts[k + 1]):.4g})"
    finest = f"h/{2**max_halvings}"
    if int(code[k]) == 1:
        reason = (f"{where}: Phi did not converge (substeps down to {finest}), |grad L| = "
                  f"{float(flow.grad_norms[k + 1]):.3g} after the projection (start of that "
                  f"step: {float(flow.grad_norms[k]):.3g})")
    else:
        reason = (f"{where}: lambda_1 rose from {float(tried[1][k]):.6g} to "
                  f"{float(tried[0][k]):.6g} on a substep of {finest}; the flow lowers "
                  "lambda_1, so the step left it (a larger max_halvings or more steps may help)")
    if throw:
        raise ValueError(reason)
    return LimitingFlow(flow.ts, flow.xs, flow.sharpness, flow.result, flow.grad_norms, reason,
                        flow.substeps, flow.unresolved)


def _check_tolerance(name, value, within, shown):
    """``None``, or a real number for which ``within(value)`` holds."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in {shown} or None, got {value!r}.")
    if not within(value):
        raise ValueError(f"{name} must be a number in {shown} or None, got {value!r}.")


def step_noise(dtype) -> float:
    """:func:`reprojection_flow`'s default ``step_atol`` for ``dtype``: the relative noise of
    λ1 at points on Γ to a projection's ``gtol``."""
    return 1e-9 if jnp.dtype(dtype) == jnp.float64 else 2e-3


@eqx.filter_jit
def _reproject(loss_fn, X0, h, num_steps, c, use_log, project_kwargs, units, rtol, atol):
    """``num_steps`` steps of ``h``, each as substeps of ``u`` of its ``units`` parts under
    the step control of :func:`reprojection_flow` (``rtol`` None: only failed projections
    halve ``u``). Returns the flow, a code per step (0 ok, 1 the projection failed at the
    finest substep, 2 lambda_1 rose too much there, 3 skipped after a failed step) and, per step,
    lambda_1 at the last tried point and at the last accepted one."""
    grad = jax.grad(loss_fn)
    units = int(units)
    dtype = h.dtype
    nan = jnp.asarray(jnp.nan, dtype)

    def descent(x):  # lambda_1 and grad lambda_1 at x
        return sharpness_and_gradient(loss_fn, x)[:2]

    def substep(s):
        x, lam, dlam, done, u, _, code, n, _ = s
        u = jnp.minimum(u, units - done)
        move = h * u.astype(dtype) / units
        g = optax.tree.scale(jnp.where(use_log, 1 / lam, 1.0), dlam)
        proj = project_solve(loss_fn, optax.tree.add_scale(x, -move, g), **project_kwargs)
        y = proj.value
        conv = proj.result == FlowRESULTS.successful
        lam_y, dlam_y = jax.lax.cond(conv, descent, lambda y: (nan, dlam), y)
        change = lam_y - lam
        pred = optax.tree.vdot(dlam, optax.tree.sub(y, x))  # the first-order change
        bound = atol * jnp.abs(lam)
        if rtol is None:
            linear, grow = jnp.bool_(True), jnp.bool_(True)
        else:
            err = jnp.abs(change - pred)
            tol = rtol * jnp.abs(pred) + bound
            linear, grow = err <= tol, err <= tol / 4
        floor = u == 1
        # at the finest length: a rise no larger than the first-order change is the zig-zag
        # across an eigenvalue crossing's kink; a larger one left the flow
        ok = conv & (linear | (floor & (change <= jnp.abs(pred) + bound)))
        keep = lambda a, b: jax.tree.map(lambda p, q: jnp.where(ok, p, q), a, b)
        code = jnp.where(ok | ~floor, 0, jnp.where(conv, 2, 1)).astype(jnp.int32)
        u_next = jnp.where(ok, jnp.where(grow, jnp.minimum(2 * u, units), u), u // 2)
        return (keep(y, x), jnp.where(ok, lam_y, lam), keep(dlam_y, dlam),
                done + jnp.where(ok, u, 0), u_next, proj.grad_norm, code,
                n + jnp.stack([ok, ok & ~linear]).astype(jnp.int32), lam_y)

    def step(carry, _):
        x, lam, dlam, u, dead = carry

        def go():
            s = (x, lam, dlam, jnp.int32(0), u, nan, jnp.int32(0), jnp.zeros(2, jnp.int32),
                 nan)
            y, lam_y, dlam_y, _, u_y, gnorm, code, n, tried = jax.lax.while_loop(
                lambda s: (s[3] < units) & (s[6] == 0), substep, s)
            return y, lam_y, dlam_y, u_y, gnorm, code, n, tried

        def skip():
            return x, lam, dlam, u, nan, jnp.int32(3), jnp.zeros(2, jnp.int32), nan

        y, lam_y, dlam_y, u_y, gnorm, code, n, tried = jax.lax.cond(dead, skip, go)
        failed = code != 0
        out = (y, jnp.where(failed, nan, lam_y), gnorm, code, n, (tried, lam_y))
        # the substep's length carries over under the control; without it each step
        # starts whole (the plain scheme)
        u_y = jnp.int32(units) if rtol is None else jnp.maximum(u_y, 1)
        return (y, lam_y, dlam_y, u_y, dead | failed), out

    lam0, dlam0 = descent(X0)
    _, (ys, lams, gnorms, codes, subs, tried) = jax.lax.scan(
        step, (X0, lam0, dlam0, jnp.int32(units), jnp.bool_(False)), None, length=num_steps)
    xs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), X0, ys)
    ts = jnp.arange(num_steps + 1) * (h / c)
    g0 = optax.tree.norm(grad(X0))
    result = FlowRESULTS.where(jnp.all(codes == 0), FlowRESULTS.successful,
                               FlowRESULTS.not_converged)
    zero = jnp.int32(0)
    flow = LimitingFlow(ts, xs, jnp.append(lam0, lams), result, jnp.append(g0, gnorms),
                        substeps=jnp.append(zero, subs[:, 0]),
                        unresolved=jnp.append(zero, subs[:, 1]))
    return flow, codes, tried
