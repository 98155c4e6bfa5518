"""Result codes and the one non-finite check shared by every curvature estimator.

Every estimator (:func:`top_eigenpairs`, :func:`lanczos`, :func:`power_iteration`,
:func:`hutchinson_trace`, :func:`spectral_density`) watches its Hessian-vector products for
inf and nan. When one appears the estimate is set to nan (never a finite wrong number) and
``result`` is ``RESULTS.nonfinite``; with ``throw=True`` (the default, as in lineax) the call
raises instead. A zero Hessian is not an error: every estimator returns 0 there.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, PyTree


class RESULTS(eqx.Enumeration):
    """Why a curvature estimator stopped."""

    successful = "every wanted quantity met its tolerance"
    max_matvecs_reached = "the matvec budget ran out before every quantity met its tolerance"
    nonfinite = (
        "a Hessian-vector product was inf or nan; check params for nan and the loss for "
        "overflow (the Hessian of a norm ||x|| at x = 0 is nan: write sum(x**2), not norm**2)"
    )


def nan_where(bad: Array, tree: PyTree) -> PyTree:
    """``tree`` with every floating leaf replaced by nan where ``bad``."""
    return jax.tree.map(lambda x: jnp.where(bad, jnp.nan, x), tree)


def finish(who: str, result: RESULTS, value: Array, throw: bool) -> Array:
    """With ``throw``, make ``value`` raise at run time if ``result`` is ``nonfinite``.

    Returns ``value`` (unchanged, or wrapped in :func:`equinox.error_if`). Works inside
    ``jit`` and ``vmap``; the error names the estimator ``who`` and the way out.
    """
    if not throw:
        return value
    return eqx.error_if(
        value,
        result == RESULTS.nonfinite,
        f"{who}: a Hessian-vector product was inf or nan; check params for nan and the loss "
        "for overflow (pass throw=False to get result=RESULTS.nonfinite and nan instead).",
    )
