"""Curvature seen by mini-batch SGD: batch sharpness and the sharpness of mini-batch losses."""

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._errors import check_int
from .._tree import check_floating, describe, leading_block, pow2_peak
from .._types import Array, Bool, Float, Int, PRNGKeyArray, PyTree
from ._eigen import top_eigenpairs
from ._operator import _check_scalar_loss


class BatchSharpnessResult(eqx.Module):
    r"""Result of :func:`batch_sharpness`.

    Attributes:
        sharpness: the batch sharpness
            $\mathbb{E}_B[g_B^\top H_B g_B / \|g_B\|^2]$, the mean of ``values``, in units of
            the loss per squared parameter (the same units as $\lambda_1$; compare with
            $2/\eta$).
        stderr: its standard error over batches, ``std / sqrt(num_batches)`` (nan for one
            batch).
        std: the spread of the per-batch values: their sample standard deviation
            (``ddof=1``; nan for one batch).
        values: the per-batch Rayleigh quotients $g_B^\top H_B g_B / \|g_B\|^2$, shape
            ``(num_batches,)``; nan for a batch whose gradient is exactly zero.
        grad_sq_norms: the per-batch $\|g_B\|^2$, shape ``(num_batches,)``.
        ratio_of_means: $\mathbb{E}_B[g_B^\top H_B g_B] / \mathbb{E}_B[\|g_B\|^2]$ over the
            same batches: the alternative the paper's code keeps for exploration
            (``expectation_inside=True``), *not* the batch sharpness.
        num_batches: how many batches were averaged.
        num_matvecs: Hessian-vector products spent (one per batch).
        num_grads: mini-batch gradients spent (one per batch, shared with the product).
    """

    sharpness: Float[Array, ""]
    stderr: Float[Array, ""]
    std: Float[Array, ""]
    values: Float[Array, " num_batches"]
    grad_sq_norms: Float[Array, " num_batches"]
    ratio_of_means: Float[Array, ""]
    num_batches: Int[Array, ""]
    num_matvecs: Int[Array, ""]
    num_grads: Int[Array, ""]


def _num_batches(batches: PyTree) -> int:
    """The common leading axis of ``batches``; ``ValueError`` naming the argument if none."""
    leaves = jax.tree.leaves(batches)
    lens = [np.shape(x)[0] if np.ndim(x) else None for x in leaves]
    if not leaves or None in lens or len(set(lens)) != 1:
        raise ValueError(
            "batches must be a PyTree of arrays stacked along one common leading axis of "
            f"length num_batches (one mini-batch per entry); got {describe(batches)}."
        )
    n = lens[0]
    if n < 1:
        raise ValueError(
            f"batches has num_batches = {n} along its leading axis; pass at least one batch."
        )
    return int(n)


def _validate(loss_fn: Callable, params: PyTree, batches: PyTree) -> int:
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(params, batch), got "
                        f"{type(loss_fn).__name__}.")
    check_floating("params", params)
    n = _num_batches(batches)
    _check_scalar_loss(loss_fn, params, batches)
    return n


def batch_sharpness(
    loss_fn: Callable[[PyTree, PyTree], Array],
    params: PyTree,
    batches: PyTree,
    *,
    num_parallel: int = 1,
) -> BatchSharpnessResult:
    r"""Batch sharpness: the mean curvature of mini-batch losses along their own gradients.

    For mini-batches $B_1, \dots, B_n$ (the leading axis of ``batches``) with losses
    $L_B$, gradients $g_B = \nabla L_B(\theta)$ and Hessians $H_B = \nabla^2 L_B(\theta)$,

    $$\mathrm{BS}(\theta) \approx \frac1n \sum_{i=1}^n
        \frac{g_{B_i}^\top H_{B_i}\, g_{B_i}}{\|g_{B_i}\|^2},$$

    an *expectation of ratios* (the mean of per-batch Rayleigh quotients), which is the
    definition of Andreyev & Beneventano: in their code, ``utils/measure.py``,
    ``calculate_averaged_grad_H_grad`` with its default ``expectation_inside=False``
    (reached from ``training.py`` through ``calculate_averaged_grad_H_grad_step``) averages
    ``gHg / ||g||^2`` per batch; the ratio of expectations is their exploratory variant and is
    returned here as ``ratio_of_means``. Under mini-batch SGD with step size $\eta$ the batch
    sharpness, not the full-batch $\lambda_1$, is what settles at $2/\eta$ (*Edge of
    Stochastic Stability*); the paper draws each batch as $B$ distinct examples
    (``randperm(N)[:B]``), independently across batches, so the batches are i.i.d. and
    ``stderr`` is the usual $s/\sqrt n$.

    ``loss_fn(params, batch)`` must be the loss SGD steps on, the *mean* over the batch's
    examples (the scale of $H_B$ sets the number). Each batch costs one gradient and one
    Hessian-vector product: ``jax.linearize`` of $\nabla L_B$ gives $g_B$ and the tangent map,
    which is applied once to $g_B$. Batches run in a ``lax.map``, ``num_parallel`` at a time
    under ``vmap``. The function is ``jit``-able (validation uses only shapes).

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``, the mean loss over one mini-batch.
        params: the point, a PyTree of floating arrays.
        batches: a PyTree whose leaves share a leading axis of length ``num_batches >= 1``;
            entry ``i`` is the ``i``-th mini-batch (each of size $B$).
        num_parallel: batches evaluated together under ``vmap`` (memory for speed).

    Returns:
        A :class:`BatchSharpnessResult`.

    Cost:
        ``num_batches`` Hessian-vector products and ``num_batches`` mini-batch gradients (the
        gradient is the forward-over-reverse product's own primal pass), about
        ``num_batches * B / N`` full-batch gradient-equivalents times the HVP-to-gradient
        cost ratio (about 2 to 3); ``benchmarks/batch_sharpness.py`` measures it.

    References:
        Andreyev & Beneventano, *Edge of Stochastic Stability: Revisiting the Edge of
        Stability for SGD*, arXiv 2412.20553 (code: github.com/arseniqum/
        edge-of-stochastic-stability).
        Cohen et al., *Gradient Descent on Neural Networks Typically Occurs at the Edge of
        Stability*, arXiv 2103.00065.

    Example:
        Every batch of $\tfrac12 \theta^\top H \theta - b_i^\top\theta$ with gradient along an
        eigenvector of $H$ has Rayleigh quotient equal to that eigenvalue:

        >>> import jax.numpy as jnp
        >>> H = jnp.diag(jnp.array([4.0, 1.0]))
        >>> loss = lambda x, b: 0.5 * x @ H @ x - b @ x
        >>> res = batch_sharpness(loss, jnp.zeros(2), jnp.array([[1.0, 0.0], [-3.0, 0.0]]))
        >>> float(res.sharpness), float(res.stderr), int(res.num_matvecs)
        (4.0, 0.0, 2)
    """
    num_parallel = check_int("num_parallel", num_parallel)
    n = _validate(loss_fn, params, batches)
    return _batch_sharpness(loss_fn, params, batches, n, num_parallel)


@eqx.filter_jit
def _batch_sharpness(loss_fn, params, batches, n: int, num_parallel: int):
    def one(batch):
        # the quotient of u = g / s (s: a power of two, so exact): its squares neither
        # under- nor overflow where g's would (float32 gradients below 1e-19 or above 1e19)
        g, hvp = jax.linearize(jax.grad(lambda p: loss_fn(p, batch)), params)
        s = functools.reduce(jnp.maximum, [pow2_peak(x) for x in jax.tree.leaves(g)])
        u = jax.tree.map(lambda x: (x / jnp.where(s > 0, s, 1)).astype(x.dtype), g)
        return optax.tree.vdot(u, hvp(u)), optax.tree.vdot(u, u), s

    dtype = check_floating("params", params)
    uhu, uu, s = jax.lax.map(one, batches, batch_size=num_parallel if num_parallel > 1 else None)
    uhu, uu, s = uhu.astype(dtype), uu.astype(dtype), s.astype(dtype)
    values = uhu / uu
    w = (s / jnp.where(jnp.max(s) > 0, jnp.max(s), 1)) ** 2  # the batches' relative g^2 scale
    ratio_of_means = jnp.sum(w * uhu) / jnp.sum(w * uu)
    gg = (uu * s) * s
    mean = jnp.mean(values)
    std = jnp.std(values, ddof=1) if n > 1 else jnp.full((), jnp.nan, dtype)
    count = jnp.asarray(n, jnp.int32)
    return BatchSharpnessResult(
        sharpness=mean,
        stderr=std / jnp.sqrt(jnp.asarray(n, dtype)),
        std=std,
        values=values,
        grad_sq_norms=gg,
        ratio_of_means=ratio_of_means,
        num_batches=count,
        num_matvecs=count,
        num_grads=count,
    )


class MinibatchSharpnessResult(eqx.Module):
    r"""Result of :func:`minibatch_sharpness`.

    Attributes:
        eigenvalues: $\lambda_1(H_{B_i})$ of each mini-batch loss, shape ``(num_batches,)``.
        mean: their mean.
        eigenvectors: the top eigenvector of each batch's Hessian, a PyTree like ``params``
            with a leading axis ``num_batches``.
        warm_start: each batch's warm-start block (leading axes ``num_batches``, block), the
            ``v0`` to pass at the next, nearby point for the *same* batches.
        num_matvecs: Hessian-vector products spent over all batches.
        converged: every batch's solve met ``tol``.
    """

    eigenvalues: Float[Array, " num_batches"]
    mean: Float[Array, ""]
    eigenvectors: PyTree
    warm_start: PyTree
    num_matvecs: Int[Array, ""]
    converged: Bool[Array, ""]


def minibatch_sharpness(
    loss_fn: Callable[[PyTree, PyTree], Array],
    params: PyTree,
    batches: PyTree,
    *,
    v0: PyTree | None = None,
    tol: float = 1e-3,
    key: PRNGKeyArray | None = None,
    **eigen_kwargs,
) -> MinibatchSharpnessResult:
    r"""$\lambda_1(\nabla^2 L_{B_i})$, the sharpness of each of a few fixed mini-batch losses.

    One :func:`~eosflow.curvature.top_eigenpairs` solve (largest *algebraic* eigenvalue) per
    entry of the leading axis of ``batches``, in a ``lax.map``. Batch sharpness is a
    Rayleigh quotient of the same Hessians, so it lies below the mean of these values.
    Measured on the same batches along a run (pass the previous ``warm_start`` as ``v0``),
    each solve costs a few products.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``, the mean loss over one mini-batch.
        params: the point, a PyTree of floating arrays.
        batches: PyTree with a leading axis of ``num_batches >= 1`` mini-batches.
        v0: optional warm start: a PyTree like ``params`` with a leading axis
            ``num_batches`` (and optionally a block axis after it), e.g. the previous
            result's ``warm_start``.
        tol: relative accuracy of each eigenvalue (see ``top_eigenpairs``).
        key: PRNG key for the random starts; default ``jax.random.key(0)``.
        **eigen_kwargs: passed on to ``top_eigenpairs`` (``max_matvecs``, ``criterion``, ...).

    Returns:
        A :class:`MinibatchSharpnessResult`.

    Cost:
        The sum of the solves' ``num_matvecs`` (reported); tens of products per batch from a
        cold start, a few with a warm start.

    References:
        Andreyev & Beneventano, arXiv 2412.20553 (mini-batch $\lambda_{\max}$ beside batch
        sharpness).
    """
    n = _validate(loss_fn, params, batches)
    if v0 is not None:
        leaves = jax.tree.leaves(v0)
        if not leaves or any(np.ndim(x) == 0 or np.shape(x)[0] != n for x in leaves):
            raise ValueError(
                f"v0 must carry a leading axis of num_batches = {n} (one start per batch); "
                f"got {describe(v0)}."
            )
        leading_block("v0[i]", jax.tree.map(lambda x: x[0], v0), params)
    key = jax.random.key(0) if key is None else key
    keys = jax.random.split(key, n)

    def one(args):
        batch, k, start = args
        single = jax.tree.map(lambda x: x[None], batch)
        res = top_eigenpairs(
            loss_fn, params, 1, v0=start, tol=tol, batches=single, key=k, **eigen_kwargs
        )
        return (res.eigenvalues[0], jax.tree.map(lambda x: x[0], res.eigenvectors),
                res.warm_start, res.num_matvecs, res.converged)

    lam, vecs, warm, mv, conv = jax.lax.map(one, (batches, keys, v0))
    return MinibatchSharpnessResult(
        eigenvalues=lam,
        mean=jnp.mean(lam),
        eigenvectors=vecs,
        warm_start=warm,
        num_matvecs=jnp.sum(mv).astype(jnp.int32),
        converged=jnp.all(conv),
    )
