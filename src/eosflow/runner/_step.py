"""One run's compiled step and chunk: the training state, the optimizer step with its
probes (eigen-solve, alignment, Φ, evaluation), and the ``lax.scan`` over a chunk of steps."""


import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from .. import __version__
from .._types import PyTree
from ..curvature import (
    hessian_operator,
    sum_over_batches,
    tracking_history,
)
from ..flows import step_noise
from ..optim import KickState, method
from ..problems import Problem, batch_indices
from ._build import build_optimizer, initial_params, rmsprop_options
from ._config import Config, ConfigError
from ._custom import CustomOptimizer
from ._devices import _global_array, host_cpu, make_mesh, to_host
from ._events import REPROJECT_HALVINGS, REPROJECT_RTOL, _Predictions
from ._probes import _Probes
from ._processes import _Processes
from ._progress import last_valid

SWEEPABLE = ("lr", "seed", "momentum", "loss_min")
# the divergence test compares the loss with divergence_factor * max(initial loss, this)
DIVERGENCE_FLOOR = 1e-3
# the stop codes of TrainState.reason and the stop_reason column
REASONS = {0: "running", 1: "diverged", 2: "diverged", 3: "goal_reached", 4: "failed"}


class TrainState(NamedTuple):
    """Everything a step needs; saved whole in checkpoints."""

    params: Any
    opt_state: Any
    eig_block: Any  # the eigen-solver's warm starts: the last solves' blocks, newest first
    # (leading axis 3 * period * block: curvature.tracking_history), or None
    key: jax.Array  # raw uint32[2] PRNG key
    step: jax.Array  # int32, shared by every point of a sweep
    done: jax.Array  # bool: stopped (goal or divergence); later steps leave the state alone
    reason: jax.Array  # int32 code, see REASONS
    loss0: jax.Array  # the loss at step 0, for the divergence test
    # warm start of the preconditioned-sharpness solve (optimizers whose record has a
    # `moment`: Adam, RMSProp), or None; last, so that older checkpoints (None here) load
    precond_block: Any = None
    # the processes stepped beside the optimizer (config.processes beyond discrete): a
    # ProcessState, or None
    processes: Any = None


class Program(_Probes, _Predictions, _Processes):
    """The compiled pieces of one run (one point, or a vmapped sweep of points).

    Built from a configuration and its problem, it gives the initial :class:`TrainState`,
    the data (sharded when a mesh is in use), the pure step (:meth:`step_fn`) and the
    compiled ``n``-step chunk (:meth:`chunk_fn`, cached per ``n``: the only state it keeps).
    :func:`run_experiment` drives it; tests and benchmarks use it to time or inspect a chunk.

    Immutable once built: every attribute is fixed by the constructor except two that are
    not part of the computation — the memo of compiled chunks, and ``on_progress``, the
    listener told of each piece of a chunk as it arrives (the same compiled programs run
    with or without one, so that a resumed ``--quiet`` run equals a shown one bit for bit).
    """

    _MUTABLE = ("on_progress",)

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False) and name not in self._MUTABLE:
            raise AttributeError(f"Program is immutable once built: cannot set {name!r}")
        object.__setattr__(self, name, value)

    def __init__(self, config: Config, problem: Problem, sweep, points, metrics_fn, *,
                 custom: CustomOptimizer | None = None):
        self.config, self.problem, self.sweep, self.points = config, problem, sweep, points
        self.metrics_fn = metrics_fn
        # a caller's optax transformation (run_experiment(optimizer=tx)) or None
        self.custom = custom
        self.method = method(config.optimizer) if custom is None else custom.method
        # the record that says where a diagonal preconditioner lives in the state
        self.precond_name = config.optimizer if custom is None else custom.like
        # L*: the configuration's when given, else the problem's own (a user problem's)
        self.loss_min = problem.loss_min if config.loss_min is None else config.loss_min
        c = config
        self.eig_on = c.eig_every is not None
        self.k = c.num_eigs
        dim = sum(int(np.size(x)) for x in jax.tree.leaves(problem.params))
        if self.eig_on and self.k > dim:
            raise ConfigError(f"num_eigs: exceeds the number of parameters ({dim})")
        # the preconditioned and the processes' solves carry k vectors (top_eigenpairs adds
        # one fresh direction: random + the gradient, which at EoS leans on v1)
        self.block = min(c.eig_block or self.k, dim)
        # lambda_1 on the run's own trajectory tracks the top *cluster*: k + 1 vectors, the
        # one below the top k held to "not mostly an eigenvector above them" (top_eigenpairs'
        # block_size; one vector follows its own eigenvalue through a crossing while the
        # new top goes unseen: 7 of 200 estimates 0.3-2.5% low on the digits MLP's EoS
        # window), each solve started from the warm starts of the solves of the same
        # oscillation phase, extrapolated (curvature.extrapolated_start, its weight fitted
        # to three solves per phase), stopping on them when they pass (_Probes._eigen): 11.6
        # HVPs per estimate on the default run, from 12.6 with the previous solve's k vectors
        self.track_block = min(c.eig_block or self.k + 1, dim)
        period = self._track_period() if self.eig_on else 1
        self.track_extrapolate = period is not None
        self.track_period = period or 1
        self.track_rows = jax.eval_shape(  # the rows tracking_history holds
            lambda: tracking_history(jnp.zeros(()), self.track_block, period=self.track_period)
        ).shape[0]
        # adaptive methods (a diagonal preconditioner P in their state): their EoS quantity is
        # lambda_1(P^-1 H), recorded as precond_lambda_1 beside the raw lambda_1
        self.precond_on = self.eig_on and self.method.moment is not None
        # with record_every > 1 a window records its last counted step's grad_norm, eff_lr,
        # param_norm and update_norm: where nothing else in the step reads them, the window
        # carries that step's gradient, update and parameters and computes them once, at
        # its end (on toy A they were a third of the runner's time per step)
        self.defer_metrics = (c.record_stride > 1 and not self.eig_on
                              and self.metrics_fn is None)
        # how to read P: RMSProp's decay and bias correction are the run's (Adam's optax
        # defaults are eosflow.optim.adam's)
        self.precond_options = rmsprop_options(c) if self.precond_name == "rmsprop" else {}
        self.chunk = c.chunk_length
        self.ckpt_every = c.checkpoint_every or self.chunk
        self.dtype = jnp.result_type(*jax.tree.leaves(problem.params))
        if jnp.dtype(self.dtype).itemsize < 4:  # a caller's Problem; presets follow `dtype`
            raise ConfigError(f"dtype: the problem's params are {jnp.dtype(self.dtype).name}; "
                              "the runner trains in float32 or float64: cast the params and "
                              "the data")
        self.mesh = make_mesh(c.devices)
        self._chunk_fns: dict[Any, Callable] = {}
        # progress from inside a chunk: `on_progress(step, loss, lambda_1, eff_lr)` (point 0
        # of a sweep) after each of its pieces (network problems, see `pieces`)
        self.on_progress: Callable[..., None] | None = None
        self.num_examples = self._check_minibatch()
        if sweep is not None and self.extra_processes:
            raise ConfigError(f"processes: {self.extra_processes[0]!r} is not stepped in a "
                              "sweep; run each point alone")
        if self.mesh is not None and self.extra_processes:  # e.g. a multi-process job
            raise ConfigError(f"processes: {self.extra_processes[0]!r} runs on one device, "
                              "not on a mesh of devices or processes")
        self._frozen = True

    # -- mini-batches ------------------------------------------------------------------------
    def _check_minibatch(self) -> int | None:
        """The number of training examples a mini-batch run samples from (None: full batch)."""
        c, p = self.config, self.problem
        if c.batch_size is None:
            return None
        if p.batches is None or not isinstance(p.batches, dict) or "w" not in p.batches:
            raise ConfigError("batch_size: mini-batches need a supervised problem (batches "
                              "with per-example weights 'w'); this problem has none")
        n = int(np.sum(np.asarray(p.batches["w"]) > 0))
        if c.batch_size > n:
            raise ConfigError(f"batch_size: {c.batch_size} exceeds the {n} training examples")
        return n

    def _examples(self, batches):
        """The training examples as one flat axis (``(N, ...)``, weights dropped)."""
        n = self.num_examples
        return {k: v.reshape(-1, *v.shape[2:])[:n] for k, v in batches.items() if k != "w"}

    def _minibatch(self, flat, idx):
        """Rows ``idx`` (shape ``(..., B)``) of the flat examples as batches whose loss is the
        mean over the B examples (weights 1/B)."""
        b = {k: v[idx] for k, v in flat.items()}
        b["w"] = jnp.full(idx.shape, 1.0 / idx.shape[-1], self.dtype)
        return b

    # -- devices --------------------------------------------------------------------------
    def data(self) -> tuple[Any, Any, Any]:
        """The data arrays (training, Hessian subset, held-out), sharded along the example
        axis when a mesh is in use."""
        p = self.problem
        if self.mesh is None:
            return p.batches, p.hessian_batches, p.test_batches
        return tuple(self._shard(b) for b in (p.batches, p.hessian_batches, p.test_batches))

    def _shard(self, batches):
        if batches is None:
            return None
        n = self.mesh.size
        for leaf in jax.tree.leaves(batches):
            if leaf.ndim < 2 or leaf.shape[1] % n:
                size = leaf.shape[1] if leaf.ndim >= 2 else leaf.shape
                raise ConfigError(
                    f"devices: {n} devices do not divide the physical batch of {size} examples;"
                    f" set chunk_size to a multiple of {n} (a short last chunk is padded with "
                    "zero-weight rows, which changes nothing)"
                )
        sharding = NamedSharding(self.mesh, P(None, "data"))
        return jax.tree.map(lambda x: _global_array(x, sharding), batches)

    def place(self, state: TrainState) -> TrainState:
        """Replicate the state over the mesh (parameters are small next to the data)."""
        if self.mesh is None:
            return jax.device_put(state)
        rep = NamedSharding(self.mesh, P())
        return jax.tree.map(lambda x: _global_array(x, rep), state)

    # -- hyperparameters and state --------------------------------------------------------
    def hyper(self) -> dict[str, jax.Array]:
        c = self.config
        base = {"lr": c.lr, "momentum": c.momentum, "loss_min": self.loss_min}
        if self.sweep is None:
            return {k: jnp.asarray(v, self.dtype) for k, v in base.items()}
        out = {}
        for k, v in base.items():
            vals = self.sweep.get(k, [v] * self.points)
            out[k] = jnp.asarray(np.asarray(vals, np.float64), self.dtype)
        return out

    def optimizer(self, hyper) -> optax.GradientTransformationExtraArgs:
        return build_optimizer(self.config, hyper["lr"], momentum=hyper["momentum"],
                               loss_min=hyper["loss_min"],
                               main=None if self.custom is None else self.custom.transform)

    def initial_state(self) -> TrainState:
        c = self.config
        if self.sweep is not None and "seed" in self.sweep:
            seeds = [int(s) for s in self.sweep["seed"]]
            params = initial_params(c, self.problem, seeds)
        elif self.sweep is not None:
            params = jax.tree.map(lambda x: jnp.stack([x] * self.points), self.problem.params)
        else:
            params = self.problem.params
        hyper = self.hyper()

        def init_one(params, hyper, seed):
            opt_state = self.optimizer(hyper).init(params)
            key = jax.random.PRNGKey(seed)
            def block(salt):
                ks = jax.random.split(jax.random.fold_in(key, salt),
                                      len(jax.tree.leaves(params)))
                leaves, treedef = jax.tree.flatten(params)
                return jax.tree.unflatten(treedef, [
                    jax.random.normal(k, (self.block, *x.shape), x.dtype)
                    for k, x in zip(ks, leaves, strict=True)
                ])

            # the eigen-solver's warm starts: none yet (the first solve starts from random
            # rows of its own, and its vectors, not these, start the next solves)
            eig = (tracking_history(params, self.track_block, period=self.track_period)
                   if self.eig_on else None)
            pre = block(4) if self.precond_on else None
            return opt_state, key, (eig, pre)

        if self.sweep is None:
            opt_state, key, (eig, pre) = init_one(params, hyper, c.seed)
            batch = ()
            procs = self.processes_init(params, key)
        else:
            seeds = jnp.asarray(self.sweep.get("seed", [c.seed] * self.points), jnp.uint32)
            opt_state, key, (eig, pre) = jax.vmap(init_one)(params, hyper, seeds)
            batch = (self.points,)
            procs = None
        return TrainState(
            params=params, opt_state=opt_state, eig_block=eig, key=key,
            step=jnp.zeros((), jnp.int32), done=jnp.zeros(batch, bool),
            reason=jnp.zeros(batch, jnp.int32), loss0=jnp.full(batch, jnp.nan, self.dtype),
            precond_block=pre, processes=procs,
        )

    def fit_block(self, state: TrainState, width: int) -> TrainState:
        """``state`` with its carried eigen block cut or zero-padded to ``width`` rows (a zero
        row starts as a fresh random direction, or is an empty slot of the warm-start
        history): checkpoints written with another width (0.1.0 carried k + 1 vectors; later
        versions the block alone, no history: its vectors become the newest solve's; a history
        of two solves per phase, as before the extrapolation weight was fitted: the missing
        oldest solve makes the first extrapolations linear) resume."""
        if state.eig_block is None:
            return state
        axis = 0 if self.sweep is None else 1

        def fit(x):
            have = x.shape[axis]
            if have >= width:
                return jax.lax.slice_in_dim(x, 0, width, axis=axis)
            pad = [(0, 0)] * x.ndim
            pad[axis] = (0, width - have)
            return jnp.pad(x, pad)

        return state._replace(eig_block=jax.tree.map(fit, state.eig_block))

    def saved_block_width(self, state: TrainState, shapes: list) -> int | None:
        """The carried block width in a checkpoint whose leaves have ``shapes`` (None: no
        block)."""
        if state.eig_block is None:
            return None
        first = len(jax.tree.leaves((state.params, state.opt_state)))
        if first >= len(shapes):
            return None
        return int(shapes[first][0 if self.sweep is None else 1])

    # -- one step ----------------------------------------------------------------------------
    def view(self, data) -> Problem:
        """The problem with its data arrays replaced by ``data`` (traced jit arguments, so
        the data is never baked into the compiled program as a constant)."""
        batches, hessian, test = data
        return dataclasses.replace(self.problem, batches=batches, hessian_batches=hessian,
                                   test_batches=test)

    def step_fn(self, state: TrainState, hyper, data) -> tuple[TrainState, dict[str, jax.Array]]:
        c, p = self.config, self.view(data)
        opt = self.optimizer(hyper)
        params, step = state.params, state.step
        eig_block, shared = state.eig_block, False
        if self.num_examples is not None:  # SGD: the step's mini-batch, a function of the step
            idx = batch_indices(jax.random.fold_in(state.key, 2), step, self.num_examples,
                                c.batch_size, replace=c.batch_replace)
            mb = self._minibatch(self._examples(p.batches), idx[None])
            loss, grad = hessian_operator(p.loss_fn, params, batches=mb).loss_and_grad()
        else:
            op = hessian_operator(p.loss_fn, params, batches=p.batches)
            # a measured step's solve and its gradient share one forward and backward pass
            # (HessianOperator.linearize) where the Hessian is the loss's, in one batch; the
            # loss and gradient are loss_and_grad's
            shared = self.eig_on and p.hessian_batches is None and op.num_batches == 1
            if shared:
                def measured():
                    loss, grad, hessian = op.linearize()
                    return loss, grad, *self._eigen(
                        p, params, grad, optax.tree.norm(grad), state.eig_block,
                        jax.random.fold_in(state.key, step), hessian=hessian)

                loss, grad, eig_block, eig_row = jax.lax.cond(
                    self._measure_at(step), measured,
                    lambda: (*op.loss_and_grad(), state.eig_block, self._no_eigen()))
            else:
                loss, grad = op.loss_and_grad()
        gnorm = optax.tree.norm(grad)
        updates, opt_state = opt.update(grad, state.opt_state, params, value=loss)
        if self.defer_metrics:  # computed at the window's end (_window_row)
            row = {"loss": loss, DEFERRED: (grad, updates, params)}
        else:
            row = {"loss": loss, **_step_metrics(grad, updates, params)}
        eff_lr = row.get("eff_lr")
        kicks = [s.num_kicks for s in jax.tree.leaves(opt_state, is_leaf=_is_kick)
                 if isinstance(s, KickState)]
        if kicks:
            row["num_kicks"] = sum(kicks)
        if self.eig_on:
            if not shared:
                eig_block, eig_row = jax.lax.cond(
                    self._measure_at(step),
                    lambda: self._eigen(p, params, grad, gnorm, state.eig_block,
                                        jax.random.fold_in(state.key, step)),
                    lambda: (state.eig_block, self._no_eigen()),
                )
            row.update(eig_row)
            row["eta_lambda"] = eff_lr * eig_row["lambda_1"]
            if self.num_examples is not None:
                row.update(jax.lax.cond(
                    self._measure_at(step),
                    lambda: self._batch_sharpness(p, params, jax.random.fold_in(state.key, step)),
                    self._no_batch_sharpness,
                ))
            if c.minibatch_lambda_batches is not None:
                row.update(jax.lax.cond(
                    self._measure_at(step),
                    lambda: self._minibatch_lambda(p, params,
                                                   jax.random.fold_in(state.key, step)),
                    self._no_minibatch_lambda,
                ))
        precond_block = state.precond_block
        if self.precond_on:
            # P is the one this step's update applied: read from the state after the update;
            # a warm-up's steps (another optimizer) have none
            on = self._measure_at(step) & (step >= c.warmup_steps)
            precond_block, pre_row = jax.lax.cond(
                on,
                lambda: self._precond_eigen(p, params, opt_state, state.precond_block,
                                            jax.random.fold_in(state.key, step)),
                lambda: (state.precond_block, self._no_precond()),
            )
            row.update(pre_row)
            # S = 2 lambda_1(P^-1 H) / edge: 2 at the method's edge (the record's)
            s = self.method.stableness(pre_row["precond_lambda_1"], eff_lr, hyper["lr"],
                                       hyper["momentum"])
            row["eta_lambda"] = jnp.where(step >= c.warmup_steps, s, row["eta_lambda"])
        if c.phi_every is not None and c.reproject_steps is None:  # else at boundaries
            row.update(jax.lax.cond(
                step % c.phi_every == 0, lambda: self._phi(params), self._no_phi
            ))
        if p.eval_fn is not None and c.eval_every is not None and p.batches is not None:
            row.update(jax.lax.cond(
                step % c.eval_every == 0, lambda: self._evaluate(p, params), self._no_eval
            ))
        if p.test_batches is not None and c.eval_every is not None:
            row.update(jax.lax.cond(
                step % c.eval_every == 0, lambda: self._test(p, params), self._no_test))
        if self.num_examples is not None and c.eval_every is not None:
            # SGD's "loss" is its mini-batch's; the full training loss on the eval cadence
            row["full_loss"] = jax.lax.cond(
                step % c.eval_every == 0,
                lambda: sum_over_batches(lambda b: p.loss_fn(params, b), p.batches),
                lambda: jnp.asarray(jnp.nan, loss.dtype))
        if self.metrics_fn is not None:
            extra = self.metrics_fn(params, dict(row))
            clash = set(extra) & set(row)
            if clash:
                raise ValueError(f"metrics_fn returned built-in column names: {sorted(clash)}")
            row.update({k: jnp.asarray(v) for k, v in extra.items()})

        loss0 = jnp.where(step == 0, loss, state.loss0)
        nonfinite = ~jnp.isfinite(loss)
        # the floor keeps a run that starts at (or next to) a minimum, where the initial
        # loss is 0 or 1e-20, from "diverging" at the first rounding-level rise
        exploded = (
            loss > c.divergence_factor * jnp.maximum(loss0, DIVERGENCE_FLOOR)
            if c.divergence_factor is not None else False
        )
        goal = loss <= c.loss_goal if c.loss_goal is not None else False
        # a method that reads L* (GD on sqrt(L - L*)), below it: built without its own check
        # (build_optimizer), it stepped nan
        below = ((loss < hyper["loss_min"]) & (step >= c.warmup_steps)
                 if self.custom is None and "loss_min" in self.method.hyper else False)
        reason = jnp.where(below, 4, jnp.where(nonfinite, 1, jnp.where(
            exploded, 2, jnp.where(goal, 3, 0))))
        stop_now = ~state.done & (reason > 0)
        new_params = optax.apply_updates(params, updates)
        procs = state.processes
        if self.extra_processes:
            measure = self._measure_at(step) if self.eig_on else False
            procs, proc_row = self.processes_step(p, procs, params, new_params, hyper, step,
                                                  measure, jax.random.fold_in(state.key, step))
            row.update(proc_row)
        keep = state.done | stop_now  # a stopped run keeps the state at which it stopped

        def choose(old, new):
            return jax.tree.map(lambda o, n: jnp.where(keep, o, n), old, new)

        new = TrainState(
            params=choose(params, new_params),
            opt_state=choose(state.opt_state, opt_state),
            eig_block=choose(state.eig_block, eig_block),
            key=state.key,  # the run's base key; each use folds in the step
            step=step + 1,
            done=state.done | stop_now,
            reason=jnp.where(stop_now, reason, state.reason),
            loss0=loss0,
            precond_block=choose(state.precond_block, precond_block),
            processes=choose(state.processes, procs),
        )
        row["valid"] = ~state.done
        row["stop_reason"] = jnp.where(stop_now, reason, 0).astype(jnp.int32)
        return new, row

    def _track_period(self) -> int | None:
        """Solves per phase of the EoS period-two oscillation: 2 when consecutive solves see
        alternate phases (an odd cadence, or the steps t, t + 1 of an even one for the
        adaptive step methods), 1 when every solve sees the same phase, None when no fixed
        lag does (the steps t, t + 1 of an odd cadence: phases 0 1 1 0 0 1 ...; each solve
        then starts from the last one's vectors, not extrapolated)."""
        every = self.config.eig_every
        if every > 1 and self.method.adaptive_step:
            return 2 if every % 2 == 0 else None
        return 2 if every % 2 else 1

    def _measure_at(self, step):
        """Whether the sharpness is measured at ``step``: every ``eig_every`` steps, and for
        normalized GD and GD on sqrt(L) also at the step after (their stableness alternates
        from step to step, so the harmonic sum of Thm 4.7 needs S_t and S_{t+1})."""
        every = self.config.eig_every
        if every > 1 and self.method.adaptive_step:
            return step % every <= 1
        return step % every == 0

    def pieces(self, n: int) -> list[int]:
        """The lengths of the compiled scans an ``n``-step chunk runs as, one after the other:
        for network problems, equal pieces of the smallest divisor of ``n`` that is at least
        ``n / 10`` and a multiple of ``record_every`` (at most ten pieces, one compiled
        program; a prime ``n`` runs whole), so that a long chunk reports progress between
        them; one piece for toys (a toy chunk takes milliseconds).

        Progress comes from the host *between* compiled calls, not from a callback inside
        the scan: a host callback keeps a program out of JAX's persistent compilation cache
        (every process would compile every chunk again) and changes XLA's fusion. The pieces
        do not depend on whether anyone listens, so a ``--quiet`` run equals a shown one bit
        for bit."""
        if self.config.is_toy:
            return [n]
        k = self.config.record_stride
        if n < 1 or n % k:
            raise ValueError(f"a chunk of {n} steps: must be a positive multiple of "
                             f"record_every = {k}")
        m = next(d for d in range(-(-n // 10), n + 1) if n % d == 0 and d % k == 0)
        return [m] * (n // m)

    def chunk_fn(self, n: int) -> Callable:
        """The jitted ``n``-step scan ``(state, hyper, data) -> (state, rows)``; every row
        field has a leading axis of length ``n``, or ``n / record_every`` with
        ``record_every`` > 1: an outer scan over windows of ``record_every`` steps whose inner
        scan adds each step's row to an accumulator in its carry (:func:`_window_row`), so
        that the host never receives, and the device never stores, a row per step."""
        if n not in self._chunk_fns:
            step = self.step_fn
            if self.sweep is not None:
                axes = TrainState(0, 0, 0, 0, None, 0, 0, 0, 0, 0)
                step = jax.vmap(step, in_axes=(axes, 0, None), out_axes=(axes, 0))

            k = self.config.record_stride

            def steps(state, hyper, data, length):
                return jax.lax.scan(lambda s, _: step(s, hyper, data), state, None,
                                    length=length)

            def run(state, hyper, data):
                if k == 1:
                    return steps(state, hyper, data, n)
                shapes = jax.eval_shape(step, state, hyper, data)[1]

                def window(s, _):  # k steps, their rows reduced as they come (no stacking)
                    first, counted = s.step, ~s.done  # valid steps are a prefix of the window

                    def body(carry, _):
                        s, acc = carry
                        s, row = step(s, hyper, data)
                        return (s, _window_add(acc, row, counted)), None

                    (s, acc), _ = jax.lax.scan(body, (s, _window_init(shapes)), None, length=k)
                    return s, _window_row(acc, shapes, first, counted, k,
                                          points=self.sweep is not None)

                return jax.lax.scan(window, state, None, length=n // k)

            self._chunk_fns[n] = jax.jit(run)
        return self._chunk_fns[n]

    def is_compiled(self, n: int) -> bool:
        """Whether the ``n``-step chunk is compiled already (then :meth:`compiled` is free)."""
        return all(("compiled", m) in self._chunk_fns for m in self.pieces(n))

    def compiled(self, n: int, state, hyper, data):
        """The chunk of ``n`` steps compiled ahead of time, as a callable
        ``(state, hyper, data) -> (state, rows)`` whose rows are NumPy arrays on the host;
        returned with the seconds spent compiling (0 when cached), so that stepping time
        excludes compilation. The callable runs :meth:`pieces` in turn, dispatching the next
        before it reads the last (the device never waits for the host), and calls
        ``on_progress`` as each piece's rows arrive."""
        fns, lengths, seconds = [], self.pieces(n), 0.0
        for m in lengths:
            key = ("compiled", m)
            if key not in self._chunk_fns:
                t0 = time.perf_counter()
                self._chunk_fns[key] = self.chunk_fn(m).lower(state, hyper, data).compile()
                seconds += time.perf_counter() - t0
            fns.append(self._chunk_fns[key])

        def run(state, hyper, data):
            parts, pending, end = [], None, int(to_host(state.step))
            for fn, m in zip(fns, lengths, strict=True):
                state, rows = fn(state, hyper, data)
                if pending is not None:
                    parts.append(self._arrived(*pending))
                end += m
                pending = rows, end
            parts.append(self._arrived(*pending))
            return state, jax.tree.map(lambda *xs: np.concatenate(xs), *parts)

        return run, seconds

    def _arrived(self, rows, end: int):
        """A piece's rows on the host; tells ``on_progress`` the step reached (``end``), the
        last finite loss and the last lambda_1 measured in the piece (point 0 of a sweep)."""
        rows = to_host(rows)
        if self.on_progress is not None:
            seen = last_valid(rows)
            self.on_progress(end, seen["loss"], math.nan if seen["lam"] is None else seen["lam"],
                             math.nan if seen["eff_lr"] is None else seen["eff_lr"],
                             seen["s_lam"])
        return rows

    def boundaries(self) -> list[int]:
        c = self.config
        marks = set(range(self.chunk, c.steps, self.chunk)) | {c.steps}
        marks |= {s for s in c.density_at if 0 < s < c.steps}
        if (c.reproject_steps is not None or c.start_on_gamma) and c.warmup_steps:
            marks.add(c.warmup_steps)  # the prediction starts where the warm-up ends
        return sorted(marks)

    def metadata(self) -> dict[str, Any]:
        c, p = self.config, self.problem
        devices = jax.devices()
        meta = {
            "eosflow_version": __version__,
            "jax_version": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in devices],
            "device_kind": devices[0].device_kind,
            "host_cpu": host_cpu(),
            "dtype": c.dtype,
            "matmul_precision": (f"{c.matmul_precision} (jax.default_matmul_precision; "
                                 "float32 products on GPUs/TPUs: highest is true float32, "
                                 "high/default may use TF32 or bfloat16 passes)"),
            "x64_enabled": bool(jax.config.jax_enable_x64),
            "seed": c.seed,
            "loss_convention": c.loss if not c.is_toy else "toy loss (see problem)",
            "problem": dict(p.info),
            "loss_min": self.loss_min,
            "num_params": int(sum(np.size(x) for x in jax.tree.leaves(p.params))),
            "sharpness": (
                f"largest algebraic Hessian eigenvalue of the loss, top_eigenpairs, "
                f"tol {c.eig_tol} ({c.eig_criterion}), block {self.track_block}, warm-started "
                + (f"from the solves of the same oscillation phase, extrapolated (period "
                   f"{self.track_period})" if self.track_extrapolate
                   else "from the last solve's vectors")
                if self.eig_on else "not tracked"
            ),
            "preconditioned_sharpness": (
                f"precond_lambda_1 = lambda_1(P^-1 H), P = diagonal preconditioner of the "
                f"{self.precond_name} state after the step's update (eosflow.optim."
                "preconditioner_from_state), same solver options, warm-started; "
                f"eta_lambda = {self.method.stableness_label}"
                + (f"; read with {self.precond_options}" if self.precond_options else "")
                if self.precond_on else None
            ),
            "optimizer": (c.optimizer if self.custom is None else
                          {"custom": self.custom.describe(c, p.params)}),
            "processes": None if not self.extra_processes else {
                "names": list(c.processes),
                "columns": "NAME.COLUMN in the metrics; load_run(p).processes[NAME]",
                "midpoint": "(w_{t-1} + 2 w_t + w_{t+1}) / 4 of the discrete iterates",
                "stable": ("gradient flow dw/dt = -lr grad L" if not self.rmsprop_flows else
                           "dw/dt = -lr grad L / sqrt(nu + eps), dnu/dt = -ln(decay) "
                           "(grad L^2 - nu), nu(0) = (1 - decay) grad L(w_0)^2"
                           if not c.bias_correction else
                           "dw/dt = -lr grad L / sqrt(nu_hat + eps), dnu_hat/dt = -ln(decay) / "
                           "(1 - decay^(t+1)) (grad L^2 - nu_hat), nu_hat(0) = grad L(w_0)^2")
                          + f", explicit Euler, {c.central_substeps} steps per optimizer step",
                "central": f"eosflow.flows.central_flow_step, k = {self.k}, "
                           f"{c.central_substeps} substeps, tol {c.eig_tol}"
                           + (", RMSProp's (optimizer='rmsprop', decay, bias_correction, eps = "
                              "eosflow.optim.RMSPROP_EPS; eigenvalues of P^-1 H as "
                              "precond_lambda_i)" if self.rmsprop_flows else ""),
            },
            "chunk_steps": self.chunk,
            "record_every": c.record_stride,
            "record_window": None if c.record_stride == 1 else (
                f"one metrics row per {c.record_stride} steps, reduced on the device: the "
                "row of the window's last step (a stopped run's stopping step; step column, "
                "and a sweep's point_step per point), "
                "loss_min/max/mean_window over the window, the last finite value of the "
                "columns measured only at some steps (lambda_i, evaluation, Phi), *matvecs "
                "summed with eig_solves the solves they count"),
            "minibatch": None if c.batch_size is None else {
                "batch_size": c.batch_size, "num_examples": self.num_examples,
                "sampling": ("with replacement, keyed by (seed, step)" if c.batch_replace else
                             "without replacement: a fresh permutation per epoch, keyed by "
                             "(seed, epoch); eosflow.problems.batch_indices"),
                "loss_column": "the step's mini-batch loss; full_loss every eval_every steps",
                "batch_sharpness": (
                    f"mean over {c.batch_sharpness_batches} i.i.d. batches of "
                    "g_B^T H_B g_B / |g_B|^2 (expectation of ratios; Andreyev & Beneventano, "
                    "arXiv 2412.20553), at the eig_every steps"),
                "minibatch_lambda_1": None if c.minibatch_lambda_batches is None else (
                    f"mean (and max) over {c.minibatch_lambda_batches} fixed batches, drawn "
                    "once from the seed, of lambda_1 of the batch's mean loss, at the "
                    "eig_every steps (eosflow.curvature.minibatch_sharpness)"),
            },
            "mesh": None if self.mesh is None else {
                "axes": list(self.mesh.axis_names), "shape": [int(self.mesh.size)],
                "devices": [str(d) for d in self.mesh.devices.ravel()],
                "processes": jax.process_count(),
            },
            "start_on_gamma": None if not c.start_on_gamma else (
                f"at step {c.warmup_steps} the iterate x_w moved to Phi(x_w) + (ell/2) v1 "
                "(eosflow.flows.cycle_start: ell = eta for normalized GD, eta sqrt(lambda_1/2) "
                f"for GD on sqrt L; Phi by project_solve in {c.prediction_dtype}); "
                "status.json's start_on_gamma: how it went"),
            "prediction": None if c.reproject_steps is None else (
                f"eosflow.flows.reprojection_flow, {c.reproject_steps} steps from "
                + ("the iterate moved onto Γ at the warm-up's end" if c.start_on_gamma else
                   "the first chunk boundary within the phase-I distance of Γ")
                + ", a step whose projection "
                f"fails retried as substeps down to h/{2**REPROJECT_HALVINGS} (step_rtol "
                f"{REPROJECT_RTOL}; step_atol {step_noise(c.dtype):g}), each Phi by "
                "project_solve (gtol "
                f"{c.phi_gtol if c.phi_gtol is not None else 'default'}), in "
                f"{c.prediction_dtype}"),
            "checkpoint_every": self.ckpt_every,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if self.sweep is not None:
            meta["sweep"] = {k: [float(x) for x in v] for k, v in self.sweep.items()}
        return meta


# the columns measured at every step: with record_every > 1 a NaN in them at a window's last
# step is the step's own value (e.g. a loss that overflowed), not a missing measurement
EVERY_STEP = ("loss", "grad_norm", "eff_lr", "param_norm", "update_norm")
# the row entry that holds (gradient, update, parameters) where the window computes the
# step metrics at its end (Program.defer_metrics)
DEFERRED = "_deferred"


def _step_metrics(grad: PyTree, updates: PyTree, params: PyTree) -> dict[str, jax.Array]:
    r"""A step's ``grad_norm``, its effective step $-\langle u, g\rangle/\|g\|^2$
    (``eff_lr``), ``param_norm`` and ``update_norm``."""
    gnorm = optax.tree.norm(grad)
    return {"grad_norm": gnorm, "eff_lr": -optax.tree.vdot(updates, grad) / gnorm**2,
            "param_norm": optax.tree.norm(params), "update_norm": optax.tree.norm(updates)}


def _window_kind(name: str, dtype) -> str:
    """How a column is reduced over a window (see :func:`_window_row`)."""
    if name.endswith("matvecs"):
        return "sum"
    if name in EVERY_STEP or name == "stop_reason" or not jnp.issubdtype(dtype, jnp.floating):
        return "last"
    return "last_finite"


def _window_groups(shapes: dict[str, jax.ShapeDtypeStruct]) -> dict[tuple, list[str]]:
    """The row's columns but ``valid`` grouped by reduction and dtype: each group is carried
    as one array (one buffer in the scan's carry rather than one per column: on a toy, whose
    step is a few nanoseconds of arithmetic, each costs about as much again)."""
    groups: dict[tuple, list[str]] = {}
    for name, x in sorted(shapes.items()):  # a step's row and its eval_shape agree on order
        if name not in ("valid", DEFERRED):
            groups.setdefault((_window_kind(name, x.dtype), jnp.dtype(x.dtype).name),
                              []).append(name)
    return groups


def _window_init(shapes: dict[str, jax.ShapeDtypeStruct]) -> dict[str, Any]:
    """The accumulator of an empty window, for rows shaped like ``shapes``."""
    one = shapes["valid"].shape

    def full(value, dtype, *tail):
        return jnp.full((*one, *tail), value, dtype)

    acc = {"packs": {key: full(jnp.nan if key[0] == "last_finite" else 0, key[1], len(names))
                     for key, names in _window_groups(shapes).items()},
           "count": full(0, jnp.int32)}
    if "loss" in shapes:
        dtype = shapes["loss"].dtype
        acc["loss"] = jnp.stack([full(jnp.inf, dtype), full(-jnp.inf, dtype), full(0, dtype)],
                                axis=-1)  # min, max, sum
    if "lambda_1" in shapes:
        acc |= {"solves": full(0, jnp.int32), "lambda_at": full(0, jnp.int32)}
    if DEFERRED in shapes:
        acc[DEFERRED] = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes[DEFERRED])
    return acc


def _window_add(acc: dict[str, Any], row: dict[str, jax.Array],
                counted: jax.Array) -> dict[str, Any]:
    """``acc`` with the window's next step (its row ``row``) added. ``counted``: whether any
    step of the window counts. A run's counted steps are a prefix of the window (the first
    step's ``valid`` says whether there are any), and a point stopped before the window
    counts every step, so that it keeps a row; either way the step's index in the window is
    ``acc["count"]`` when it counts."""
    use = row["valid"] | ~counted
    u = use[..., None]
    packs = {}
    for (kind, dtype), names in _window_groups(row).items():
        old, x = acc["packs"][kind, dtype], jnp.stack([row[n] for n in names], axis=-1)
        if kind == "sum":
            packs[kind, dtype] = old + jnp.where(u, x, 0).astype(x.dtype)
        elif kind == "last":
            packs[kind, dtype] = jnp.where(u, x, old)
        else:
            packs[kind, dtype] = jnp.where(u & jnp.isfinite(x), x, old)
    out = acc | {"packs": packs, "count": acc["count"] + use}
    if "loss" in row:
        loss, (lo, hi, total) = row["loss"], jnp.moveaxis(acc["loss"], -1, 0)
        out["loss"] = jnp.stack([jnp.minimum(lo, jnp.where(use, loss, jnp.inf)),
                                 jnp.maximum(hi, jnp.where(use, loss, -jnp.inf)),
                                 total + jnp.where(use, loss, 0)], axis=-1)
    if "lambda_1" in row:
        solved = use & jnp.isfinite(row["lambda_1"])
        out |= {"solves": acc["solves"] + solved,
                "lambda_at": jnp.where(solved, acc["count"], acc["lambda_at"])}
    if DEFERRED in row:  # the last counted step's (a sweep's leaves: points first)
        out[DEFERRED] = jax.tree.map(
            lambda x, old: jnp.where(use.reshape(use.shape + (1,) * (x.ndim - use.ndim)),
                                     x, old), row[DEFERRED], acc[DEFERRED])
    return out


def _window_row(acc: dict[str, Any], shapes: dict[str, jax.ShapeDtypeStruct], first: jax.Array,
                counted: jax.Array, k: int, *, points: bool) -> dict[str, jax.Array]:
    """One metrics row for a window of ``k`` steps (``record_every``), on the device, from
    the accumulator its steps were added to (:func:`_window_add`); ``shapes``: a step's row;
    ``counted``: whether any step of the window counted.

    Each column is of shape ``()``, or ``(P,)`` for a sweep of ``P`` points; ``first`` is the
    window's first step. The row is that of the window's last step that counts: the last
    step at which the run was still going (``valid``), so a run that stops mid-window
    records its stopping step, or the window's last step for a point stopped before the
    window. Its columns:

    * ``step``: that step; in a sweep the window's last step (a shared column), and
      ``point_step`` each point's (shape ``(P,)``);
    * ``loss`` and the other columns measured at every step: the value at that step;
    * ``loss_min_window``, ``loss_max_window``, ``loss_mean_window``: the loss reduced over
      the window's counted steps (loss units);
    * the columns measured only at some steps (lambda_i and the eigen-solve's columns every
      ``eig_every`` steps, evaluation every ``eval_every``, Phi, ``metrics_fn`` columns
      that are NaN between measurements): the last finite value in the window, NaN if none;
    * ``*matvecs`` (Hessian-vector products): summed over the window, and ``eig_solves``,
      the number of eigen-solves they count (the finite lambda_1 in the window);
    * ``lambda_step``: the step at which the window's last lambda_1 was measured (-1 if
      none), where the analysis places it;
    * ``valid``: whether any step of the window counted; ``stop_reason``: the stopping
      step's reason (at most one step of a run stops).

    Where the steps defer their metrics (``shapes`` holds ``DEFERRED``: their gradient,
    update and parameters), ``grad_norm``, ``eff_lr``, ``param_norm`` and ``update_norm``
    are computed here from the last counted step's, as the step would have.
    """
    end = acc["count"] - 1  # the last counted step (counted steps are a prefix)
    out = {"step": first + (k - 1 if points else end)}
    if points:  # each point's own step (its stopping step in the window where it stopped)
        out["point_step"] = first + end
    cols = {name: acc["packs"][key][..., i] for key, names in _window_groups(shapes).items()
            for i, name in enumerate(names)}
    for name in shapes:
        if name == DEFERRED:  # the step metrics, in their place in the row
            metrics = jax.vmap(_step_metrics) if points else _step_metrics
            out.update(metrics(*acc[DEFERRED]))
            continue
        out[name] = counted if name == "valid" else cols[name]
        if name == "loss":
            lo, hi, total = jnp.moveaxis(acc["loss"], -1, 0)
            out["loss_min_window"], out["loss_max_window"] = lo, hi
            out["loss_mean_window"] = total / acc["count"]
        if name == "eig_matvecs" and "solves" in acc:
            out["eig_solves"] = acc["solves"]
        if name == "lambda_1":
            out["lambda_step"] = jnp.where(acc["solves"] > 0, first + acc["lambda_at"], -1)
    return out


def _is_kick(x) -> bool:
    return isinstance(x, KickState)


