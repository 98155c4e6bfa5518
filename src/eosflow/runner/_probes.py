"""The probes a step runs on its cadence — eigen-solves (raw and preconditioned), batch
sharpness, Φ diagnostics, evaluation on the training and held-out data — as methods mixed
into :class:`~eosflow.runner.Program`; each has a twin that returns the same row of NaNs
when it is not due."""




import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from ..curvature import (
    batch_sharpness,
    extrapolated_start,
    hessian_operator,
    hutchinson_trace,
    minibatch_sharpness,
    preconditioned_sharpness,
    push_warm_start,
    sum_over_batches,
    top_eigenpairs,
)
from ..flows import (
    phi_diagnostics,
)
from ..optim import SwitchState, preconditioner_from_state
from ..problems import random_batch_indices

MAX_PHI_COORDS = 16  # Phi(x_t) is recorded coordinate by coordinate up to this dimension
MINIBATCH_TAG = 0xB47C  # folded into the seed's key: the fixed batches of minibatch_lambda_1


class _Probes:
    """Probe methods of :class:`~eosflow.runner.Program` (they read its fields)."""

    def _eigen(self, p, params, grad, gnorm, history, key, *, hessian=None):
        """The top eigenpairs at ``params``, started from ``history`` (the warm starts of the
        last solves, :func:`~eosflow.curvature.extrapolated_start`); returns the history
        with this solve's warm start pushed, and the row. ``hessian``: the step's own
        linearisation (:meth:`~eosflow.curvature.HessianOperator.linearize`), or None for
        the Hessian of ``p.curvature_batches``."""
        c = self.config
        v0 = (extrapolated_start(history, self.track_block, period=self.track_period)
              if self.track_extrapolate
              else jax.tree.map(lambda h: h[: self.track_block], history))
        if hessian is None:
            hessian = hessian_operator(p.loss_fn, params, batches=p.curvature_batches)
        res = top_eigenpairs(
            hessian, params, self.k, v0=v0, tol=c.eig_tol, block_size=self.track_block,
            max_matvecs=c.eig_max_matvecs, key=key, throw=False,
            criterion=c.eig_criterion, hint=grad,  # at EoS the gradient leans on v1
            # the fresh direction is multiplied only when the carried block, and then its
            # own Krylov continuation, fail the tests: alone, its one product shows an
            # eigenvalue the block misses only when its Rayleigh quotient passes the
            # block's (a small problem's bulk near the top, for some draws; never on the
            # digits MLP: top_eigenpairs' min_matvecs), and it costs a product (the suite's
            # scan, per estimate at every step: 3.79 always multiplied, 3.31 after the
            # block, 2.79 after its continuation); the first solve starts from random rows
            min_matvecs=self.track_block,
        )
        lam = res.eigenvalues
        v1 = jax.tree.map(lambda x: x[0], res.eigenvectors)
        ghat = optax.tree.scale(1 / gnorm, grad)
        row = {f"lambda_{i + 1}": lam[i] for i in range(self.k)}
        row.update({f"residual_{i + 1}": res.residuals[i] for i in range(self.k)})
        row["eig_matvecs"] = res.num_matvecs
        # 1.0 / 0.0 where a solve ran, nan ("no measurement") on rows without one
        row["eig_converged"] = res.converged.astype(self.dtype)
        row["align_cos"] = optax.tree.vdot(ghat, v1)
        if c.track_alignment:
            hg = hessian.mv(ghat)
            row["align_rayleigh"] = optax.tree.vdot(ghat, hg) / lam[0]
        if c.trace_samples is not None:
            tr = hutchinson_trace(p.loss_fn, params, num_samples=c.trace_samples,
                                  batches=p.curvature_batches, key=jax.random.fold_in(key, 7),
                                  throw=False)
            row["hessian_trace"] = tr.trace.astype(self.dtype)
            row["hessian_trace_se"] = tr.stderr.astype(self.dtype)
        return push_warm_start(history, res.warm_start), row

    def _precond_eigen(self, p, params, opt_state, block, key):
        """lambda_1(P^-1 H) at ``params``, P read from ``opt_state`` (the main optimizer's
        part of a warm-up switch), warm-started from ``block``."""
        c = self.config
        if isinstance(opt_state, SwitchState):
            opt_state = opt_state.then
        P = preconditioner_from_state(self.precond_name, opt_state, **self.precond_options)
        res = preconditioned_sharpness(
            p.loss_fn, params, P, 1, v0=block, tol=c.eig_tol, batches=p.curvature_batches,
            block_size=self.block, max_matvecs=c.eig_max_matvecs,
            key=jax.random.fold_in(key, 5), throw=False, criterion=c.eig_criterion,
        )
        row = {"precond_lambda_1": res.eigenvalues[0].astype(self.dtype),
               "precond_residual_1": res.residuals[0].astype(self.dtype),
               "precond_matvecs": jnp.asarray(res.num_matvecs, jnp.int32),
               "precond_converged": res.converged.astype(self.dtype)}
        return res.warm_start, row

    def _no_precond(self):
        nan = jnp.asarray(jnp.nan, self.dtype)
        return {"precond_lambda_1": nan, "precond_residual_1": nan,
                "precond_matvecs": jnp.zeros((), jnp.int32), "precond_converged": nan}

    def _batch_sharpness(self, p, params, key):
        """Batch sharpness over ``batch_sharpness_batches`` fresh i.i.d. mini-batches."""
        c = self.config
        idx = random_batch_indices(jax.random.fold_in(key, 3), self.num_examples,
                                   c.batch_size, c.batch_sharpness_batches)
        res = batch_sharpness(p.loss_fn, params, self._minibatch(self._examples(p.batches), idx))
        return {"batch_sharpness": res.sharpness.astype(self.dtype),
                "batch_sharpness_se": res.stderr.astype(self.dtype),
                "batch_sharpness_matvecs": jnp.asarray(res.num_matvecs, jnp.int32)}

    def _no_batch_sharpness(self):
        nan = jnp.asarray(jnp.nan, self.dtype)
        return {"batch_sharpness": nan, "batch_sharpness_se": nan,
                "batch_sharpness_matvecs": jnp.zeros((), jnp.int32)}

    def _minibatch_lambda(self, p, params, key):
        """λ1 of ``minibatch_lambda_batches`` fixed mini-batch losses (the same batches at
        every measurement: drawn from the seed alone), cold solves at ``eig_tol``."""
        c = self.config
        idx = random_batch_indices(jax.random.fold_in(jax.random.key(c.seed), MINIBATCH_TAG),
                                   self.num_examples, c.batch_size, c.minibatch_lambda_batches)
        res = minibatch_sharpness(p.loss_fn, params,
                                  self._minibatch(self._examples(p.batches), idx),
                                  tol=c.eig_tol, key=jax.random.fold_in(key, 11),
                                  max_matvecs=c.eig_max_matvecs, throw=False)
        return {"minibatch_lambda_1": res.mean.astype(self.dtype),
                "minibatch_lambda_1_max": jnp.max(res.eigenvalues).astype(self.dtype),
                "minibatch_lambda_matvecs": jnp.asarray(res.num_matvecs, jnp.int32)}

    def _no_minibatch_lambda(self):
        nan = jnp.asarray(jnp.nan, self.dtype)
        return {"minibatch_lambda_1": nan, "minibatch_lambda_1_max": nan,
                "minibatch_lambda_matvecs": jnp.zeros((), jnp.int32)}

    def _no_eigen(self):
        nan = jnp.asarray(jnp.nan, self.dtype)
        row = {f"lambda_{i + 1}": nan for i in range(self.k)}
        row.update({f"residual_{i + 1}": nan for i in range(self.k)})
        row["eig_matvecs"] = jnp.zeros((), jnp.int32)
        row["eig_converged"] = nan  # no solve at this step: no measurement, not "False"
        row["align_cos"] = nan
        if self.config.track_alignment:
            row["align_rayleigh"] = nan
        if self.config.trace_samples is not None:
            row["hessian_trace"] = row["hessian_trace_se"] = nan
        return row

    def _phi(self, params):
        """Phi(x_t) and the alignment diagnostics of docs/theory.md, "Numerical signatures"
        (small problems)."""
        d = phi_diagnostics(self.problem.loss_fn, params)
        row = {k: d[k].astype(self.dtype) for k in ("phi_dist", "lambda_phi", "a_t", "theta")}
        flat = ravel_pytree(d["phi"])[0]
        if flat.size <= MAX_PHI_COORDS:
            row.update({f"phi_{i}": flat[i] for i in range(flat.size)})
        return row

    def _no_phi(self):
        shapes = jax.eval_shape(self._phi, self.problem.params)
        return {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in shapes.items()}

    def _evaluate(self, p, params):
        sums = sum_over_batches(lambda b: p.eval_fn(params, b), p.batches)
        return {k: v.astype(self.dtype) for k, v in sums.items()}

    def _test(self, p, params):
        """Loss and ``eval_fn`` metrics on the held-out batches (``test_*`` columns)."""
        out = {"test_loss": sum_over_batches(lambda b: p.loss_fn(params, b), p.test_batches)}
        if p.eval_fn is not None:
            sums = sum_over_batches(lambda b: p.eval_fn(params, b), p.test_batches)
            out.update({f"test_{k}": v for k, v in sums.items()})
        return {k: v.astype(self.dtype) for k, v in out.items()}

    def _no_test(self):
        shapes = jax.eval_shape(lambda x: self._test(self.problem, x), self.problem.params)
        return {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in shapes.items()}

    def _no_eval(self):
        shapes = jax.eval_shape(self.problem.eval_fn, self.problem.params,
                                jax.tree.map(lambda x: x[0], self.problem.batches))
        return {k: jnp.asarray(jnp.nan, self.dtype) for k in shapes}

    # -- chunks -------------------------------------------------------------------------------
