"""Hessian-vector products over PyTrees, and the flat linear operators the solvers use."""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optax

from .._tree import check_floating as check_floating
from .._tree import compute_dtype, describe, ravel
from .._types import Array, Float, PyTree


def _check_scalar_loss(loss_fn: Callable, params: PyTree, batches: PyTree | None) -> None:
    if batches is None:
        out = jax.eval_shape(loss_fn, params)
    else:
        first = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x)[1:], x.dtype), batches)
        out = jax.eval_shape(loss_fn, params, first)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise TypeError(
            f"loss_fn must return a scalar, got {shape}; reduce per-example losses with "
            "jnp.mean or jnp.sum inside loss_fn."
        )


def _check_batches(batches: PyTree) -> int:
    lens = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(batches)}
    if not lens or None in lens or len(lens) != 1:
        raise ValueError(
            "batches must be a PyTree of arrays stacked along a common leading axis "
            f"(one entry per batch); got {describe(batches)}."
        )
    (n,) = lens
    if n == 0:
        raise ValueError("batches is empty: pass at least one batch along the leading axis.")
    return n


def sum_over_batches(fn: Callable[[PyTree], PyTree], batches: PyTree) -> PyTree:
    r"""$\sum_b$ ``fn(batch_b)`` over the leading axis of ``batches``, in a fixed order.

    One batch is called directly: XLA:CPU runs some kernels (convolutions) an order of
    magnitude slower inside a loop than outside one.
    """
    n = jax.tree.leaves(batches)[0].shape[0]
    if n == 1:
        return fn(jax.tree.map(lambda x: x[0], batches))
    first = jax.eval_shape(fn, jax.tree.map(lambda x: x[0], batches))
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
    return jax.lax.scan(lambda acc, b: (optax.tree.add(acc, fn(b)), None), zero, batches)[0]


class HessianOperator(eqx.Module):
    r"""The Hessian $\nabla^2 L(\theta)$ at ``params`` as a symmetric linear operator.

    Products are forward-over-reverse, ``jvp(grad(L), (params,), (v,))``. With ``batches``,
    $L(\theta) = \sum_b \ell(\theta, \text{batch}_b)$ over the leading axis of ``batches``, in
    a fixed order (a ``lax.scan``), so a dataset larger than one pass gives the same product
    every time.

    Attributes:
        loss_fn: ``loss_fn(params)`` or ``loss_fn(params, batch)``, returning a scalar.
        params: the point, any PyTree of floating arrays.
        batches: ``None``, or a PyTree whose leaves are stacked along a leading batch axis.
        linear: ``None``, or the products of one linearisation of the gradient (set by
            :meth:`linearize`): ``v -> H v`` without redoing the forward and backward pass.
    """

    loss_fn: Callable[..., Array]
    params: PyTree
    batches: PyTree | None = None
    linear: Callable[[PyTree], PyTree] | None = None

    @property
    def num_batches(self) -> int:
        """How many batches the loss sums over (1 without ``batches``)."""
        return 1 if self.batches is None else jax.tree.leaves(self.batches)[0].shape[0]

    def mv(self, v: PyTree) -> PyTree:
        """Return $\nabla^2 L(\theta)\\, v$ for a PyTree ``v`` shaped like ``params``."""
        if self.linear is not None:
            return self.linear(v)
        if self.batches is None:
            return jax.jvp(jax.grad(self.loss_fn), (self.params,), (v,))[1]

        def one(batch):
            grad_b = jax.grad(lambda p: self.loss_fn(p, batch))
            return jax.jvp(grad_b, (self.params,), (v,))[1]

        return sum_over_batches(one, self.batches)

    def loss_and_grad(self) -> tuple[Array, PyTree]:
        """The loss and its gradient at ``params`` (summed over ``batches``)."""
        if self.batches is None:
            return jax.value_and_grad(self.loss_fn)(self.params)
        return sum_over_batches(
            lambda b: jax.value_and_grad(lambda p: self.loss_fn(p, b))(self.params), self.batches
        )

    def linearize(self) -> tuple[Float[Array, ""], PyTree, "HessianOperator"]:
        r"""The loss, its gradient, and this operator with products from the same pass.

        The gradient is linearised once (``jax.linearize``) and every product of the
        returned operator reuses its residuals, where :meth:`mv` redoes the forward and
        backward pass each time (about a fifth of an HVP on the digits MLP). A training step
        that measures the sharpness shares the pass with its gradient: pass the operator to
        :func:`top_eigenpairs` in place of the loss, inside the step's ``jit``. Outside
        ``jit`` the operator's products are a new function at every call, with the
        residuals in it: each call compiles anew, and JAX's compilation cache keeps every
        one, residuals included (memory grows call after call). The loss and gradient are
        :meth:`loss_and_grad`'s.

        Returns:
            ``(loss, grad, op)``: a scalar, a PyTree like ``params``, and a
            :class:`HessianOperator` at the same point whose ``linear`` is set.

        Raises:
            ValueError: the data is in more than one batch (the residuals of all of them
                would be kept at once: use :meth:`mv`).

        Example:
            >>> import jax.numpy as jnp
            >>> A = jnp.diag(jnp.array([3.0, 1.0]))
            >>> loss, grad, op = hessian_operator(lambda x: 0.5 * x @ A @ x,
            ...                                   jnp.ones(2)).linearize()
            >>> float(loss), grad.tolist(), op.mv(jnp.array([1.0, 2.0])).tolist()
            (2.0, [3.0, 1.0], [3.0, 2.0])
        """
        if self.num_batches > 1:
            raise ValueError(f"linearize needs the data in one batch, got {self.num_batches} "
                             "batches; use mv() for several.")
        (loss, grad), lin = jax.linearize(
            lambda q: HessianOperator(self.loss_fn, q, self.batches).loss_and_grad(),
            self.params)
        return loss, grad, HessianOperator(self.loss_fn, self.params, self.batches,
                                           lambda v: lin(v)[1])

    def as_matrix(self) -> Array:
        """The dense Hessian in the flat coordinates of ``ravel_pytree(params)`` (tests only)."""
        flat = as_flat(self)
        return jax.vmap(flat.matvec)(jnp.eye(flat.size, dtype=flat.dtype)).T

    def as_lineax(self) -> lx.AbstractLinearOperator:
        """This operator as a ``lineax`` operator tagged symmetric (PyTree in, PyTree out)."""
        structure = jax.eval_shape(lambda: self.params)
        return lx.FunctionLinearOperator(self.mv, structure, tags=lx.symmetric_tag)


def hessian_operator(
    loss_fn: Callable[..., Array], params: PyTree, *, batches: PyTree | None = None
) -> HessianOperator:
    r"""The Hessian of ``loss_fn`` at ``params`` as a linear operator over PyTrees.

    Args:
        loss_fn: ``loss_fn(params) -> scalar``, or ``loss_fn(params, batch) -> scalar`` when
            ``batches`` is given; the loss is then the *sum* over batches, so put any
            $1/N$ normalisation inside ``loss_fn``.
        params: the point at which to take the Hessian.
        batches: optional PyTree stacked along a leading axis of batches.

    Returns:
        A :class:`HessianOperator`; ``op.mv(v)`` is $\nabla^2 L\, v$.

    Example:
        >>> import jax.numpy as jnp
        >>> op = hessian_operator(lambda x: 0.5 * x @ jnp.diag(jnp.array([3.0, 1.0])) @ x,
        ...                       jnp.zeros(2))
        >>> op.mv(jnp.array([1.0, 1.0])).tolist()
        [3.0, 1.0]
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
    check_floating("params", params)
    if batches is not None:
        _check_batches(batches)
    _check_scalar_loss(loss_fn, params, batches)
    return HessianOperator(loss_fn, params, batches)


class FlatOperator(NamedTuple):
    """A symmetric operator on flat vectors, with the map back to the caller's PyTree.

    ``dtype`` is the dtype the solvers compute in (float32 for half-precision params, see
    :func:`eosflow._tree.compute_dtype`); ``matvec`` takes and returns it, and ``unravel``
    casts back to the params' own dtype.
    """

    matvec: Callable[[Array], Array]
    size: int
    dtype: Any
    unravel: Callable[[Array], PyTree]
    example: PyTree


def as_flat(op: HessianOperator, *, linearize: bool = False) -> FlatOperator:
    """View a :class:`HessianOperator` as a matvec on flat vectors.

    With ``linearize`` (and the data in at most one batch) the gradient is linearised once
    with ``jax.linearize`` and every product reuses it, which saves the forward and backward
    pass that each forward-over-reverse product would redo (about a fifth of an HVP on the
    digits MLP). Over several batches the residuals of all of them would have to be kept,
    so products are recomputed there. An operator from :meth:`HessianOperator.linearize`
    reuses its own pass.
    """
    if op.linear is not None or not linearize or op.num_batches > 1:
        return _flat_from_tree_matvec(op.mv, op.params)
    return _flat_from_tree_matvec(op.linearize()[2].mv, op.params)


def _flat_from_tree_matvec(mv: Callable[[PyTree], PyTree], example: PyTree) -> FlatOperator:
    flat, unravel_flat = ravel(example)
    dtype = compute_dtype(flat.dtype)

    def unravel(x: Array) -> PyTree:
        return unravel_flat(x.astype(flat.dtype))

    def matvec(x: Array) -> Array:
        return ravel(mv(unravel(x)))[0].astype(dtype)

    return FlatOperator(matvec, flat.size, dtype, unravel, example)


def flat_operator(matvec: Callable[[PyTree], PyTree], example: PyTree) -> FlatOperator:
    """A matvec on PyTrees shaped like ``example`` as a :class:`FlatOperator`."""
    check_floating("v0", example)
    return _flat_from_tree_matvec(matvec, example)


def check_given_operator(op: HessianOperator, params: PyTree | None,
                         batches: PyTree | None) -> None:
    """Refuse what a caller passes beside a :class:`HessianOperator`, whose point and data
    are its own: ``batches``, and ``params`` (None is fine) at another point: other shapes
    always, other values where both are concrete (inside ``jit`` they cannot be compared)."""
    if batches is not None:
        raise ValueError("batches belongs to hessian_operator(...); do not pass it again.")
    if params is None or params is op.params:
        return
    fix = ("the HessianOperator holds its own point: pass params=None, or build the operator "
           "at these params")
    mine, theirs = jax.tree.leaves(params), jax.tree.leaves(op.params)
    if jax.tree.structure(params) != jax.tree.structure(op.params) or any(
            np.shape(a) != np.shape(b) for a, b in zip(mine, theirs, strict=True)):
        raise ValueError(f"params: shaped {describe(params)}, unlike the operator's point "
                         f"{describe(op.params)}; {fix}.")
    if any(isinstance(x, jax.core.Tracer) for x in mine + theirs):
        return
    same = jnp.stack([jnp.array_equal(a, b, equal_nan=True)
                      for a, b in zip(mine, theirs, strict=True)])
    if not bool(jnp.all(same)):  # one read back
        raise ValueError(f"params: not the point the operator was built at; {fix}.")


def operator_from(fn: Any, params: PyTree | None, *, batches: PyTree | None = None,
                  linearize: bool = False) -> FlatOperator:
    """Normalise the three ways a caller can name an operator into a :class:`FlatOperator`.

    * a :class:`HessianOperator` (``params`` may be omitted; if given, it must be the
      operator's point: ``ValueError`` otherwise);
    * ``loss_fn`` with ``params`` (and optionally ``batches``): the Hessian of the loss;
    * a matvec ``fn(v) -> Hv`` with an example vector ``params``: detected because it returns
      a tree shaped like its input rather than a scalar.
    """
    if isinstance(fn, HessianOperator):
        check_given_operator(fn, params, batches)
        return as_flat(fn, linearize=linearize)
    if not callable(fn):
        raise TypeError(
            f"expected a loss function, a matvec or a HessianOperator, got {type(fn).__name__}."
        )
    if params is None:
        raise TypeError("params is required unless the first argument is a HessianOperator.")
    check_floating("params", params)
    if batches is not None:
        return as_flat(hessian_operator(fn, params, batches=batches), linearize=linearize)
    out = jax.eval_shape(fn, params)
    if isinstance(out, jax.ShapeDtypeStruct) and out.shape == ():  # a loss, even for scalars
        return as_flat(hessian_operator(fn, params), linearize=linearize)
    in_struct = jax.tree.structure(params)
    out_shapes = [x.shape for x in jax.tree.leaves(out)]
    in_shapes = [np.shape(x) for x in jax.tree.leaves(params)]
    if jax.tree.structure(out) == in_struct and out_shapes == [tuple(s) for s in in_shapes]:
        return _flat_from_tree_matvec(fn, params)
    raise TypeError(
        "the first argument must be a loss returning a scalar, or a matvec returning a PyTree "
        f"shaped like params; it returned {jax.tree.map(lambda s: s.shape, out)} for params "
        f"{describe(params)}."
    )
