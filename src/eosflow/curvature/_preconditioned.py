r"""The preconditioned ("effective") sharpness $\lambda_1(P^{-1}\nabla^2 L)$ of adaptive methods."""

from collections.abc import Callable

import equinox as eqx
import jax

from .._tree import check_floating
from .._types import PyTree
from ..optim import check_preconditioner
from ._eigen import EigenResult, top_eigenpairs
from ._operator import HessianOperator, check_given_operator, hessian_operator


class PreconditionedHessian(eqx.Module):
    r"""$v \mapsto P^{-1/2}\,\nabla^2 L(\theta)\,P^{-1/2} v$ over PyTrees, $P$ diagonal.

    A module rather than a closure so that :func:`top_eigenpairs` (which ``jit``-compiles on
    its operator) compiles once per loss, not once per call: the point, the scaling and the
    batches are array leaves.
    """

    hessian: HessianOperator
    inv_sqrt: PyTree  # P^{-1/2}, shaped like params

    def __call__(self, v: PyTree) -> PyTree:
        scale = lambda t: jax.tree.map(lambda d, x: (d * x).astype(x.dtype), self.inv_sqrt, t)
        return scale(self.hessian.mv(scale(v)))


def preconditioned_hessian(loss_fn: Callable, params: PyTree, preconditioner: PyTree, *,
                           batches: PyTree | None = None) -> PreconditionedHessian:
    """The symmetric operator $P^{-1/2} H P^{-1/2}$ (validated as in
    :func:`preconditioned_sharpness`)."""
    check_floating("params", params)
    check_preconditioner(preconditioner, params)
    if isinstance(loss_fn, HessianOperator):  # e.g. a step's linearisation, reused
        check_given_operator(loss_fn, params, batches)
        op = loss_fn
    else:
        op = hessian_operator(loss_fn, params, batches=batches)
    inv_sqrt = jax.tree.map(lambda p, x: jax.lax.rsqrt(p).astype(x.dtype), preconditioner,
                            params)
    return PreconditionedHessian(op, inv_sqrt)


def preconditioned_sharpness(
    loss_fn: Callable,
    params: PyTree,
    preconditioner: PyTree,
    k: int = 1,
    *,
    v0: PyTree | None = None,
    tol: float = 1e-3,
    batches: PyTree | None = None,
    **kwargs,
) -> EigenResult:
    r"""Top-``k`` eigenpairs of $P^{-1/2}\,\nabla^2 L(\theta)\,P^{-1/2}$: the effective sharpness.

    For an adaptive update $\theta \leftarrow \theta - \eta P^{-1}m$ with diagonal $P$ (RMSProp,
    Adam: $P = \sqrt{\hat\nu} + \epsilon$, see
    :func:`eosflow.optim.preconditioner_from_state`), the EoS quantity is
    $\lambda_1(P^{-1}H)$, which equals $\lambda_1(P^{-1/2}HP^{-1/2})$ (similar matrices); it
    hovers at :func:`eosflow.optim.eos_threshold` — $2/\eta$ for RMSProp,
    $(2 + 2\beta_1)/((1 - \beta_1)\eta)$ for Adam. With $P = I$ this is
    :func:`top_eigenpairs`.

    Solved by :func:`top_eigenpairs` on the matvec $v \mapsto P^{-1/2}H(P^{-1/2}v)$: same
    solver, options, certificate (``residuals``, ``converged``) and cost (``num_matvecs``
    counts Hessian-vector products; the diagonal scalings are free).

    Args:
        loss_fn: ``loss_fn(params)`` or ``loss_fn(params, batch)`` with ``batches``; or a
            :class:`~eosflow.curvature.HessianOperator` built at ``params`` (its
            :meth:`~eosflow.curvature.HessianOperator.linearize` form reuses one pass).
        params: the point (PyTree of floating arrays, $D$ entries in all).
        preconditioner: $P$, a PyTree shaped like ``params`` with positive entries (units of
            gradient magnitude for Adam; the learning rate is *not* included).
        k: how many eigenpairs.
        v0: warm start: a previous result's ``warm_start`` (or ``eigenvectors``), in the
            same symmetric coordinates.
        tol, batches, **kwargs: as for :func:`top_eigenpairs` (``block_size``,
            ``max_matvecs``, ``criterion``, ``key``, ``throw``, ...).

    Returns:
        An :class:`EigenResult`: ``eigenvalues`` (``k``, descending) of $P^{-1}H$ in units
        of curvature/P, ``eigenvectors`` $v_i$ (PyTree like ``params``, leading axis ``k``),
        unit eigenvectors of $P^{-1/2}HP^{-1/2}$. The eigenvectors of $P^{-1}H$ are
        $u_i = P^{-1/2}v_i$ (normalised so that $u_i^\top P u_i = 1$).

    Raises:
        ValueError: ``params`` beside a HessianOperator built at another point (as in
            :func:`top_eigenpairs`); ``preconditioner`` not shaped like ``params``, or
            (where its values are concrete, i.e. outside ``jit``) with a zero, negative or
            non-finite entry. Under ``jit`` the entries are not checked: a non-positive
            entry makes $P^{-1/2}$ inf or nan, the products are non-finite, and the result
            is ``nonfinite`` (raised at run time with ``throw=True``).

    References:
        Cohen et al., *Adaptive Gradient Methods at the Edge of Stability*, arXiv 2207.14484.

    Example:
        >>> import jax.numpy as jnp
        >>> A = jnp.array([[4.0, 1.0], [1.0, 3.0]]); P = jnp.array([2.0, 0.5])
        >>> res = preconditioned_sharpness(lambda x: 0.5 * x @ A @ x, jnp.zeros(2), P, k=2)
        >>> ref = jnp.linalg.eigvalsh(A / jnp.sqrt(P)[:, None] / jnp.sqrt(P)[None, :])[::-1]
        >>> bool(jnp.allclose(res.eigenvalues, ref))
        True
    """
    op = preconditioned_hessian(loss_fn, params, preconditioner, batches=batches)
    return top_eigenpairs(op, params, k, v0=v0, tol=tol, **kwargs)


def generalized_eigenvectors(result: EigenResult, preconditioner: PyTree) -> PyTree:
    r"""$u_i = P^{-1/2}v_i$: the eigenvectors of $P^{-1}H$ from a
    :func:`preconditioned_sharpness` result (leading axis ``k``; $u_i^\top P u_j = \delta_{ij}$)."""
    return jax.tree.map(lambda v, p: v * jax.lax.rsqrt(p)[None], result.eigenvectors,
                        preconditioner)
