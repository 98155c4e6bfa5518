r"""Processes stepped beside the optimizer from one initialization, as in Cohen, Damian et
al., *Understanding Optimization in Deep Learning with Central Flows*, ICLR 2025, arXiv
2410.24206 (their ``discrete``, ``midpoint``, ``stable`` and ``central``):

* ``discrete``: the optimizer itself (the run's own columns);
* ``midpoint``: $w^*_t = (w_{t-1} + 2w_t + w_{t+1})/4$ from consecutive iterates (no state
  but $w_{t-1}$; one loss and gradient at $w^*_t$ per step; row 0 is nan);
* ``stable``: gradient flow $\dot w = -\eta\nabla L$ ($t$ in steps), explicit Euler with
  ``central_substeps`` steps of $\Delta t = 1/\text{central\_substeps}$ per optimizer step
  (GD at $\eta\Delta t$), and $\lambda_1$ on the ``eig_every`` cadence from its own warm start;
  for RMSProp its preconditioned analogue $\dot w = -\eta\nabla L/\sqrt{\nu + \epsilon}$,
  $\dot\nu = -\ln\beta_2\,(\nabla L^{\odot 2} - \nu)$ (same Euler steps);
* ``central``: :func:`eosflow.flows.central_flow_step` with ``num_eigs`` tracked eigenvalues
  and ``central_substeps`` substeps; its state (weights, RMSProp's $\nu$, the eigen-solver's
  warm start, $X$) lives in the :class:`~eosflow.runner.TrainState`, so checkpoints keep it.
  For RMSProp its eigenvalues are the preconditioned sharpness, written as
  ``precond_lambda_i`` like the discrete run's.

For RMSProp both flows start from $\nu(0) = (1 - \beta_2)\nabla L(w_0)^{\odot 2}$, the second
moment optax.rmsprop's first step uses (its state starts at $\nu = 0$); with
``bias_correction`` from that step's $\hat\nu = \nabla L(w_0)^{\odot 2}$, and $\hat\nu$ follows
the rate $-\ln\beta_2/(1 - \beta_2^{t+1})$ (:func:`eosflow.flows.rmsprop_rate`).

Each row of process ``P`` is written as columns ``"P.NAME"`` with the metrics' own names
(``loss``, ``grad_norm``, ``lambda_1``, ...) beside the run's columns, in the same chunk files
(so resuming, truncation and integrity checks need nothing new); :func:`process_columns`
splits them back out (``load_run(p).processes["central"]["loss"]``).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..curvature import hessian_operator, top_eigenpairs
from ..flows import central_flow_init, central_flow_step, rmsprop_nu0, rmsprop_stable_substep
from ._build import rmsprop_options

SEP = "."  # "central.loss": process name, separator, metric name


class ProcessState(NamedTuple):
    """The processes' part of the training state (None where a process is not run)."""

    prev: Any  # w_{t-1}, for the midpoint (w_0 at step 0, whose midpoint row is nan)
    stable: Any  # gradient flow's weights
    stable_block: Any  # its eigen-solver warm start (with eig_every), else None
    central: Any  # eosflow.flows.CentralState
    stable_nu: Any = None  # RMSProp's second moment along the stable flow, else None


def process_columns(metrics: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The metric columns split by process: ``{"discrete": {...}, "central": {"step", "loss",
    ...}, ...}``; ``discrete`` holds every column without a process prefix, each other
    process its ``"NAME.*"`` columns under their metric names plus ``step``."""
    out: dict[str, dict[str, np.ndarray]] = {"discrete": {}}
    for key, col in metrics.items():
        name, sep, metric = key.partition(SEP)
        if sep and name in ("midpoint", "stable", "central"):
            out.setdefault(name, {"step": metrics["step"]} if "step" in metrics else {})
            out[name][metric] = col
        else:
            out["discrete"][key] = col
    return out


class _Processes:
    """Process methods of :class:`~eosflow.runner.Program` (they read its fields)."""

    @property
    def extra_processes(self) -> tuple[str, ...]:
        return tuple(n for n in self.config.processes if n != "discrete")

    def _process_loss(self, p, w):
        if p.batches is None:
            return jax.value_and_grad(p.loss_fn)(w)
        return hessian_operator(p.loss_fn, w, batches=p.batches).loss_and_grad()

    def processes_init(self, params, key) -> ProcessState | None:
        """The processes' start: every one at the run's initial ``params``."""
        names = self.extra_processes
        if not names:
            return None
        c, p = self.config, self.problem
        stable = params if "stable" in names else None
        nu = None
        if stable is not None and self.rmsprop_flows:
            nu = rmsprop_nu0(self._process_loss(p, params)[1], c.decay,
                             bias_correction=c.bias_correction)
        block = None
        if stable is not None and self.eig_on:
            leaves, treedef = jax.tree.flatten(params)
            ks = jax.random.split(jax.random.fold_in(key, 6), len(leaves))
            block = jax.tree.unflatten(treedef, [
                jax.random.normal(k, (self.block, *x.shape), x.dtype)
                for k, x in zip(ks, leaves, strict=True)])
        central = None
        if "central" in names:
            central = central_flow_init(p.loss_fn, params, k=self.k, tol=c.eig_tol,
                                        batches=p.batches, optimizer=c.optimizer,
                                        **self._rmsprop_options)
        return ProcessState(prev=params, stable=stable, stable_block=block, central=central,
                            stable_nu=nu)

    @property
    def rmsprop_flows(self) -> bool:
        return self.config.optimizer == "rmsprop"

    @property
    def _rmsprop_options(self) -> dict:
        """RMSProp's options for its flows (from the run's config), or none for GD."""
        return rmsprop_options(self.config) if self.rmsprop_flows else {}

    def processes_step(self, p, ps: ProcessState, params, new_params, hyper, step, measure,
                       key) -> tuple[ProcessState, dict[str, jax.Array]]:
        """One step of every extra process at time ``step`` (discrete iterates ``params``
        $= w_t$ and ``new_params`` $= w_{t+1}$): their rows at ``step`` and their states at
        ``step + 1``."""
        c, names = self.config, self.extra_processes
        nan = jnp.asarray(jnp.nan, self.dtype)
        row: dict[str, jax.Array] = {}
        mid = None
        if "midpoint" in names:
            mid = jax.tree.map(lambda a, b, d: 0.25 * (a + 2 * b + d), ps.prev, params,
                               new_params)
            loss, grad = self._process_loss(p, mid)
            first = step == 0
            row["midpoint.loss"] = jnp.where(first, nan, loss)
            row["midpoint.grad_norm"] = jnp.where(first, nan, optax.tree.norm(grad))

        def dist(w):
            return jnp.where(step == 0, nan, optax.tree.norm(optax.tree.sub(w, mid)))

        stable, block, nu = ps.stable, ps.stable_block, ps.stable_nu
        if "stable" in names:
            lr = hyper["lr"]
            dt = 1.0 / c.central_substeps
            loss, grad = self._process_loss(p, stable)
            row["stable.loss"] = loss
            row["stable.grad_norm"] = optax.tree.norm(grad)
            if mid is not None:
                row["stable.dist_to_midpoint"] = dist(stable)
            if self.eig_on:
                block, eig = jax.lax.cond(
                    measure, lambda: self._stable_eigen(p, stable, block, key),
                    lambda: (block, {f"stable.lambda_{i + 1}": nan for i in range(self.k)}
                             | {"stable.eig_matvecs": jnp.zeros((), jnp.int32)}))
                row.update(eig)
            if self.rmsprop_flows:
                def euler(j, w, nu, g):
                    return rmsprop_stable_substep(w, nu, g, lr=lr, dt=dt, t=step + j * dt,
                                                  **self._rmsprop_options)

                stable, nu = jax.lax.fori_loop(
                    1, c.central_substeps,
                    lambda j, wn: euler(j, *wn, self._process_loss(p, wn[0])[1]),
                    euler(0, stable, nu, grad))
            else:
                w = optax.tree.add_scale(stable, -lr * dt, grad)

                def euler(_, w):
                    return optax.tree.add_scale(w, -lr * dt, self._process_loss(p, w)[1])

                stable = jax.lax.fori_loop(1, c.central_substeps, euler, w)
        central = ps.central
        if "central" in names:
            central, m = central_flow_step(p.loss_fn, central, lr=hyper["lr"],
                                           substeps=c.central_substeps, tol=c.eig_tol,
                                           batches=p.batches, **self._rmsprop_options)
            row["central.loss"] = m.loss
            row["central.grad_norm"] = m.grad_norm
            lam = "precond_lambda" if self.rmsprop_flows else "lambda"
            row.update({f"central.{lam}_{i + 1}": m.eigenvalues[i] for i in range(self.k)})
            row["central.predicted_loss"] = m.predicted_loss
            row["central.predicted_grad_norm"] = jnp.sqrt(m.predicted_grad_norm_sq)
            row["central.sigma2"] = m.sigma2
            row["central.eig_matvecs"] = jnp.asarray(m.num_matvecs, jnp.int32)
            row["central.eig_converged"] = m.converged.astype(self.dtype)
            row["central.sdcp_residual"] = m.sdcp_residual.astype(self.dtype)
            if mid is not None:
                row["central.dist_to_midpoint"] = dist(ps.central.params)
        row = {k: v.astype(self.dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v
               for k, v in row.items()}
        return ProcessState(prev=params, stable=stable, stable_block=block,
                            central=central, stable_nu=nu), row

    def _stable_eigen(self, p, w, block, key):
        c = self.config
        res = top_eigenpairs(
            p.loss_fn, w, self.k, v0=block, tol=c.eig_tol, batches=p.curvature_batches,
            block_size=self.block, max_matvecs=c.eig_max_matvecs,
            key=jax.random.fold_in(key, 7), throw=False, criterion=c.eig_criterion)
        row = {f"stable.lambda_{i + 1}": res.eigenvalues[i] for i in range(self.k)}
        row["stable.eig_matvecs"] = jnp.asarray(res.num_matvecs, jnp.int32)
        return res.warm_start, row
