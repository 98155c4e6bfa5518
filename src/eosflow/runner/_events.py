"""Chunk-boundary computations of a run: the predictions (the limiting flow from Φ(x_0), the
re-projection flow from where the run comes within the phase-I distance of Γ), mixed into
:class:`~eosflow.runner.Program`; they return or write the prediction's arrays."""



import contextlib
import math
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import flows
from ..curvature import top_eigenpairs
from ..flows import (
    distance_estimate,
    limiting_flow,
    prediction_start,
)
from . import _store as rd
from ._devices import to_host

# the re-projection flow's substeps (eosflow.flows.reprojection_flow): down to
# h / 2**REPROJECT_HALVINGS when a projection fails. Its first-order step control is off
# (REPROJECT_RTOL None): on the MNIST MLP in float32 the first-order change it predicts is
# 2-3x the actual one down to h/32 (measured on normalized GD's flow from Phi(x_9000) of
# paper-mnist-ngd-cpu, with Gauss-Newton projections), so it halves steps for nothing
REPROJECT_HALVINGS = 8
REPROJECT_RTOL = None


class _Predictions:
    """Prediction methods of :class:`~eosflow.runner.Program` (they read its fields)."""

    def _largest_lr(self) -> float:
        """The lr whose flow time is longest: the config's, or a sweep's largest."""
        return max(self.sweep["lr"]) if self.sweep and "lr" in self.sweep else self.config.lr

    def write_prediction(self, out: Path) -> dict[str, Any] | None:
        """The limiting flow from Phi(x_0) over the run's tau = eta^2 t, as prediction.npz
        (``prediction_error.json`` with the reason when it fails). Returns the ``prediction``
        entry of status.json, or None when the run asks for no limiting flow."""
        c = self.config
        if (c.phi_every is None or c.reproject_steps is not None
                or self.method.flow_constant is None):
            return None
        if c.warmup_steps:  # the flow would start at Phi(x) after the warm-up, not at x_0
            return rd.write_prediction_error(
                out, "not computed for a run with a warm-up: the limiting flow starts at Phi "
                "of the iterate where the warm-up ends, not at Phi(x_0); use reproject_steps",
                method=c.optimizer)
        lr = self._largest_lr()
        with self._prediction_numerics():
            problem, params = self._predicting(self.problem.params)
            try:
                flow = limiting_flow(problem.loss_fn, params, method=c.optimizer,
                                     t_end=lr**2 * c.steps, num_points=201,
                                     residual_fn=problem.full_residual, throw=False)
            except ValueError as err:  # bad options; a failed start comes back as a status
                return rd.write_prediction_error(out, str(err), start_step=0,
                                                 method=c.optimizer)
            X = np.asarray(jax.vmap(lambda x: ravel_pytree(x)[0])(flow.xs))
        return rd.write_prediction(out, flow, start_step=0, method=c.optimizer,
                                   extra={"X": X})

    def prediction_distance(self, params, columns: dict[str, np.ndarray] | None,
                            step: int) -> tuple[bool, float | None]:
        """Whether the re-projection prediction may start at chunk boundary ``step`` (state
        ``params``), and the distance estimate it was judged by.

        The rule (Arora et al., Thm 4.3: after phase I the iterate is O(eta)-close to Γ and
        Phi(x_t) stays O(eta)-close to Phi(x_w)): the first boundary from the warm-up's end
        at which ``eosflow.flows.prediction_start`` accepts ``distance_estimate`` =
        |grad L| / lambda_1 at the last two consecutive measured steps after the warm-up of
        the chunk just run (``columns``). At the warm-up's end itself there are none: it
        waits for the first chunk of the optimizer (a GD iterate is not aligned with v_1, so
        its gradient says little about its distance from Γ).
        """
        c = self.config
        if step <= c.warmup_steps or columns is None:
            return False, None
        lam = np.asarray(columns.get("lambda_1", []), np.float64)
        if lam.ndim > 1:
            lam = lam[:, 0]
        steps = np.asarray(columns["step"])
        ok = np.flatnonzero(np.isfinite(lam) & (steps >= c.warmup_steps))
        pairs = [i for i in ok if i + 1 < len(steps) and np.isfinite(lam[i + 1])
                 and steps[i + 1] == steps[i] + 1]
        if not pairs:
            return False, None
        i = pairs[-1]
        g = np.asarray(columns["grad_norm"], np.float64)
        g = g if g.ndim == 1 else g[:, 0]
        d = distance_estimate(g[i:i + 2], lam[i:i + 2])
        ready = prediction_start(d, self._largest_lr(), method=c.optimizer,
                                 lambda_1=lam[i:i + 2]) is not None
        return ready, float(np.max(d))

    def prediction_not_started(self, out: Path, distance: float | None, *,
                               write: bool) -> dict[str, Any]:
        """The status entry (and prediction_error.json) of a run that ended before it came
        within the phase-I distance of Γ."""
        c = self.config
        reason = ("not computed: the run never came within the phase-I distance of Γ after "
                  "the warm-up (|grad L|/lambda_1 at two consecutive measured steps <= 1.5 "
                  "eta" + (f"; last {distance:.3g}" if distance is not None else
                           "; no consecutive lambda_1 measurements after the warm-up") + ")")
        name = f"reprojection:{c.optimizer}"
        if not write:
            return {"status": "failed", "reason": reason, "start_step": None, "method": name}
        return rd.write_prediction_error(out, reason, method=name)

    def _project_kwargs(self) -> dict[str, Any]:
        """``project_solve`` options of every projection onto Γ the run makes."""
        gtol = self.config.phi_gtol
        return {} if gtol is None else {"gtol": float(gtol)}

    def _first(self, params):
        return params if self.sweep is None else jax.tree.map(lambda x: x[0], params)

    def _predicting(self, params):
        """``(problem, params)`` in ``prediction_dtype``: every inexact array of the problem
        (its data, the initial parameters) and of ``params`` cast. Call inside
        :meth:`_prediction_numerics`."""
        dtype = jnp.dtype(self.config.prediction_dtype)

        def cast(x):
            return x.astype(dtype) if eqx.is_inexact_array(x) else x

        return jax.tree.map(cast, self.problem), jax.tree.map(cast, params)

    def _prediction_numerics(self):
        """64-bit types for a float64 prediction, scoped to it (a float32 run's process
        may have them off)."""
        wide = self.config.prediction_dtype == "float64"
        return jax.enable_x64(True) if wide else contextlib.nullcontext()

    @staticmethod
    def _loss(problem):
        return problem.full_loss if problem.batches is not None else problem.loss_fn

    def write_reprojection(self, out: Path, params, *, write: bool,
                           start_step: int) -> dict[str, Any]:
        """The re-projection flow (``eosflow.flows.reprojection_flow``) from ``params`` (the
        state at ``start_step``, see :meth:`prediction_ready`; a sweep's first point) over
        the rest of the run's flow time at its largest lr, in ``reproject_steps`` steps:
        prediction.npz (``tau`` from ``start_step``, ``lambda_1``, ``grad_norm``,
        ``substeps`` and ``unresolved`` per step, ``method``, ``start_step``), or
        prediction_error.json with the reason when the start or a step fails (written when
        ``write``). Computed in ``prediction_dtype`` (float64 by default: a float32 chain of
        projections drifts). Each Phi is ``project_solve``'s default (gradient flow, then
        Levenberg-Marquardt on the loss's residuals ``Problem.full_residual``, then a
        polishing flow); substeps as ``REPROJECT_*`` say. Returns
        the ``prediction`` entry of status.json, with ``seconds`` and, when the flow
        started, the total ``substeps``, ``unresolved`` and the ``finest`` substep."""
        c = self.config
        lr = self._largest_lr()
        const = self.method.flow_constant
        name = f"reprojection:{c.optimizer}"
        rest = max(c.steps - start_step, 1)
        t0 = time.perf_counter()
        with self._prediction_numerics():
            problem, params = self._predicting(self._first(params))
            flow = flows.reprojection_flow(  # looked up at call time: a caller may wrap it
                self._loss(problem), params, method=c.optimizer, num_steps=c.reproject_steps,
                step_size=const * lr**2 * rest / c.reproject_steps,
                residual_fn=problem.full_residual, throw=False,
                project_kwargs=self._project_kwargs(), max_halvings=REPROJECT_HALVINGS,
                step_rtol=REPROJECT_RTOL)
            jax.block_until_ready(flow.sharpness)
        seconds = round(time.perf_counter() - t0, 1)  # compilation included
        if not write:
            return {"status": flow.status, "reason": flow.reason, "start_step": start_step,
                    "method": name, "seconds": seconds}
        counts = {} if flow.substeps is None else {  # None: it failed at its start
            "substeps": np.asarray(flow.substeps), "unresolved": np.asarray(flow.unresolved)}
        entry = rd.write_prediction(out, flow, start_step=start_step, method=name,
                                    extra=counts)
        totals = {k: int(v.sum()) for k, v in counts.items()}
        if counts:
            totals["finest"] = f"h/{2**REPROJECT_HALVINGS}"
        return {**entry, "seconds": seconds, **totals}

    def start_on_gamma(self, state, step: int) -> tuple[Any, dict[str, Any]]:
        """``state`` (at the warm-up's end, chunk boundary ``step``) with its parameters x_w
        moved to Phi(x_w) + (ell/2) v1 by ``eosflow.flows.cycle_start`` (each point of a
        sweep at its own lr; a point that has stopped is left alone), and the
        ``start_on_gamma`` entry of status.json: ``status`` ok, ``step``, ``lambda_1`` at
        Phi(x_w), ``phi_dist`` = |x_w - Phi(x_w)|, ``grad_norm`` at Phi(x_w),
        ``half_width`` = ell/2 (a list, one per point, in a sweep), ``seconds``. Computed like
        the prediction (``prediction_dtype``, the residuals, ``phi_gtol``) and, across
        processes, by process 0 alone and sent to the others. All or nothing: if a point's
        projection or eigen-solve does not converge, no point moves, ``status`` is failed and
        ``reason`` says which."""
        c = self.config
        lrs = self.sweep.get("lr", [c.lr] * self.points) if self.sweep else [c.lr]
        stopped = np.atleast_1d(to_host(state.done))
        t0 = time.perf_counter()
        with self._prediction_numerics():
            problem, params = self._predicting(state.params)
            points = [params] if self.sweep is None else [
                jax.tree.map(lambda x, i=i: x[i], params) for i in range(len(lrs))]
            starts = [None if stopped[i] else flows.cycle_start(
                self._loss(problem), x, float(lr), method=c.optimizer,
                residual_fn=problem.full_residual, project_kwargs=self._project_kwargs(),
                throw=False) for i, (x, lr) in enumerate(zip(points, lrs, strict=True))]
            values = [x if r is None else r.value for x, r in zip(points, starts, strict=True)]
            moved = values[0] if self.sweep is None else jax.tree.map(
                lambda *xs: jnp.stack(xs), *values)
            moved = jax.tree.map(lambda new, old: np.asarray(new, old.dtype), moved,
                                 state.params)  # back to the run's dtype
            numbers = {k: [math.nan if r is None else float(f(r)) for r in starts]
                       for k, f in (("lambda_1", lambda r: r.lambda_1),
                                    ("phi_dist", lambda r: r.projection.distance),
                                    ("grad_norm", lambda r: r.projection.grad_norm),
                                    ("half_width", lambda r: r.half_width))}
        if jax.process_count() > 1:  # one answer for every replica of the parameters
            from jax.experimental import multihost_utils

            moved = multihost_utils.broadcast_one_to_all(moved)
        entry = {"status": "ok", "step": step,
                 **{k: v[0] if self.sweep is None else v for k, v in numbers.items()},
                 "seconds": round(time.perf_counter() - t0, 1)}
        failed = [i for i, r in enumerate(starts) if r is not None and not r.converged]
        if all(r is None for r in starts):
            return state, {"status": "failed", "step": step, "seconds": entry["seconds"],
                           "reason": f"the run had stopped by step {step}: nothing to move"}
        if failed:
            r = starts[failed[0]]
            point = f" of sweep point {failed[0]}" if self.sweep is not None else ""
            why = (r.projection.summary() if not bool(r.projection.converged) else
                   f"lambda_1 = {float(r.lambda_1):.4g} not within its tolerance")
            entry.update(status="failed", reason=(
                f"Phi(x_{step}){point} did not converge: {why}; the run goes on from x_{step}"))
            return state, entry
        return self.place(state._replace(params=moved)), entry

    def write_phi_check(self, out: Path, params, step: int, *, write: bool) -> dict[str, Any]:
        """λ1 at Φ(x_t) for the state ``params`` at chunk boundary ``step`` (a sweep's first
        point): the check of the re-projection prediction on Γ itself (Arora et al., Thm
        4.3: Φ(x_t) follows the flow, while x_t may sit far from Γ along flat directions).
        Φ is ``project_solve``'s default with the loss's residuals in ``prediction_dtype``,
        as for the prediction;
        λ1 by ``top_eigenpairs`` on the full loss. Written (when ``write``) as
        ``phi/STEP.npz``: ``step``, ``lambda_phi``, ``phi_dist`` = |x_t - Φ(x_t)|,
        ``grad_norm`` at Φ(x_t), ``converged``, ``seconds``. Returns the row."""
        t0 = time.perf_counter()
        with self._prediction_numerics():
            problem, params = self._predicting(self._first(params))
            loss = self._loss(problem)
            proj = flows.project_solve(loss, params, residual_fn=problem.full_residual,
                                       throw=False, **self._project_kwargs())
            lam = top_eigenpairs(loss, proj.value, 1).eigenvalues[0]
            row = {"step": np.asarray(step), "lambda_phi": np.asarray(lam, np.float64),
                   "phi_dist": np.asarray(proj.distance, np.float64),
                   "grad_norm": np.asarray(proj.grad_norm, np.float64),
                   "converged": np.asarray(bool(proj.converged))}
        row["seconds"] = np.asarray(round(time.perf_counter() - t0, 1))
        if write:
            rd.write_phi_check(out, row)
        return row
