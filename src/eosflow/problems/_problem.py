"""A :class:`Problem`: the loss over a PyTree of parameters, the data it sums over, and L*."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, PyTree
from ._data import Dataset
from ._losses import per_example_loss, squared_error_weight


class Problem(eqx.Module):
    """What the runner trains: ``loss_fn`` at ``params``, summed over ``batches``.

    Attributes:
        loss_fn: ``loss_fn(params)`` or, with ``batches``, ``loss_fn(params, batch)``; the
            full loss is the *sum* over the leading axis of ``batches`` (each batch carries
            its own ``1/N`` weights), so any physical batch size gives the same loss.
        params: the initial trainable parameters.
        batches: ``None`` or a PyTree stacked along a leading axis of chunks.
        loss_min: $L^*$, the minimum value (0 for interpolating models).
        info: JSON-able facts recorded in the run's metadata.
        eval_fn: optional ``eval_fn(params, batch) -> dict`` of *summed* extra metrics
            (weights included), e.g. accuracy.
        hessian_batches: optional batches (same format) on which curvature is measured,
            when the Hessian uses a recorded subset of the data; ``None`` means ``batches``.
        test_batches: optional held-out batches (same format, weights ``1/N_test``): the
            runner records the loss and ``eval_fn`` metrics on them as ``test_*`` columns.
        residual_fn: optional ``residual_fn(params, batch)`` (``residual_fn(params)`` without
            batches) with
            ``loss_fn(params, batch) = 0.5 * |residual_fn(params, batch)|^2`` (squared-error
            losses); it lets :func:`eosflow.flows.project_solve` finish with Gauss–Newton.
    """

    loss_fn: Callable[..., Array]
    params: PyTree
    batches: PyTree | None = None
    loss_min: float = eqx.field(static=True, default=0.0)
    info: dict[str, Any] = eqx.field(static=True, default_factory=dict)
    eval_fn: Callable[..., dict[str, Array]] | None = None
    hessian_batches: PyTree | None = None
    test_batches: PyTree | None = None
    residual_fn: Callable[..., Array] | None = None

    @property
    def curvature_batches(self) -> PyTree | None:
        """The batches the Hessian sums over."""
        return self.batches if self.hessian_batches is None else self.hessian_batches

    def full_loss(self, params: PyTree) -> Array:
        """The loss at ``params`` summed over every batch."""
        if self.batches is None:
            return self.loss_fn(params)
        from ..curvature import sum_over_batches

        return sum_over_batches(lambda b: self.loss_fn(params, b), self.batches)

    @property
    def full_residual(self) -> Callable[[PyTree], Array] | None:
        """``params -> r`` with ``full_loss = 0.5 * |r|^2`` over every batch (stacked along
        the batches' leading axis), or ``None`` when the loss has no residual form."""
        if self.residual_fn is None:
            return None
        if self.batches is None:
            return self.residual_fn
        return lambda params: jax.lax.map(lambda b: self.residual_fn(params, b), self.batches)


def chunk(
    arrays: dict[str, np.ndarray], chunk_size: int | None
) -> tuple[dict[str, np.ndarray], int]:
    """Stack ``arrays`` (leading axis N) into ``(num_chunks, chunk_size, ...)`` with weights.

    The last chunk is padded with zero-weight rows; ``w`` is ``1/N`` on real rows, so a loss
    summing ``w_i * loss_i`` over all chunks is the mean over the N examples.
    """
    n = next(iter(arrays.values())).shape[0]
    size = n if chunk_size is None else int(chunk_size)
    if size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    num = -(-n // size)
    pad = num * size - n
    out = {}
    for name, a in arrays.items():
        a = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a
        out[name] = a.reshape(num, size, *a.shape[1:])
    w = np.concatenate([np.full(n, 1.0 / n), np.zeros(pad)]).reshape(num, size)
    out["w"] = w
    return out, num


def supervised_problem(
    model: eqx.Module,
    data: Dataset,
    *,
    loss: str = "mse",
    chunk_size: int | None = None,
    dtype=jnp.float32,
    trainable: Callable[[eqx.Module], PyTree] | None = None,
    info: dict[str, Any] | None = None,
) -> Problem:
    """Full-batch supervised learning of ``model`` on ``data`` under loss convention ``loss``.

    Args:
        model: an equinox model mapping one example to outputs.
        data: the dataset (host arrays).
        loss: a name from :data:`eosflow.problems.LOSSES`.
        chunk_size: physical batch size; the loss, gradient and HVPs accumulate over chunks.
        dtype: float dtype of the parameters and the data.
        trainable: optional filter spec (a PyTree of bools like ``model``) marking which
            arrays are trained; the others (a frozen last layer, say) stay constant.
        info: extra metadata.
    """
    per_example = per_example_loss(loss)
    spec = eqx.is_inexact_array if trainable is None else trainable
    params, static = eqx.partition(model, spec)
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    static = jax.tree.map(lambda p: p.astype(dtype) if eqx.is_inexact_array(p) else p, static)
    batches, num = chunk({"x": data.x, "y": data.y}, chunk_size)
    batches = {k: jnp.asarray(v, dtype) for k, v in batches.items()}

    def loss_fn(p, batch):
        out = jax.vmap(eqx.combine(p, static))(batch["x"])
        return jnp.sum(batch["w"] * per_example(out, batch["y"]))

    weight = squared_error_weight(loss, int(np.prod(data.y.shape[1:])))

    def residual_fn(p, batch):
        out = jax.vmap(eqx.combine(p, static))(batch["x"])
        scale = jnp.sqrt(2 * weight * batch["w"]).reshape(-1, *(1,) * (out.ndim - 1))
        return scale * (out - batch["y"])

    def eval_fn(p, batch):
        out = jax.vmap(eqx.combine(p, static))(batch["x"])
        correct = jnp.argmax(out, -1) == jnp.argmax(batch["y"], -1)
        return {"accuracy": jnp.sum(batch["w"] * correct)}

    meta = {
        "dataset": data.name,
        "num_examples": len(data),
        "data_indices": data.indices.tolist(),
        "data_info": data.info,
        "loss": loss,
        "num_chunks": num,
        "chunk_size": int(batches["x"].shape[1]),
        "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
        **(info or {}),
    }
    return Problem(loss_fn, params, batches, 0.0, meta, eval_fn,
                   residual_fn=None if weight is None else residual_fn)
