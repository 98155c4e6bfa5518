r"""Each optimizer at its own edge: its stability threshold and its preconditioner.

For an update $w \leftarrow w - \eta P^{-1} m$ with a diagonal preconditioner $P$, the EoS
quantity is the *preconditioned* ("effective") sharpness $\lambda_1(P^{-1}\nabla^2 L)$, the top
eigenvalue of $P^{-1/2}\nabla^2 L\, P^{-1/2}$ (:func:`eosflow.curvature.preconditioned_sharpness`),
compared with the threshold of the method's linear recursion on a quadratic:

=============  ======================================  ============================
name           threshold on $\lambda_1(P^{-1}H)$        $P$
=============  ======================================  ============================
``gd``         $2/\eta$                                $I$
``momentum``   $(2 + 2\beta)/\eta$ (optax heavy ball)   $I$
``nesterov``   $(2 + 2\beta)/((1 + 2\beta)\eta)$        $I$
``rmsprop``    $2/\eta$                                $\sqrt{\nu + \epsilon}$ (optax default)
``adam``       $(2 + 2\beta_1)/((1 - \beta_1)\eta)$     $\sqrt{\hat\nu} + \epsilon$
=============  ======================================  ============================

References:
    Cohen, Kaur, Li, Kolter, Talwalkar, *Gradient Descent on Neural Networks Typically Occurs
    at the Edge of Stability*, ICLR 2021, arXiv 2103.00065.
    Cohen, Ghorbani, Krishnan, Agarwal, Medapati, Badura, Suo, Cardoze, Nado, Dahl, Gilmer,
    *Adaptive Gradient Methods at the Edge of Stability*, arXiv 2207.14484.
"""


import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax._src import transform as _transform  # ScaleByRmsWithCountState is not exported

from .._tree import describe
from .._types import PyTree
from ._methods import METHODS

__all__ = ["PRECONDITIONED", "eos_threshold", "preconditioner_from_state"]

#: optimizers whose preconditioner :func:`preconditioner_from_state` reads from optax state
PRECONDITIONED = tuple(n for n, m in METHODS.items() if m.moment is not None)


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


def _beta(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    return float(value)


# hyperparameters the threshold does not depend on, accepted and ignored so that one
# optimizer record can be splatted in whole
_IGNORED = ("decay", "eps", "eps_in_sqrt", "bias_correction", "initial_scale", "beta2",
            "eps_root")


def eos_threshold(name: str, lr: float, **hyper: float) -> float:
    r"""The stability threshold of optimizer ``name`` on the (preconditioned) sharpness.

    On $L = \tfrac12\lambda w^2$ (in the coordinates $P^{1/2}w$, with $P$ frozen) the method's
    linear recursion is stable iff $\lambda$ is below this value; at the Edge of Stability the
    sharpness of GD and heavy ball, and the preconditioned sharpness $\lambda_1(P^{-1}H)$ of
    RMSProp and Adam, hover at it.

    Args:
        name: ``"gd"``, ``"momentum"`` (optax heavy ball, ``beta``), ``"nesterov"``
            (``beta``), ``"rmsprop"`` or ``"adam"`` (``beta1``).
        lr: the learning rate $\eta$ (units: 1/curvature).
        **hyper: ``beta`` (momentum, nesterov) or ``beta1`` (adam), default 0.9; the other
            hyperparameters of the optimizer (``beta2``, ``eps``, ``decay``, ...) are
            accepted and ignored.

    Returns:
        The threshold, in units of curvature (compare with $\lambda_1$ or
        $\lambda_1(P^{-1}H)$).

    Raises:
        ValueError: unknown ``name`` (normalized GD and GD on $\sqrt{L}$ have no fixed
            threshold: their step changes every iteration), non-positive ``lr``, a momentum
            outside $[0, 1)$, or an unknown hyperparameter.

    Example:
        >>> eos_threshold("gd", 0.01), round(eos_threshold("adam", 0.01, beta1=0.9), 6)
        (200.0, 3800.0)
    """
    fixed = [n for n, m in METHODS.items() if m.edge is not None]
    if name not in fixed:
        adaptive = [n for n, m in METHODS.items() if m.edge is None]
        raise ValueError(
            f"name must be one of {fixed}, got {name!r} ({' and '.join(adaptive)} have no "
            "fixed threshold: compare eta_t * lambda_1 with 2 instead)."
        )
    m = METHODS[name]
    lr = _positive("lr", lr)
    # the method's momentum-like hyperparameter: beta (heavy ball, Nesterov), beta1 (Adam)
    wanted = (m.beta_name,) if "momentum" in m.hyper else ()
    extra = set(hyper) - set(wanted) - set(_IGNORED)
    if extra:
        raise ValueError(
            f"eos_threshold({name!r}) takes {list(wanted) or 'no'} hyperparameters besides lr, "
            f"got {sorted(extra)}."
        )
    beta = next((_beta(k, hyper[k]) for k in wanted if k in hyper), 0.9)
    return float(m.edge(lr, beta))


def _find(state: PyTree, types: tuple[type, ...]):
    """The first node of ``state`` (depth first) that is an instance of one of ``types``."""
    found = []

    def visit(node):
        if isinstance(node, types):
            found.append(node)
            return True
        return False

    jax.tree.map(lambda _: None, state, is_leaf=visit)
    return found[0] if found else None


def _concrete(tree: PyTree) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def preconditioner_from_state(
    name: str,
    state: PyTree,
    *,
    eps: float = 1e-8,
    beta2: float = 0.999,
    eps_root: float = 0.0,
    decay: float = 0.9,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> PyTree:
    r"""The diagonal preconditioner $P$ (a PyTree like the parameters) in an optax state.

    Matches optax 0.2 exactly (``optax.scale_by_adam`` / ``optax.scale_by_rms``), with $\nu$
    the second moment *after* the last step and $t$ the step count:

    * ``"adam"``: $P = \sqrt{\hat\nu + \epsilon_\text{root}} + \epsilon$,
      $\hat\nu = \nu / (1 - \beta_2^t)$ (bias-corrected);
    * ``"rmsprop"``: $P = \sqrt{\nu + \epsilon}$ (optax's default ``eps_in_sqrt=True``; note
      $\epsilon$ *inside* the root), or $\sqrt{\nu} + \epsilon$ with ``eps_in_sqrt=False``;
      with ``bias_correction=True``, $\nu$ is replaced by $\nu/(1 - \text{decay}^t)$.

    The learning rate is not part of $P$: the update is $w \leftarrow w - \eta P^{-1}m$ and
    the threshold is :func:`eos_threshold`. The state is searched for the first
    ``ScaleByAdamState`` (adam) or ``ScaleByRmsState``/``ScaleByRmsWithCountState``
    (rmsprop), so chains, ``inject_hyperparams`` and ``with_extra_args_support`` wrappers work;
    pass the same ``eps`` (and ``beta2`` / ``decay``) the optimizer was built with.

    Args:
        name: ``"adam"`` or ``"rmsprop"``.
        state: the optax state of that optimizer after at least one step.
        eps, beta2, eps_root: Adam's (optax names ``eps``, ``b2``, ``eps_root``).
        decay, eps_in_sqrt, bias_correction: RMSProp's (optax names); ``eps`` as for Adam.

    Returns:
        $P$: a PyTree like the parameters, entries positive.

    Raises:
        ValueError: unknown ``name``; no such moment in ``state``; an Adam state at step 0
            (no second moment yet); or, where the values are concrete, a $P$ with a zero or
            non-finite entry (``eps = 0`` and a zero second moment). Under ``jit`` the values
            are not checked: a zero entry makes $P^{-1/2}$ infinite and
            :func:`~eosflow.curvature.preconditioned_sharpness` reports ``nonfinite``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> opt = optax.adam(0.1, b2=0.5, eps=1e-3)
        >>> w = jnp.array([1.0, -2.0]); s = opt.init(w)
        >>> _, s = opt.update(jnp.array([3.0, 4.0]), s)   # nu = 0.5 g^2, nu_hat = g^2
        >>> P = preconditioner_from_state("adam", s, beta2=0.5, eps=1e-3)
        >>> [round(float(p), 4) for p in P]
        [3.001, 4.001]
    """
    if name not in PRECONDITIONED:
        raise ValueError(
            f"name must be one of {list(PRECONDITIONED)} (gd, momentum and nesterov have "
            f"P = I), got {name!r}."
        )
    if isinstance(eps, bool) or not isinstance(eps, int | float) or eps < 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}.")
    if METHODS[name].moment == "adam":
        inner = _find(state, (optax.ScaleByAdamState,))
        if inner is None:
            raise ValueError("state holds no optax.ScaleByAdamState; pass an Adam state.")
        b2 = _beta("beta2", beta2)
        count = inner.count
        if _concrete(count) and int(count) == 0:
            raise ValueError(
                "state is at step 0: Adam's second moment is undefined until one update; "
                "read the preconditioner after a step."
            )
        corr = 1.0 - b2**count  # as optax.tree.bias_correction computes it
        P = jax.tree.map(
            lambda nu: jnp.sqrt(nu / corr.astype(nu.dtype) + eps_root) + eps, inner.nu
        )
    else:
        inner = _find(state, (_transform.ScaleByRmsWithCountState, optax.ScaleByRmsState))
        if inner is None:
            raise ValueError("state holds no optax.ScaleByRmsState; pass an RMSProp state.")
        nu = inner.nu
        if bias_correction:
            if not hasattr(inner, "count"):
                raise ValueError(
                    "bias_correction=True but the RMSProp state has no step count; build the "
                    "optimizer with optax.rmsprop(..., bias_correction=True)."
                )
            d = _beta("decay", decay)
            corr = 1.0 - d**inner.count
            nu = jax.tree.map(lambda n: n / corr.astype(n.dtype), nu)
        if eps_in_sqrt:
            P = jax.tree.map(lambda n: jnp.sqrt(n + eps), nu)
        else:
            P = jax.tree.map(lambda n: jnp.sqrt(n) + eps, nu)
    if _concrete(P):
        bad = sum(int(np.sum(~(np.asarray(x) > 0) | ~np.isfinite(np.asarray(x))))
                  for x in jax.tree.leaves(P))
        if bad:
            raise ValueError(
                f"eps = {eps!r}: the preconditioner P has {bad} zero or non-finite entries "
                "(a zero second moment with eps = 0, e.g. a parameter whose gradient has always "
                "been zero); pass eps > 0, as the optimizer should use."
            )
    return P


def check_preconditioner(preconditioner: PyTree, params: PyTree) -> None:
    """Raise ``ValueError`` if ``preconditioner`` is not shaped like ``params`` or, where its
    values are concrete, has a non-positive or non-finite entry."""
    p_def, x_def = jax.tree.structure(preconditioner), jax.tree.structure(params)
    shapes = [np.shape(x) for x in jax.tree.leaves(preconditioner)]
    want = [np.shape(x) for x in jax.tree.leaves(params)]
    if p_def != x_def or shapes != want:
        raise ValueError(
            "preconditioner must be a PyTree shaped like params (one positive entry per "
            f"parameter); got {describe(preconditioner)}, params are {describe(params)}."
        )
    if _concrete(preconditioner):
        leaves = [np.asarray(x) for x in jax.tree.leaves(preconditioner)]
        bad = sum(int(np.sum(~(x > 0) | ~np.isfinite(x))) for x in leaves)
        if bad:
            lo = min(float(np.min(x)) for x in leaves if x.size)
            raise ValueError(
                f"preconditioner has {bad} non-positive or non-finite entries (min {lo:.3g}); "
                "a diagonal preconditioner must be positive: add eps (P = sqrt(nu) + eps)."
            )
