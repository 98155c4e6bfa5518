r"""One record per optimizer: what every layer needs to know about it, in one place.

A :class:`Method` says how to build the optimizer from the run's hyperparameters, at which
curvature it turns unstable (its *edge*), what its stableness is, and — for the two
algorithms of Arora, Li & Panigrahi (ICML 2022, arXiv 2205.09745) — the constant and clock of
its limiting flow on the manifold of minimizers. The configuration, the runner, the flows,
the analysis and ``eosflow verify`` read these records; no other module branches on an
optimizer's name. Adding an optimizer is one record here plus its tests.

Edges (the sharpness at which the method turns unstable on a quadratic):

* GD: $\lambda_1 = 2/\eta$ (Cohen et al. 2021, arXiv 2103.00065).
* Heavy-ball momentum $\beta$: $(2 + 2\beta)/\eta$; Nesterov: $(2 + 2\beta)/((1 + 2\beta)\eta)$
  (Cohen et al. 2021, appendix).
* RMSProp: the *preconditioned* sharpness $\lambda_1(P^{-1}H) = 2/\eta$; Adam with $\beta_1$:
  $\lambda_1(P^{-1}H) = (2 + 2\beta_1)/((1 - \beta_1)\eta)$, 38/η at $\beta_1 = 0.9$
  (Cohen et al., *Adaptive Gradient Methods at the Edge of Stability*, arXiv 2207.14484).
* Normalized GD and GD on $\sqrt{L - L^*}$: no fixed edge; the step $\eta_t$ changes every
  step and the stableness $S_t = \eta_t\lambda_1$ satisfies $1/S_t + 1/S_{t+1} \approx 1$
  (Arora et al., Thm 4.7), so $\lambda_1$ is measured at consecutive steps in pairs.
"""

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import optax

# The records import neither JAX nor optax: the configuration and the command line read them
# (names, edges, labels) without paying for those imports; each factory imports its
# optimizer when it is called.
Factory = Callable[..., "optax.GradientTransformationExtraArgs"]


@dataclass(frozen=True)
class Method:
    """What eosflow knows about one optimizer.

    Attributes:
        name: the name used in configurations (``--optimizer NAME``).
        description: one line for ``eosflow list`` and the docs.
        factory: ``factory(lr, *, seed, check=True, **hyper)`` → an optax
            transformation; the hyperparameters may be traced arrays (vmapped sweeps);
            ``check=False`` drops a run-time check that would be a host callback.
        hyper: the hyperparameters the method reads besides ``lr`` (``"momentum"`` is β or
            β1, ``"loss_min"`` is L*, ``"decay"`` RMSProp's second-moment decay,
            ``"bias_correction"`` whether RMSProp corrects it); the factory takes exactly
            these as keywords.
        edge: ``edge(lr, momentum)`` → the critical value of the EoS quantity (1/length²
            units of the loss's curvature: the same units as λ1), or None when the step size
            is not fixed (normalized GD, GD on √L).
        edge_label: the edge as text, e.g. ``"2/η"``; ``edge_tex`` the same in mathtext.
        quantity: ``"sharpness"`` (λ1 of ∇²L) or ``"preconditioned sharpness"``
            (λ1 of P⁻¹∇²L, P the optimizer's diagonal preconditioner).
        stableness_label: how the stableness S (2 at the edge) is formed from λ1.
        adaptive_step: the step η_t changes every step (η/‖∇L‖, η/(2√(L − L*))); the EoS test
            is then the harmonic sum 1/S_t + 1/S_{t+1} = 1 and λ1 is measured in consecutive
            pairs of steps.
        flow_constant: c in the limiting flow dX/dτ = −c ∂Φ ∇g (τ = η²t), or None when the
            theory gives none; its clock is s = c·η²t.
        flow_log: whether g = log λ1 (normalized GD) rather than λ1 (GD on √L).
        warmup: whether it may serve as ``warmup_optimizer``.
        moment: where its diagonal preconditioner P lives in the optax state: ``"adam"``
            (``ScaleByAdamState``, P = √ν̂ + ε) or ``"rms"`` (``ScaleByRmsState``,
            P = √(ν + ε)); None for P = I (:func:`eosflow.optim.preconditioner_from_state`).
        beta_name: the paper's name of its ``momentum`` hyperparameter (β, or β1 for Adam).
        central_flow: whether :func:`eosflow.flows.central_flow` (Cohen, Damian et al.,
            arXiv 2410.24206) is implemented for it (and so the runner's ``stable`` and
            ``central`` processes).
        step_stableness: S = η_t·λ1 with the step's effective learning rate (plain GD and
            the adaptive-step methods); otherwise S = 2λ1/edge.
    """

    name: str
    description: str
    factory: Factory
    hyper: tuple[str, ...] = ()
    edge: Callable[[float, float], float] | None = None
    edge_label: str | None = None
    edge_tex: str | None = None
    quantity: Literal["sharpness", "preconditioned sharpness"] = "sharpness"
    stableness_label: str = "η·λ1"
    adaptive_step: bool = False
    flow_constant: float | None = None
    flow_log: bool = False
    warmup: bool = False
    step_stableness: bool = False
    moment: Literal["adam", "rms"] | None = None
    beta_name: str = "beta"
    central_flow: bool = False

    @property
    def flow_clock(self) -> str | None:
        """The limiting flow's clock as text (``"η²t/4"``), None without a flow."""
        return None if self.flow_constant is None else f"η²t/{1 / self.flow_constant:g}"

    def build(self, lr: Any, *, momentum: Any = 0.9, loss_min: Any = 0.0, decay: Any = 0.9,
              bias_correction: bool = False, seed: int = 0,
              check: bool = True) -> "optax.GradientTransformationExtraArgs":
        """The optax transformation at these hyperparameters (those not in ``hyper`` are
        ignored). ``check=False`` drops the optimizer's run-time check (GD on √L: L >= L*,
        a host callback) for a caller that detects the failure itself, as the runner does."""
        given = {"momentum": momentum, "loss_min": loss_min, "decay": decay,
                 "bias_correction": bias_correction}
        return self.factory(lr, seed=seed, check=check, **{h: given[h] for h in self.hyper})

    def stableness(self, lam: Any, eff_lr: Any, lr: float, momentum: float) -> Any:
        """S from λ1 (or the preconditioned λ1) and the step's effective learning rate:
        η_t·λ1 for GD-like steps, 2λ1/edge otherwise (2 at the edge)."""
        if self.step_stableness:
            return eff_lr * lam
        return 2.0 * lam / self.edge(lr, momentum)


def _gd(lr, *, seed, check=True):
    from ._gd import gd

    return gd(lr)


def _ngd(lr, *, seed, check=True):
    from ._gd import normalized_gd

    return normalized_gd(lr, seed=seed)


def _sqrt(lr, *, loss_min, seed, check=True):
    from ._gd import sqrt_loss_gd

    return sqrt_loss_gd(lr, loss_min, seed=seed, check=check)


def _heavy_ball(lr, *, momentum, seed, check=True):
    from ._aliases import momentum as heavy_ball

    return heavy_ball(lr, momentum)


def _nesterov(lr, *, momentum, seed, check=True):
    from ._aliases import nesterov

    return nesterov(lr, momentum)


def _rmsprop(lr, *, decay, bias_correction, seed, check=True):
    from ._aliases import rmsprop

    return rmsprop(lr, decay, bias_correction=bias_correction)


def _adam(lr, *, momentum, seed, check=True):
    from ._aliases import adam

    return adam(lr, momentum)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gd", "plain gradient descent, x ← x − η∇L", _gd,
           edge=lambda lr, b: 2.0 / lr, edge_label="2/η", edge_tex=r"$2/\eta$", warmup=True,
           step_stableness=True, central_flow=True),
    Method("normalized_gd", "normalized GD, x ← x − η∇L/‖∇L‖ (Arora et al. 2022)", _ngd,
           stableness_label="η_t·λ1, η_t = η/‖∇L‖", adaptive_step=True, flow_constant=0.25,
           flow_log=True, step_stableness=True),
    Method("sqrt_loss_gd", "GD on √(L − L*), x ← x − η∇L/(2√(L − L*)) (Arora et al. 2022)",
           _sqrt, hyper=("loss_min",), stableness_label="η_t·λ1, η_t = η/(2√(L − L*))",
           adaptive_step=True, flow_constant=0.125, step_stableness=True),
    Method("momentum", "heavy-ball momentum β (optax.sgd)", _heavy_ball, hyper=("momentum",),
           edge=lambda lr, b: (2.0 + 2.0 * b) / lr, edge_label="(2 + 2β)/η",
           edge_tex=r"$(2+2\beta)/\eta$", stableness_label="2λ1/λ_crit, λ_crit = (2 + 2β)/η"),
    Method("nesterov", "Nesterov momentum β (optax.sgd)", _nesterov, hyper=("momentum",),
           edge=lambda lr, b: (2.0 + 2.0 * b) / ((1.0 + 2.0 * b) * lr),
           edge_label="(2 + 2β)/((1 + 2β)η)", edge_tex=r"$(2+2\beta)/((1+2\beta)\eta)$",
           stableness_label="2λ1/λ_crit, λ_crit = (2 + 2β)/((1 + 2β)η)"),
    Method("rmsprop", "RMSProp (optax.rmsprop); its edge is on the preconditioned sharpness",
           _rmsprop, hyper=("decay", "bias_correction"), edge=lambda lr, b: 2.0 / lr,
           edge_label="2/η",
           edge_tex=r"$2/\eta$",
           quantity="preconditioned sharpness", moment="rms",
           stableness_label="η·λ1(P⁻¹H), P = diag(√ν + ε)", central_flow=True),
    Method("adam", "Adam with β1 = momentum (optax.adam); its edge is on the preconditioned "
           "sharpness", _adam, hyper=("momentum",),
           edge=lambda lr, b: (2.0 + 2.0 * b) / ((1.0 - b) * lr),
           edge_label="(2 + 2β1)/((1 − β1)η)", edge_tex=r"$(2+2\beta_1)/((1-\beta_1)\eta)$",
           quantity="preconditioned sharpness", moment="adam", beta_name="beta1",
           stableness_label="2λ1(P⁻¹H)/λ_crit, P = diag(√ν̂ + ε)", warmup=True),
)}


def method(name: str) -> Method:
    """The record of optimizer ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"optimizer: unknown value {name!r} (choose from {', '.join(METHODS)})"
        ) from None


# the name a run's config.json gives an optax transformation eosflow did not build
CUSTOM = "custom"


def _no_factory(lr, **hyper):
    raise TypeError("optimizer: a custom record cannot build its transformation; pass the "
                    "transformation itself (run_experiment(config, out, optimizer=tx, edge=...))")


def custom_method(*, edge: float | None = None, like: str | None = None) -> Method:
    r"""The record of an optax transformation that eosflow did not build
    (``run_experiment(config, out, optimizer=tx, edge=...)``), named ``"custom"``.

    Give exactly one of:

    * ``edge`` — the EoS threshold on the sharpness $\lambda_1$ (same units as $\lambda_1$,
      e.g. ``2/lr`` for a plain GD step ``lr``), the same at every hyperparameter; the
      stableness is then $S = 2\lambda_1/\text{edge}$ (2 at the edge);
    * ``like`` — the name of a record in :data:`METHODS` whose edge (a function of the run's
      ``lr`` and ``momentum``), EoS quantity, stableness and preconditioner are taken.

    Raises:
        ValueError: neither or both given; ``edge`` not a positive finite number; ``like`` not
            a known record.

    Example:
        >>> m = custom_method(edge=10.0)
        >>> m.name, m.edge(0.2, 0.9), m.stableness(5.0, 0.2, 0.2, 0.9)
        ('custom', 10.0, 1.0)
    """
    if (edge is None) == (like is None):
        raise ValueError("edge: give the custom optimizer's EoS threshold (a number in λ1 "
                         "units) or the name of the record to take it from, one of the two")
    if like is not None:
        if like not in METHODS:
            raise ValueError(f"edge: unknown record {like!r} to take the threshold from "
                             f"(choose from {', '.join(METHODS)})")
        base = METHODS[like]
        return dataclasses.replace(
            base, name=CUSTOM, factory=_no_factory, warmup=False,
            description=f"an optax transformation given from Python, at the edge of {like}")
    if isinstance(edge, bool) or not isinstance(edge, numbers.Real):
        raise ValueError(f"edge: must be a number, got {type(edge).__name__}")
    value = float(edge)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"edge: must be a positive finite number, got {value!r}")
    return Method(CUSTOM, "an optax transformation given from Python, with its own edge",
                  _no_factory, edge=lambda lr, b: value, edge_label=f"edge {value:g}",
                  edge_tex=f"edge ${value:g}$", stableness_label="2λ1/edge")
