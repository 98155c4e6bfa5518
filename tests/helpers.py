"""Oracles shared by the tests: small MLPs with dense Hessians, matrices with known spectra."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def tiny_mlp(key, n_in=4, width=6, n_out=3, n_data=20, dtype=jnp.float64):
    """A one-hidden-layer tanh MLP on random data: (loss_fn(params, batch), params, data)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {
        "W1": jax.random.normal(k1, (n_in, width), dtype) / np.sqrt(n_in),
        "b1": jnp.zeros((width,), dtype),
        "W2": jax.random.normal(k2, (width, n_out), dtype) / np.sqrt(width),
        "b2": jnp.zeros((n_out,), dtype),
    }
    x = jax.random.normal(k3, (n_data, n_in), dtype)
    y = jax.random.normal(k4, (n_data, n_out), dtype)

    def loss_on(p, x, y, scale):
        h = jnp.tanh(x @ p["W1"] + p["b1"])
        out = h @ p["W2"] + p["b2"]
        return 0.5 * jnp.sum((out - y) ** 2) * scale

    return loss_on, params, (x, y)


def dense_hessian(loss_fn, params):
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda z: loss_fn(unravel(z)))(flat)


def known_spectrum(key, eigenvalues):
    """A symmetric matrix ``Q diag(eigenvalues) Q^T`` with a random orthogonal ``Q``."""
    lam = jnp.asarray(eigenvalues, jnp.float64)
    n = lam.shape[0]
    q, r = jnp.linalg.qr(jax.random.normal(key, (n, n), jnp.float64))
    q = q * jnp.sign(jnp.diag(r))
    return (q * lam) @ q.T, q


def spectra(n=200):
    """A bank of spectra that break naive sharpness estimators (descending top first)."""
    rng = np.random.default_rng(0)
    bulk = rng.uniform(0.0, 0.5, n)
    out = {}
    s = bulk.copy()
    s[:2] = [10.0, 9.8]  # near tie: lambda2 / lambda1 = 0.98
    out["near_tie"] = s
    s = bulk.copy()
    s[:5] = [10.0, 9.999, 9.998, 9.997, 9.996]  # a tight cluster
    out["cluster"] = s
    s = bulk.copy()
    s[:3] = [10.0, 10.0, 7.0]  # exactly repeated top eigenvalue
    out["repeated"] = s
    s = np.zeros(n)
    s[:10] = np.linspace(10.0, 1.0, 10)  # rank 10
    out["rank_deficient"] = s
    s = bulk.copy()
    s[:3] = [10.0, 6.0, -50.0]  # a negative eigenvalue 5x larger in magnitude than the top
    out["negative_dominant"] = s
    return out


class MatVec(eqx.Module):
    """``v -> A v`` as a module, so that solvers compiled for one matrix serve all of its shape."""

    A: jax.Array

    def __call__(self, v):
        return self.A @ v


class CompileCounter:
    """Counts, while active, the functions JAX traces and lowers to XLA (``with
    CompileCounter() as c: ...``), through JAX's public monitoring events. ``traces(name)``:
    jit-cache misses of functions whose name contains ``name`` (a new static argument or
    shape retraces; a warm start that keeps the traced structure does not); ``count(name)``:
    lowerings (JAX may reuse a lowering for an identical jaxpr, so a retrace can lower
    nothing)."""

    TRACE = "/jax/core/compile/jaxpr_trace_duration"
    LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"

    def __init__(self):
        self.names: list[str] = []
        self.traced: list[str] = []

    def _listen(self, event, duration, **kwargs):
        if event == self.LOWER:
            self.names.append(str(kwargs.get("fun_name", "?")))
        elif event == self.TRACE:
            self.traced.append(str(kwargs.get("fun_name", "?")))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)

    def count(self, name: str | None = None) -> int:
        return len(self.names) if name is None else sum(name in n for n in self.names)

    def traces(self, name: str) -> int:
        return sum(name in n for n in self.traced)
