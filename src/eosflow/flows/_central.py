r"""The central flow of gradient descent at the Edge of Stability.

Cohen, Damian, Talwalkar, Kolter & Lee, *Understanding Optimization in Deep Learning with
Central Flows*, ICLR 2025, arXiv 2410.24206. With time $t$ in steps and $\eta$ the step size,

$$\frac{dw}{dt} = -\eta\Big[\nabla L(w) + \tfrac12\nabla\langle\Sigma, \nabla^2L(w)\rangle\Big],$$

$\Sigma = U X U^\top$, $U$ the top-$k$ Hessian eigenvectors, $X \succeq 0$ chosen so that no
eigenvalue passes $2/\eta$ (complementarity). With $G_{ij} = \nabla^3L[u_i, u_j]$ (so
$\nabla\langle\Sigma, H\rangle = \sum_{ij} X_{ij}G_{ij}$) and $A = U^\top(2/\eta - H)U$,
$\dot A_{ij} = -\langle G_{ij}, \dot w\rangle$. One critical eigenvalue, at the edge:
$\sigma^2 = X_{11} = \max(0, -2\langle\nabla L, \nabla\lambda_1\rangle/\|\nabla\lambda_1\|^2)$,
which makes $d\lambda_1/dt = 0$.

Discretisation (the paper's): explicit Euler in $t$ with ``substeps`` steps per GD step,
and $X$ chosen at each substep so that the *next* $A$ is PSD and complementary to $X$,

$$X \succeq 0,\quad A + \Delta t\,\eta\big(\langle G, \nabla L\rangle +
\tfrac12\mathcal{B}[X]\big) \succeq 0,\quad \text{complementary},\qquad
\mathcal{B}[X]_{ij} = \textstyle\sum_{kl}\langle G_{ij}, G_{kl}\rangle X_{kl},$$

a semidefinite complementarity problem (:func:`solve_sdcp`). At $A = 0$ it gives the
continuous $X$ above; when a step has overshot ($A \not\succeq 0$) it pulls the eigenvalue back
to $2/\eta$ in one substep (a projection, like the restoring term of the limiting flows). Not
diffrax: the field switches on and off at the onset (no higher-order solver gains there), the
projection is tied to the step, and the eigen-solver's warm start must be carried from step
to step, which a diffrax vector field cannot do.

**RMSProp** (``optimizer="rmsprop"``, optax's update $\nu \leftarrow \beta_2\nu + (1 -
\beta_2)g^{\odot2}$, $w \leftarrow w - \eta\,g/D$, $D = \sqrt{\nu + \epsilon}$): the state is
$(w, \nu)$, the critical directions are those of the *preconditioned* sharpness
$\lambda_i(D^{-1}H)$, held at $2/\eta$, and, with $u_i$ the generalized eigenvectors
($Hu_i = \lambda_iDu_i$, $U^\top DU = I$, $\Sigma = UXU^\top$ the weights' covariance),

$$\dot w = -\eta D^{-1}\bar g,\quad \bar g = \nabla L + \tfrac12\nabla\langle\Sigma,
H\rangle,\qquad \dot\nu = \kappa\Big[\bar g^{\odot2} + \operatorname{diag}(H\Sigma H) -
\nu\Big],\qquad \kappa = -\ln\beta_2,$$

the second because the oscillation $\delta$ ($\mathbb E\,\delta\delta^\top = \Sigma$) makes the
gradient $\bar g + H\delta$ to second order, whose mean square the EMA follows ($\kappa$: the
EMA's exact decay rate for a constant input). With $A = U^\top(\tfrac2\eta D - H)U$ and
$\dot D = \dot\nu/(2D)$,
$\dot A_{ij} = \tfrac1\eta\langle u_i\odot u_j, \dot\nu/D\rangle - \langle G_{ij}, \dot w\rangle$,
affine in $X$: the same complementarity problem with
$\mathcal B_{ijkl} = \tfrac\eta2\langle G_{ij}, D^{-1}G_{kl}\rangle +
\tfrac\kappa\eta\big(\lambda_k\lambda_l\langle D, u_i u_j u_k u_l\rangle +
\langle u_iu_j, D^{-1}\nabla L\, G_{kl}\rangle\big)$ (products elementwise), symmetrised for
the solver: the second term with $\sqrt{\lambda_i\lambda_j\lambda_k\lambda_l}$, the third by
averaging over $(ij)\leftrightarrow(kl)$; exact for one critical eigenvalue, and for several
where they are equal (at the edge) up to the third term's asymmetry, which the next substep's
projection absorbs. The oscillation stabilises RMSProp twice: the
cubic term lowers $H$, and the larger $\nu$ lowers $D^{-1}$ (Cohen, Damian et al., Sec. 5).

With ``bias_correction`` (optax.rmsprop's, $\hat\nu_c = \nu_c/(1 - \beta_2^c)$ after $c$
updates) the state is $\hat\nu$ itself: differentiating $\nu/(1 - \beta_2^{t+1})$ gives the
same equation with the time-dependent rate $\kappa/(1 - \beta_2^{t+1})$ (step $t$ of the flow
is the optimizer's update $c = t + 1$), and $\hat\nu(0) = \nabla L(w_0)^{\odot2}$, the first
update's. Everything above holds with that rate.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._errors import check_int
from .._tree import check_floating, leading_block, ravel
from .._types import Array, Bool, Float, Int, PyTree
from ..curvature import (
    hessian_operator,
    preconditioned_sharpness,
    sum_over_batches,
    top_eigenpairs,
)
from ..optim import METHODS
from ._sdcp import solve_sdcp

# optimizers whose central flow is implemented (their Method record says so)
CENTRAL_FLOW_OPTIMIZERS = tuple(name for name, m in METHODS.items() if m.central_flow)


class CentralState(eqx.Module):
    """What the central flow carries from step to step (checkpoint all of it).

    Attributes:
        params: $w(t)$.
        warm_start: the eigen-solver's warm start (leading block axis), for the next step.
        X: the last $X$ (``(k, k)``), in the basis of the last eigen-solve's eigenvectors.
        step: $t$, in steps.
        nu: RMSProp's second moment $\nu(t)$ (shaped like ``params``); None for GD. The
            warm start is then in the symmetric coordinates of $D^{-1/2}HD^{-1/2}$.
    """

    params: PyTree
    warm_start: PyTree
    X: Float[Array, "k k"]
    step: Int[Array, ""]
    nu: PyTree = None


class CentralMetrics(eqx.Module):
    r"""Per-step metrics, evaluated at the start of the step (leading axis: steps).

    Attributes:
        loss: $L(w)$.
        predicted_loss: $L(w) + \tfrac12\langle\Sigma, H\rangle = L + \tfrac12\sum_i
            X_{ii}\lambda_i$: the predicted time average of GD's loss.
        grad_norm: $\|\nabla L(w)\|$.
        predicted_grad_norm_sq: $\|\nabla L(w)\|^2 + \langle\Sigma, H^2\rangle$: the predicted
            time average of the optimizer's $\|\nabla L\|^2$.
        sigma2: $\operatorname{tr} X$ ($=\sigma^2$ with one critical eigenvalue), units of
            $\|w\|^2$.
        eigenvalues: the top ``k`` Hessian eigenvalues (descending); for RMSProp those of
            the preconditioned Hessian $D^{-1}H$ (units of $1/\eta$, edge $2/\eta$).
        X: $\Sigma$ in the eigenbasis, ``(k, k)``.
        num_matvecs: Hessian-vector products spent in the step's eigen-solves.
        converged: every eigen-solve of the step met its tolerance.
        sdcp_residual: the largest relative residual of the step's complementarity solves.
        sdcp_iters: the most iterations one of them took (the cap is 3000).
    """

    loss: Float[Array, "..."]
    predicted_loss: Float[Array, "..."]
    grad_norm: Float[Array, "..."]
    predicted_grad_norm_sq: Float[Array, "..."]
    sigma2: Float[Array, "..."]
    eigenvalues: Float[Array, "... k"]
    X: Float[Array, "... k k"]
    num_matvecs: Int[Array, "..."]
    converged: Bool[Array, "..."]
    sdcp_residual: Float[Array, "..."]
    sdcp_iters: Int[Array, "..."]


class CentralFlow(eqx.Module):
    """Result of :func:`central_flow`.

    Attributes:
        steps: ``(num_steps,)``, the time $t$ (in GD steps) of each row of ``metrics``.
        metrics: a :class:`CentralMetrics` with leading axis ``num_steps``.
        saved_steps: ``(num_steps // save_every + 1,)``: times of ``params``.
        params: $w(t)$ at ``saved_steps`` (PyTree, leading axis).
        state: the final :class:`CentralState` (pass it to :func:`central_flow_step` to go on).
    """

    steps: Int[Array, " n"]
    metrics: CentralMetrics
    saved_steps: Int[Array, " m"]
    params: PyTree
    state: CentralState


def _check(optimizer, lr, substeps, k, decay=0.9, eps=1e-8, bias_correction=False):
    """Validate the central flow's options (one error line naming the argument); return
    ``substeps`` and ``k`` as ints."""
    if optimizer not in CENTRAL_FLOW_OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {list(CENTRAL_FLOW_OPTIMIZERS)} for the central flow, "
            f"got {optimizer!r}."
        )
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    substeps = check_int("substeps", substeps)
    k = check_int("k", k)
    if optimizer == "rmsprop":
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 < decay < 1:
            raise ValueError(f"decay must be a number in (0, 1), got {decay!r}.")
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps >= 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}.")
        if not isinstance(bias_correction, bool):
            raise ValueError(f"bias_correction must be True or False, got {bias_correction!r}.")
    return substeps, k


def _full_loss(loss_fn: Callable, batches: PyTree | None) -> Callable:
    if batches is None:
        return loss_fn
    return lambda w: sum_over_batches(lambda b: loss_fn(w, b), batches)


def _scale(nu, eps):
    r"""$D = \sqrt{\nu + \epsilon}$ (optax.rmsprop's denominator)."""
    return jax.tree.map(lambda n: jnp.sqrt(n + eps), nu)


def rmsprop_nu0(grad: PyTree, decay: float, *, bias_correction: bool = False) -> PyTree:
    r"""The second moment optax.rmsprop's first update divides by (its state starts at
    $\nu = 0$): RMSProp's flows start there by default.

    Args:
        grad: $\nabla L(w_0)$, a PyTree like the parameters.
        decay: $\beta_2$.
        bias_correction: optax's; then the first update's $\hat\nu$.

    Returns:
        $(1 - \beta_2)\nabla L(w_0)^{\odot 2}$, or $\nabla L(w_0)^{\odot 2}$ with
        ``bias_correction`` (a PyTree like ``grad``, units of the gradient squared).
    """
    scale = 1.0 if bias_correction else 1 - decay
    return jax.tree.map(lambda x: scale * x * x, grad)


def rmsprop_rate(decay: float, t: float | Array, *, bias_correction: bool = False):
    r"""The rate of RMSProp's second-moment flow $\dot\nu = r(t)(g^{\odot2} - \nu)$.

    Args:
        decay: $\beta_2 \in (0, 1)$.
        t: the flow's time in optimizer steps (a number or a scalar array; step $t$ is
            optax's update $t + 1$).
        bias_correction: the rate of optax's bias-corrected $\hat\nu = \nu/(1 -
            \beta_2^{t+1})$ rather than of $\nu$.

    Returns:
        $\kappa = -\ln\beta_2$ per step (a float), or with ``bias_correction``
        $\kappa/(1 - \beta_2^{t+1})$ (an array of JAX's default float dtype, shaped like
        ``t``), which is $\kappa/(1 - \beta_2)$ at $t = 0$ and tends to $\kappa$.

    Raises:
        ValueError: ``decay`` outside (0, 1).
    """
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 < decay < 1:
        raise ValueError(f"decay must be a number in (0, 1), got {decay!r}.")
    kappa = -math.log(decay)
    if not bias_correction:
        return kappa
    return kappa / -jnp.expm1(-kappa * (jnp.asarray(t, dtype=float) + 1))


def rmsprop_stable_substep(w: PyTree, nu: PyTree, grad: PyTree, *, lr, dt: float, decay: float,
                           eps: float, t=0.0, bias_correction: bool = False
                           ) -> tuple[PyTree, PyTree]:
    r"""One Euler substep of RMSProp's stable flow (its central flow with $\Sigma = 0$) at time
    ``t``: $w \leftarrow w - \eta\,\Delta t\,\nabla L/\sqrt{\nu + \epsilon}$,
    $\nu \leftarrow \nu + \Delta t\,\kappa\,(\nabla L^{\odot 2} - \nu)$ with $\kappa$ from
    :func:`rmsprop_rate`; ``grad`` is $\nabla L(w)$."""
    rate = rmsprop_rate(decay, t, bias_correction=bias_correction)
    w = jax.tree.map(lambda x, g, n: x - lr * dt * g / jnp.sqrt(n + eps), w, grad, nu)
    return w, jax.tree.map(lambda n, g: n + (dt * rate * (g * g - n)).astype(n.dtype), nu, grad)


def _check_nu(nu, params, eps):
    r"""``nu`` shaped like ``params``, finite, >= 0, and $\nu + \epsilon > 0$ (where concrete)."""
    if jax.tree.structure(nu) != jax.tree.structure(params) or [
            jnp.shape(x) for x in jax.tree.leaves(nu)] != [
            jnp.shape(x) for x in jax.tree.leaves(params)]:
        raise ValueError("nu0 must be a PyTree shaped like params (RMSProp's second moment).")
    leaves = jax.tree.leaves(nu)
    if all(not isinstance(x, jax.core.Tracer) for x in leaves):
        bad = sum(int(jnp.sum(~(x >= 0) | ~jnp.isfinite(x))) for x in leaves)
        if bad:
            raise ValueError(f"nu0 has {bad} negative or non-finite entries; a second moment "
                             "is >= 0.")
        zero = sum(int(jnp.sum(x + eps <= 0)) for x in leaves)
        if zero:
            raise ValueError(
                f"eps = {eps!r} with {zero} zero entries of nu0 (a zero second moment): the "
                "preconditioner sqrt(nu + eps) would be 0; pass eps > 0.")


def central_flow_init(loss_fn: Callable, params: PyTree, *, k: int = 1, v0: PyTree | None = None,
                      tol: float = 1e-3, batches: PyTree | None = None, optimizer: str = "gd",
                      decay: float = 0.9, eps: float = 1e-8, nu0: PyTree | None = None,
                      bias_correction: bool = False) -> CentralState:
    r"""The start state: ``params`` and a converged eigen-solve there (the warm start).

    For ``optimizer="rmsprop"``, also $\nu(0)$: ``nu0``, or by default the second moment
    optax.rmsprop's first step uses, $(1 - \beta_2)\nabla L(w_0)^{\odot2}$ (from $\nu = 0$),
    or with ``bias_correction`` its $\hat\nu = \nabla L(w_0)^{\odot2}$ (:func:`rmsprop_nu0`);
    the eigen-solve is then of $D^{-1/2}HD^{-1/2}$. Raises ``ValueError`` for a bad
    optimizer, ``decay``, ``eps``, ``bias_correction`` or ``nu0`` (negative entries, zeros with
    ``eps = 0``).
    """
    _, k = _check(optimizer, 1.0, 1, k, decay, eps, bias_correction)
    check_floating("params", params)
    if v0 is not None:
        leading_block("v0", v0, params)
    loss = _full_loss(loss_fn, batches)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    nu = None
    if optimizer == "rmsprop":
        if nu0 is None:
            nu0 = rmsprop_nu0(jax.grad(loss)(params), decay, bias_correction=bias_correction)
        _check_nu(nu0, params, eps)
        nu = jax.tree.map(lambda n, x: jnp.asarray(n, x.dtype), nu0, params)
        res = preconditioned_sharpness(loss, params, _scale(nu, eps), k, v0=v0, tol=tol,
                                       throw=False)
    else:
        res = top_eigenpairs(loss, params, k, v0=v0, tol=tol, throw=False)
    return CentralState(params, res.warm_start, jnp.zeros((k, k), dtype),
                        jnp.zeros((), jnp.int32), nu)


def _third(loss, w, U, pairs_i, pairs_j):
    r"""$\nabla^3 L(w)[u_i, u_j]$ for each pair, by a jvp of a Hessian-vector product."""

    def hvp(x, v):
        return jax.jvp(jax.grad(loss), (x,), (v,))[1]

    def one(i, j):
        ui = jax.tree.map(lambda a: a[i], U)
        uj = jax.tree.map(lambda a: a[j], U)
        return jax.jvp(lambda x: hvp(x, uj), (w,), (ui,))[1]

    return jax.vmap(one)(pairs_i, pairs_j)


def _substep(loss, w, nu, warm, lr, dt, k, tol, rms, t):
    # the gradient and the eigen-solve's products share one forward and backward pass
    L, g, H = hessian_operator(loss, w).linearize()
    gf = ravel(g)[0]
    iu, ju = jnp.triu_indices(k)
    if rms is None:
        eig = top_eigenpairs(H, w, k, v0=warm, tol=tol, throw=False)
        U = eig.eigenvectors
    else:
        decay, eps, bias_correction = rms
        kappa = rmsprop_rate(decay, t, bias_correction=bias_correction)
        if bias_correction:  # a traced rate, in the weights' precision
            kappa = kappa.astype(gf.dtype)
        D = _scale(nu, eps)
        eig = preconditioned_sharpness(H, w, D, k, v0=warm, tol=tol, throw=False)
        # generalized eigenvectors u = D^{-1/2} v: H u = lambda D u, U^T D U = I
        U = jax.tree.map(lambda v, d: v * jax.lax.rsqrt(d).astype(v.dtype), eig.eigenvectors, D)
    lam = eig.eigenvalues
    G = _third(loss, w, U, iu, ju)  # (p, ...) PyTree, p = k(k+1)/2
    Gf = jax.vmap(lambda t: ravel(t)[0])(G)
    idx = jnp.zeros((k, k), jnp.int32).at[iu, ju].set(jnp.arange(iu.size, dtype=jnp.int32))
    idx = idx.at[ju, iu].set(jnp.arange(iu.size, dtype=jnp.int32))
    if rms is None:  # dA_ij/dt = <G_ij, -dw/dt>: lr <G_ij, g> + lr/2 <G_ij, G_kl> X_kl
        alpha = jnp.diag(2 / lr - lam) + dt * lr * (Gf @ gf)[idx]
        B = (Gf @ Gf.T)[idx][:, :, idx] * (dt * lr / 2)  # (k, k, k, k)
    else:
        Df, nuf = ravel(D)[0], ravel(nu)[0]
        Uf = jax.vmap(lambda t: ravel(t)[0])(U)
        pairs = Uf[iu] * Uf[ju]  # u_i * u_j, (p, D)
        GD = Gf / Df
        a = lr * (GD @ gf) + (kappa / lr) * (pairs @ ((gf * gf - nuf) / Df))
        root = jnp.sqrt(jnp.maximum(lam, 0))
        W = pairs * (root[iu] * root[ju])[:, None] * jnp.sqrt(Df)
        cross = (pairs * (gf / Df)) @ Gf.T  # from g * drift in the mean gradient's square
        Bp = (lr / 2) * (GD @ Gf.T) + (kappa / lr) * (W @ W.T + 0.5 * (cross + cross.T))
        alpha = jnp.diag(2 / lr - lam) + dt * a[idx]
        B = Bp[idx][:, :, idx] * dt
    sol = solve_sdcp(alpha, B)
    X = sol.X
    weights = X[iu, ju] * jnp.where(iu == ju, 1.0, 2.0)  # sum over i, j of X_ij G_ij
    drift = jax.tree.map(lambda t: jnp.tensordot(weights.astype(t.dtype), t, 1), G)
    dw = optax.tree.add_scale(g, 0.5, drift)
    if rms is None:
        grad_sq = jnp.sum(jnp.diag(X) * lam**2)  # <Sigma, H^2>, U orthonormal
        nu_next = None
    else:
        HU = lam[:, None] * Df * Uf  # H u_i = lambda_i D u_i
        osc = jnp.einsum("ij,in,jn->n", X, HU, HU)  # diag(H Sigma H)
        grad_sq = jnp.sum(osc)
        mean = ravel(dw)[0]  # the mean gradient, before the division by D
        nu_new = nuf + dt * kappa * (mean * mean + osc - nuf)
        nu_next = ravel(nu)[1](nu_new.astype(nuf.dtype))
        dw = jax.tree.map(lambda x, d: x / d, dw, D)
    w_next = optax.tree.add_scale(w, -lr * dt, dw)
    metrics = CentralMetrics(
        loss=L,
        predicted_loss=L + 0.5 * jnp.sum(jnp.diag(X) * lam),
        grad_norm=jnp.linalg.norm(gf),
        predicted_grad_norm_sq=jnp.vdot(gf, gf) + grad_sq,
        sigma2=jnp.trace(X),
        eigenvalues=lam,
        X=X,
        num_matvecs=eig.num_matvecs,
        converged=eig.converged,
        sdcp_residual=sol.residual,
        sdcp_iters=sol.num_iters,
    )
    return w_next, nu_next, eig.warm_start, metrics


def central_flow_step(loss_fn: Callable, state: CentralState, *, lr: float, substeps: int = 4,
                      tol: float = 1e-3, batches: PyTree | None = None, decay: float = 0.9,
                      eps: float = 1e-8, bias_correction: bool = False
                      ) -> tuple[CentralState, CentralMetrics]:
    r"""Advance the central flow by one optimizer step ($t \to t + 1$), in ``substeps`` Euler
    steps: GD's, or RMSProp's (with ``decay`` $\beta_2$, ``eps`` and ``bias_correction``) when
    ``state.nu`` is set.

    Returns the new state and the metrics at the step's start (matvecs summed over the
    substeps). ``jit``-able; ``lr``, ``tol``, ``decay``, ``eps`` static floats, ``substeps`` a
    static int, ``bias_correction`` a static bool.
    """
    k = state.X.shape[0]
    loss = _full_loss(loss_fn, batches)
    dt = 1.0 / substeps
    rms = None if state.nu is None else (decay, eps, bias_correction)

    def body(carry, j):
        w, nu, warm = carry
        t = state.step + j * dt
        w, nu, warm, m = _substep(loss, w, nu, warm, lr, dt, k, tol, rms, t)
        return (w, nu, warm), m

    (w, nu, warm), ms = jax.lax.scan(body, (state.params, state.nu, state.warm_start),
                                     jnp.arange(substeps))
    first = jax.tree.map(lambda a: a[0], ms)
    metrics = eqx.tree_at(
        lambda m: (m.num_matvecs, m.converged, m.sdcp_residual, m.sdcp_iters), first,
        (jnp.sum(ms.num_matvecs), jnp.all(ms.converged), jnp.max(ms.sdcp_residual),
         jnp.max(ms.sdcp_iters)),
    )
    return CentralState(w, warm, ms.X[-1], state.step + 1, nu), metrics


def central_flow(
    loss_fn: Callable,
    params: PyTree,
    *,
    lr: float,
    num_steps: int,
    k: int = 1,
    substeps: int = 4,
    save_every: int = 1,
    tol: float = 1e-3,
    v0: PyTree | None = None,
    batches: PyTree | None = None,
    optimizer: str = "gd",
    decay: float = 0.9,
    eps: float = 1e-8,
    nu0: PyTree | None = None,
    bias_correction: bool = False,
) -> CentralFlow:
    r"""The central flow of GD (or RMSProp) with step size ``lr`` from ``params``.

    Predicts the time average of the optimizer's trajectory at the Edge of Stability: while
    the sharpness is below $2/\eta$ the flow is gradient flow $\dot w = -\eta\nabla L$ (the
    "stable" flow); once it reaches $2/\eta$, the term $-\tfrac\eta2\nabla\langle\Sigma, H\rangle$
    holds every tracked eigenvalue at $\le 2/\eta$. For RMSProp the state is $(w, \nu)$, the
    edge is on the preconditioned sharpness $\lambda_1(D^{-1}H)$, $D = \sqrt{\nu + \epsilon}$,
    and the oscillation also feeds $\nu$. See the module docstring for the equations and the
    discretisation (Euler in $t$, ``substeps`` per step, the complementarity problem solved in
    JAX at each substep).

    Args:
        loss_fn: $L$, ``loss_fn(params)`` (or ``loss_fn(params, batch)`` summed over
            ``batches``), a scalar.
        params: $w(0)$, a PyTree of floating arrays ($D$ entries).
        lr: $\eta$. The threshold is $2/\eta$ on the largest algebraic eigenvalue of $H$
            (GD) or $D^{-1}H$ (RMSProp).
        num_steps: how many optimizer steps of time to integrate
            ($t \in [0, \text{num\_steps}]$).
        k: eigenvalues tracked (and allowed to be critical together); the paper tracks a few.
            RMSProp's preconditioned spectrum has a cluster at the top: on a digits MLP one
            tracked eigenvalue left the flow's sharpness 20% above the edge, three 5-9%.
        substeps: Euler steps per optimizer step ($\Delta t = 1/\text{substeps}$).
        save_every: keep $w$ every this many steps (``num_steps`` must be a multiple).
        tol: relative tolerance of each warm-started eigen-solve.
        v0: warm start for the first eigen-solve.
        batches: optional batches summed by the loss.
        optimizer: ``"gd"`` or ``"rmsprop"`` (optax.rmsprop: no momentum, $\epsilon$ inside
            the square root).
        decay: RMSProp's $\beta_2$ (the EMA's rate is $-\ln\beta_2$ per step).
        eps: RMSProp's $\epsilon$.
        nu0: RMSProp's $\nu(0)$, shaped like ``params``; default
            $(1 - \beta_2)\nabla L(w_0)^{\odot 2}$, the second moment of optax.rmsprop's first
            step ($\nabla L(w_0)^{\odot 2}$ with ``bias_correction``).
        bias_correction: RMSProp's (``optax.rmsprop(..., bias_correction=True)``): the state
            is then $\hat\nu$, whose rate is $-\ln\beta_2/(1 - \beta_2^{t+1})$. With
            $\beta_2$ near 1 it is what keeps the start near the edge: optax's uncorrected
            first second moment $(1 - \beta_2)g^2$ puts $\lambda_1(D^{-1}H)$ up to a factor
            $(1 - \beta_2)^{-1/2}$ higher (less where $\epsilon$ matters), where the Euler
            substeps are unstable.

    Returns:
        A :class:`CentralFlow`: per-step :class:`CentralMetrics` (``predicted_loss``,
        ``predicted_grad_norm_sq``, ``sigma2``, ``eigenvalues``, ...), $w$ at
        ``saved_steps``, and the final state (with $\nu$ for RMSProp).

    Raises:
        ValueError: an optimizer other than ``"gd"`` or ``"rmsprop"``, non-positive ``lr``,
            a bad count, ``decay`` outside (0, 1), negative ``eps``, a ``bias_correction``
            that is not a bool, a ``nu0`` not shaped
            like ``params`` or with negative entries, or zeros in ``nu0`` with ``eps = 0``.

    References:
        Cohen, Damian, Talwalkar, Kolter, Lee, *Understanding Optimization in Deep Learning
        with Central Flows*, ICLR 2025, arXiv 2410.24206. Damian, Nichani, Lee,
        *Self-Stabilization*, ICLR 2023, arXiv 2209.15594.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> jax.config.update("jax_enable_x64", True)
        >>> # L = -c x + (a + x) y^2 / 2: the sharpness a + x rises at rate lr * c until 2/lr,
        >>> # then sigma^2 = 2c holds it there and the flow stops (x = 2/lr - a).
        >>> loss = lambda w: -0.5 * w[0] + 0.5 * (1.0 + w[0]) * w[1] ** 2
        >>> flow = central_flow(loss, jnp.array([0.0, 0.0]), lr=0.1, num_steps=400)
        >>> round(float(flow.state.params[0]), 6), round(float(flow.metrics.sigma2[-1]), 6)
        (19.0, 1.0)
    """
    substeps, k = _check(optimizer, lr, substeps, k, decay, eps, bias_correction)
    num_steps, save_every = check_int("num_steps", num_steps), check_int("save_every", save_every)
    if num_steps % save_every:
        raise ValueError(
            f"num_steps = {num_steps} must be a multiple of save_every = {save_every}."
        )
    state = central_flow_init(loss_fn, params, k=k, v0=v0, tol=tol, batches=batches,
                              optimizer=optimizer, decay=float(decay), eps=float(eps), nu0=nu0,
                              bias_correction=bias_correction)
    return _run(loss_fn, state, batches, float(lr), substeps, float(tol), num_steps, save_every,
                float(decay), float(eps), bias_correction)


@eqx.filter_jit
def _run(loss_fn, state, batches, lr, substeps, tol, num_steps, save_every, decay, eps,
         bias_correction):
    def step(s, _):
        return central_flow_step(loss_fn, s, lr=lr, substeps=substeps, tol=tol, batches=batches,
                                 decay=decay, eps=eps, bias_correction=bias_correction)

    def chunk(s, _):
        s, ms = jax.lax.scan(step, s, None, length=save_every)
        return s, (ms, s.params)

    final, (ms, ws) = jax.lax.scan(chunk, state, None, length=num_steps // save_every)
    ms = jax.tree.map(lambda a: a.reshape((num_steps, *a.shape[2:])), ms)
    ws = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), state.params, ws)
    return CentralFlow(
        steps=jnp.arange(num_steps),
        metrics=ms,
        saved_steps=jnp.arange(0, num_steps + 1, save_every),
        params=ws,
        state=final,
    )
