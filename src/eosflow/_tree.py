"""Small PyTree helpers: flat views of parameter trees and structure checks.

Arithmetic on trees (vdot, norm, add_scale, ...) comes from ``optax.tree``; this module only
adds what optax does not have: moving between a PyTree and a flat vector, and comparing a
tree's structure with a reference so that errors can name the mismatch.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._types import Array, PyTree


def ravel(tree: PyTree) -> tuple[Array, Callable[[Array], PyTree]]:
    """Flatten ``tree`` into one vector; return it and the inverse map."""
    return ravel_pytree(tree)


def nonfinite(tree: PyTree) -> Array:
    """Whether any entry of any leaf of ``tree`` (an array or a PyTree of them) is inf or nan,
    as a scalar boolean array.

    One sum of ``0 * x`` per leaf (nan exactly where ``x`` is inf or nan): a sum always
    propagates nan, where XLA:CPU's vectorised ``max`` drops it in leaves of 4096 or more
    entries, and ``all(isfinite(x))`` over a long vector compiles to a tree of four
    reductions.
    """
    sums = [jnp.sum(jnp.zeros((), x.dtype) * x) for x in jax.tree.leaves(tree)]
    return ~jnp.isfinite(sum(sums[1:], sums[0]))


def exp2(e: Array, dtype) -> Array:
    """``2**e`` in ``dtype`` for integer ``e`` (any shape) where that is a normal number
    (``finfo.minexp <= e < finfo.maxexp``), exactly: the biased exponent written into the
    bits. ``jnp.ldexp`` raises 2 to a float power instead, about 20 ns per entry on CPUs and
    most of a vmapped toy step (issue 17)."""
    info = jnp.finfo(dtype)
    bits = jnp.dtype(f"int{8 * jnp.dtype(dtype).itemsize}")
    biased = (jnp.asarray(e).astype(bits) + (info.maxexp - 1)) << info.nmant
    return jax.lax.bitcast_convert_type(biased, dtype)


def mul_exp2(x: Array, e: Array) -> Array:
    """``x * 2**e`` for integer ``e`` in ``[2 finfo.minexp, 2 finfo.maxexp - 2]`` of ``x``'s
    dtype (any power of two between an entry's and 1, subnormal ones too): two products by
    normal powers of two (:func:`exp2`), exact unless the result itself under- or overflows,
    as ``jnp.ldexp``. Outside that range the result is wrong, not an error."""
    e = jnp.asarray(e, jnp.int32)
    half = e >> 1  # floor(e / 2): an arithmetic shift (// is several ops on signed ints)
    return x * exp2(half, x.dtype) * exp2(e - half, x.dtype)


def pow2_peak(x: Array) -> Array:
    r"""The power of two $2^e \le \max|x| < 2^{e+1}$ over the finite entries of ``x`` (0 when
    there is none), with $e$ clipped to the exponents whose reciprocal is a normal number
    (CPUs flush subnormals to zero, and XLA may divide by multiplying with the reciprocal):
    divide by it before taking norms, whose squares under- or overflow at ordinary scales in
    float32 (entries below 1e-19 or above 1e19). The division is exact for normal entries."""
    peak = jnp.max(jnp.where(jnp.isfinite(x), jnp.abs(x), 0), initial=0)
    info = jnp.finfo(peak.dtype)
    e = jnp.clip(jnp.frexp(peak)[1] - 1, info.minexp, info.maxexp - 2)
    return jnp.where(peak > 0, exp2(e, peak.dtype), 0)


def pow2_scaled(x: Array) -> tuple[Array, Array]:
    """``(x / s, s)`` with ``s`` :func:`pow2_peak` of ``x``, or 1 when that is 0 (``x`` zero
    or not finite): ``x``'s direction, safe to take a norm of, and the exact factor back."""
    peak = pow2_peak(x)
    s = jnp.where(peak > 0, peak, 1)
    return x / s, s


def describe(tree: PyTree) -> str:
    """A one-line description of a tree's leaves: ``{'w': (3, 2) float32, ...}``."""
    leaves, treedef = jax.tree.flatten(tree)
    shapes = [f"{tuple(np.shape(x))} {jnp.result_type(x)}" for x in leaves]
    return f"{treedef} with leaves [{', '.join(shapes)}]"


def leading_block(name: str, tree: PyTree, like: PyTree) -> int | None:
    """Compare ``tree`` with ``like`` and say whether it carries a leading block axis.

    Returns ``None`` when ``tree`` has exactly the structure and shapes of ``like`` (a single
    vector), ``b`` when every leaf has the shape of ``like``'s leaf with a leading axis of
    length ``b``; raises ``ValueError`` naming ``name`` otherwise.
    """
    leaves, treedef = jax.tree.flatten(tree)
    ref_leaves, ref_def = jax.tree.flatten(like)
    if treedef != ref_def:
        raise ValueError(
            f"{name} must have the same PyTree structure as params; got {describe(tree)}, "
            f"expected {describe(like)} (optionally with a leading block axis)."
        )
    shapes = [tuple(np.shape(x)) for x in leaves]
    ref_shapes = [tuple(np.shape(x)) for x in ref_leaves]
    if shapes == ref_shapes:
        return None
    blocks = {s[0] for s, r in zip(shapes, ref_shapes, strict=True) if s[1:] == r and len(s) > 0}
    if len(blocks) == 1 and all(
        len(s) == len(r) + 1 and s[1:] == r for s, r in zip(shapes, ref_shapes, strict=True)
    ):
        (b,) = blocks
        if b < 1:
            raise ValueError(f"{name} has an empty leading block axis; pass at least one vector.")
        return b
    raise ValueError(
        f"{name} has leaf shapes {shapes}, which match neither params' shapes {ref_shapes} nor "
        "those shapes with one common leading block axis."
    )


def check_floating(name: str, tree: PyTree) -> jnp.dtype:
    """Check that every leaf of ``tree`` is a real floating-point array; return their dtype.

    The rule is strict: every leaf is differentiated, so a leaf that is not real floating
    point (an ``int32`` step counter, a ``bool`` mask, a complex array) is refused by name
    rather than silently excluded. ``None`` leaves are not leaves (JAX skips them).

    Returns:
        The common floating dtype of the leaves (``jnp.result_type`` of them all).

    Raises:
        ValueError: ``tree`` has no array leaves.
        TypeError: a leaf is not a real floating-point array; the message names its path.
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not leaves:
        raise ValueError(f"{name} has no array leaves; pass a PyTree of floating-point arrays.")
    for path, leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            where = f"{name}{jax.tree_util.keystr(path)}"
            raise TypeError(
                f"{where} has dtype {dtype}, but every leaf of {name} must be a real "
                "floating-point array (each leaf is differentiated); keep non-differentiable "
                f"state out of {name} (close over it in loss_fn) or cast it with "
                ".astype(jnp.float32)."
            )
    return jnp.result_type(*[leaf for _, leaf in leaves])


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype the Krylov recurrences run in: ``dtype``, or float32 for half precision.

    float16 and bfloat16 carry 3 and 2 decimal digits, too few to orthogonalise a basis, and
    ``eigh`` does not support them; the products themselves stay in the caller's dtype.
    """
    return jnp.promote_types(dtype, jnp.float32)
