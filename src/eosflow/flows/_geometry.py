r"""Geometry of the manifold Γ of minimisers: the tangent projection $\partial\Phi$ and
$\nabla\lambda_1 = \nabla^3 L[v_1, v_1]$."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import lineax as lx
import optax

from .._tree import ravel
from .._types import Array, PyTree
from ..curvature import hessian_operator, top_eigenpairs


def tangent_projector(loss_fn: Callable, x: Array, *, rank: int | None = None,
                      rtol: float = 1e-8) -> Array:
    r"""The dense matrix of $\partial\Phi(x)$ for $x \in Γ$: the orthogonal projection onto
    $\ker \nabla^2 L(x) = T_xΓ$, in the flat coordinates of ``ravel_pytree(x)``.

    The normal space is spanned by the eigenvectors whose eigenvalues exceed
    ``rtol * lambda_1``, or by the top ``rank`` ones when the codimension $M$ is known.
    For small problems (tests, toys); :func:`tangent_project` is the matrix-free form.
    """
    H = hessian_operator(loss_fn, x).as_matrix()
    evals, evecs = jnp.linalg.eigh(0.5 * (H + H.T))
    if rank is None:
        normal = evals > rtol * jnp.max(jnp.abs(evals))
    else:
        normal = jnp.arange(evals.size) >= evals.size - rank
    V = jnp.where(normal[None, :], evecs, 0.0)
    return jnp.eye(H.shape[0], dtype=H.dtype) - V @ V.T


def tangent_project(loss_fn: Callable, x: PyTree, v: PyTree, *, method: str = "dense",
                    rtol: float = 1e-8, cg_tol: float = 1e-10, max_steps: int = 1000) -> PyTree:
    r"""$\partial\Phi(x)\, v$: the component of ``v`` along $T_xΓ = \ker\nabla^2 L(x)$.

    ``method="dense"`` forms the projector (:func:`tangent_projector`); ``method="cg"`` is
    matrix-free: $P_{\ker} v = v - z$ where $z$ solves $Hz = Hv$ by conjugate gradients from
    $z_0 = 0$ (the iterates stay in $\operatorname{range} H$, so $z = P_{\operatorname{range}} v$),
    costing two HVPs per CG step and converging at the rate set by the smallest nonzero
    curvature.
    """
    if method == "dense":
        flat, unravel = ravel(v)
        return unravel(tangent_projector(loss_fn, x, rtol=rtol) @ flat)
    if method != "cg":
        raise ValueError(f"method must be 'dense' or 'cg', got {method!r}.")
    op = hessian_operator(loss_fn, x).as_lineax()
    op = lx.TaggedLinearOperator(op, lx.positive_semidefinite_tag)
    rhs = op.mv(v)
    sol = lx.linear_solve(op, rhs, lx.CG(rtol=cg_tol, atol=cg_tol, max_steps=max_steps),
                          throw=False)
    return optax.tree.sub(v, sol.value)


def sharpness_and_gradient(loss_fn: Callable, x: PyTree, *, v1: PyTree | None = None,
                           gap_rtol: float | None = None) -> tuple[Array, PyTree, PyTree]:
    r"""$\lambda_1(\nabla^2 L(x))$, $\nabla\lambda_1(x) = \nabla^3 L(x)[v_1, v_1]$ and $v_1$.

    By Hellmann–Feynman, for a simple top eigenvalue
    $\nabla\lambda_1 = \nabla_x \langle v_1, \nabla^2 L(x) v_1\rangle$ with $v_1$ held fixed:
    one reverse pass through a Hessian-vector product. ``v1`` defaults to the top
    eigenvector from :func:`~eosflow.curvature.top_eigenpairs`.
    """
    if v1 is None:
        res = top_eigenpairs(loss_fn, x, 1, tol=1e-10 if _is64(x) else 1e-5, throw=False)
        v1 = jax.tree.map(lambda a: a[0], res.eigenvectors)

    def quad(y):
        return optax.tree.vdot(v1, hessian_operator(loss_fn, y).mv(v1))

    lam, grad = jax.value_and_grad(quad)(x)
    return lam, grad, v1


def _is64(x) -> bool:
    return jnp.result_type(*jax.tree.leaves(x)) == jnp.float64


def eigen_gap(loss_fn: Callable, x: PyTree) -> tuple[Array, Array]:
    """The top two Hessian eigenvalues at ``x`` (for the eigen-gap check)."""
    res = top_eigenpairs(loss_fn, x, 2, tol=1e-10 if _is64(x) else 1e-5, throw=False)
    return res.eigenvalues[0], res.eigenvalues[1]
