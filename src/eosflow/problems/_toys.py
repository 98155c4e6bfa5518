r"""Toy losses with a known manifold of minimisers Γ, and closed forms where they exist.

Each toy is a :class:`Toy`: the loss over a flat vector, a default start ``x0``, $L^*$, and
what theory says about it — a map onto Γ for tests, $\lambda_1$ on Γ, and (for A, B and C)
the limiting flows of normalized GD and GD on $\sqrt L$ in closed form, on the time scale
$\tau = \eta^2 t$ of Arora, Li & Panigrahi (2022); docs/theory.md, "Toy problems", lists
them.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array
from ..optim import METHODS as _METHODS
from ._problem import Problem

# the methods with a limiting flow (normalized GD: g = log λ1; GD on √L: g = λ1)
METHODS = tuple(n for n, m in _METHODS.items() if m.flow_constant is not None)


class Toy(eqx.Module):
    """A toy loss with known structure.

    Attributes:
        name: the toy's name.
        loss_fn: ``loss_fn(x)`` on a flat vector.
        x0: default start.
        loss_min: $L^*$.
        sharpness_on_manifold: $\\lambda_1(\\nabla^2 L(x))$ for $x \\in Γ$, closed form.
        flow: ``flow(method, x0, tau)``: the closed-form limiting flow $X(\\tau)$ from
            $X(0) = x_0 \\in Γ$, or ``None`` where none is known.
        manifold_residual: a function vanishing exactly on Γ (for tests).
    """

    name: str = eqx.field(static=True)
    loss_fn: Callable[[Array], Array] = eqx.field(static=True)
    x0: Array
    loss_min: float = eqx.field(static=True, default=0.0)
    sharpness_on_manifold: Callable[[Array], Array] | None = eqx.field(static=True, default=None)
    flow: Callable[[str, Array, Array], Array] | None = eqx.field(static=True, default=None)
    manifold_residual: Callable[[Array], Array] | None = eqx.field(static=True, default=None)

    def problem(self, x0: Array | None = None) -> Problem:
        """This toy as a :class:`Problem` for the runner."""
        x = self.x0 if x0 is None else jnp.asarray(x0, self.x0.dtype)
        return Problem(self.loss_fn, x, None, self.loss_min, {"toy": self.name, "dim": int(x.size)})


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def _newton(f, df, u0, iters=60):
    def body(_, u):
        return u - f(u) / df(u)

    return jax.lax.fori_loop(0, iters, body, u0)


# --- A: L = (1 + x^2) y^2 ---------------------------------------------------------------------


def _toy_a_flow(method: str, x0: Array, tau: Array) -> Array:
    r"""NGD: $dx/d\tau = -x/(2(1+x^2))$, so $\ln x^2 + x^2 = \ln x_0^2 + x_0^2 - \tau$;
    √L: $dx/d\tau = -x/2$, so $x = x_0 e^{-\tau/2}$. $y = 0$ throughout."""
    _check_method(method)
    tau = jnp.asarray(tau, x0.dtype)
    a = x0[0]
    if not _METHODS[method].flow_log:  # GD on √L: g = λ1
        x = a * jnp.exp(-tau / 2)
    else:
        rhs = jnp.log(a**2) + a**2 - tau
        # u = x^2 solves log u + u = rhs; start from the larger of the two asymptotes
        u0 = jnp.maximum(rhs, jnp.exp(jnp.minimum(rhs, 0.0)))
        u = _newton(lambda u: jnp.log(u) + u - rhs, lambda u: 1 / u + 1, u0)
        x = jnp.sign(a) * jnp.sqrt(u)
    return jnp.stack([x, jnp.zeros_like(x)], axis=-1)


def _loss_a(z):
    return (1 + z[0] ** 2) * z[1] ** 2


def _lambda_a(z):
    return 2 * (1 + z[0] ** 2)


def _gamma_a(z):
    return z[1:]


def toy_a(x0=(14.7, 3.0), dtype=jnp.float64) -> Toy:
    r"""Toy A: $L(x, y) = (1 + x^2) y^2$. Γ $= \{y = 0\}$, $\lambda_1 = 2(1 + x^2)$, $v_1 = e_y$.

    Both limiting flows go to $x = 0$. The paper's Figure 1 starts GD on √L at (14.7, 3) with
    η = 0.5 and normalized GD at (14.7, −3) with η = 5.
    """
    return Toy(
        "toy_a",
        _loss_a,
        jnp.asarray(x0, dtype),
        sharpness_on_manifold=_lambda_a,
        flow=_toy_a_flow,
        manifold_residual=_gamma_a,
    )


# --- B: L = 1/2 [(1 + x^2) y1^2 + 1/2 (1 + 0.2 x) y2^2] ------------------------------------------


def _toy_b_flow(method: str, x0: Array, tau: Array) -> Array:
    """λ1 = 1 + x² = f/1 with L = ½ f y1² + ...: the same x-dynamics as toy A for NGD, and
    dx/dτ = −f′/8 = −x/4 for √L."""
    _check_method(method)
    if not _METHODS[method].flow_log:  # GD on √L: g = λ1
        x = x0[0] * jnp.exp(-jnp.asarray(tau, x0.dtype) / 4)
        return jnp.stack([x, jnp.zeros_like(x), jnp.zeros_like(x)], axis=-1)
    xa = _toy_a_flow(method, x0[:2], tau)[..., 0]
    return jnp.stack([xa, jnp.zeros_like(xa), jnp.zeros_like(xa)], axis=-1)


def _loss_b(z):
    return 0.5 * ((1 + z[0] ** 2) * z[1] ** 2 + 0.5 * (1 + 0.2 * z[0]) * z[2] ** 2)


def _lambda_b(z):
    return 1 + z[0] ** 2


def toy_b(x0=(4.0, 1.0, 1.0), dtype=jnp.float64) -> Toy:
    r"""Toy B: $L = \tfrac12[(1 + x^2) y_1^2 + \tfrac12(1 + 0.2x) y_2^2]$, for $x > -5$.

    Γ $= \{y_1 = y_2 = 0\}$, $\lambda_1 = 1 + x^2 > \lambda_2 = \tfrac12(1 + 0.2x)$. The
    $y_2$ component must die out (alignment with $v_1$).
    """
    return Toy(
        "toy_b",
        _loss_b,
        jnp.asarray(x0, dtype),
        sharpness_on_manifold=_lambda_b,
        flow=_toy_b_flow,
        manifold_residual=_gamma_a,
    )


# --- C: L = 1/2 (ab - 1)^2 ------------------------------------------------------------------------


def _toy_c_flow(method: str, x0: Array, tau: Array) -> Array:
    r"""On Γ write $a = \pm e^{s}$, $b = \pm e^{-s}$, $u = 2s$, $\lambda_1 = 2\cosh u$.

    √L: $du/d\tau = -\tfrac12\tanh u$, so $\sinh u = \sinh u_0\, e^{-\tau/2}$.
    NGD: $du/d\tau = -\tfrac12 \sinh u/\cosh^2 u$, so
    $\ln|\tanh(u/2)| + \cosh u = \ln|\tanh(u_0/2)| + \cosh u_0 - \tau/2$.
    """
    _check_method(method)
    tau = jnp.asarray(tau, x0.dtype)
    sign = jnp.sign(x0[0])
    u0 = jnp.log(jnp.abs(x0[0] / x0[1]))
    if not _METHODS[method].flow_log:  # GD on √L: g = λ1
        u = jnp.arcsinh(jnp.sinh(u0) * jnp.exp(-tau / 2))
    else:
        c0 = jnp.log(jnp.abs(jnp.tanh(u0 / 2))) + jnp.cosh(u0)
        su = jnp.sign(u0)
        au0 = jnp.abs(u0)
        rhs = c0 - tau / 2
        # g(w) = log tanh(w/2) + cosh w is increasing in w > 0; Newton from u0 downwards is
        # monotone (g is convex enough); guard with a floor at a tiny positive value.
        g = lambda w: jnp.log(jnp.tanh(w / 2)) + jnp.cosh(w) - rhs
        dg = lambda w: 1 / jnp.sinh(w) + jnp.sinh(w)
        w0 = jnp.broadcast_to(au0, rhs.shape)
        w = jax.lax.fori_loop(0, 200, lambda _, w: jnp.maximum(w - g(w) / dg(w), w * 1e-3), w0)
        u = su * w
    s = u / 2
    return jnp.stack([sign * jnp.exp(s), sign * jnp.exp(-s)], axis=-1)


def _loss_c(z):
    return 0.5 * (z[0] * z[1] - 1) ** 2


def _lambda_c(z):
    return z[0] ** 2 + z[1] ** 2


def _gamma_c(z):
    return z[:1] * z[1:2] - 1


def toy_c(x0=(2.0, 0.4), dtype=jnp.float64) -> Toy:
    r"""Toy C, the scalar two-layer net $L = \tfrac12(ab - 1)^2$.

    Γ $= \{ab = 1\}$, $\lambda_1 = a^2 + b^2$, $v_1 \propto (b, a)$; both flows go to the
    balanced point $a = b = \pm 1$ where $\lambda_1 = 2$.
    """
    return Toy(
        "toy_c",
        _loss_c,
        jnp.asarray(x0, dtype),
        sharpness_on_manifold=_lambda_c,
        flow=_toy_c_flow,
        manifold_residual=_gamma_c,
    )


# --- more: a quadratic, a product of coordinates, a matrix factorisation -------------------------


def quadratic(eigenvalues=(2.0, 1.0, 0.5), x0=None, dtype=jnp.float64) -> Toy:
    r"""$L = \tfrac12 x^\top A x$, $A = \mathrm{diag}(\text{eigenvalues})$: the warm-up of Thm 3.1.

    Γ $= \ker A$ ($\{0\}$ when $A$ is invertible); $\lambda_1 = \max_i a_i$ everywhere.
    """
    a = jnp.asarray(eigenvalues, dtype)
    start = jnp.ones_like(a) if x0 is None else jnp.asarray(x0, dtype)
    return Toy(
        "quadratic",
        lambda z: 0.5 * jnp.sum(a * z**2),
        start,
        sharpness_on_manifold=lambda z: jnp.max(a),
        manifold_residual=lambda z: jnp.where(a != 0, z, 0),
    )


def _loss_product(z):
    return 0.5 * (jnp.prod(z) - 1) ** 2


def product(x0=(1.6, 0.9, 0.8), dtype=jnp.float64) -> Toy:
    r"""A depth-$d$ scalar network $L = \tfrac12(\prod_i x_i - 1)^2$.

    Γ $= \{\prod_i x_i = 1\}$, $\lambda_1 = \sum_i \prod_{j \ne i} x_j^2$, minimised on Γ at
    the balanced points $|x_i| = 1$.
    """
    return Toy(
        "product",
        _loss_product,
        jnp.asarray(x0, dtype),
        sharpness_on_manifold=lambda z: jnp.sum((jnp.prod(z) / z) ** 2),
        manifold_residual=lambda z: jnp.prod(z, keepdims=True) - 1,
    )


def matrix_factorization(n: int = 3, m: int = 3, rank: int = 1, *, seed: int = 0,
                         dtype=jnp.float64) -> Toy:
    r"""$L = \tfrac12 \|U V^\top - M\|_F^2$ with a rank-``rank`` target $M$, flat $(U, V)$.

    Γ $= \{UV^\top = M\}$; along Γ the limiting flows move towards balanced factors
    $U^\top U = V^\top V$, which minimise $\lambda_1$.
    """
    rng = np.random.default_rng(seed)
    target = jnp.asarray(rng.normal(size=(n, rank)) @ rng.normal(size=(rank, m)), dtype)
    u0 = rng.normal(size=(n, rank)) * 1.5
    v0 = rng.normal(size=(m, rank)) * 0.5

    def split(z):
        return z[: n * rank].reshape(n, rank), z[n * rank :].reshape(m, rank)

    def loss(z):
        u, v = split(z)
        return 0.5 * jnp.sum((u @ v.T - target) ** 2)

    return Toy(
        "matrix_factorization",
        loss,
        jnp.asarray(np.concatenate([u0.ravel(), v0.ravel()]), dtype),
        manifold_residual=lambda z: jnp.ravel(split(z)[0] @ split(z)[1].T - target),
    )


TOYS: dict[str, Callable[..., Toy]] = {
    "toy_a": toy_a,
    "toy_b": toy_b,
    "toy_c": toy_c,
    "quadratic": quadratic,
    "product": product,
    "matrix_factorization": matrix_factorization,
}
