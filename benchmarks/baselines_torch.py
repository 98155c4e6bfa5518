"""PyTorch baselines for the benchmark suite: the methods researchers use today.

Written here from the published descriptions (no code copied):

* **Cohen et al.'s sharpness** (ICLR 2021, arXiv 2103.00065): Hessian-vector products by
  PyTorch double backward, rebuilding the graph at every product (forward, gradient with
  ``create_graph=True``, ``<g, v>``, backward), handed to SciPy's ``eigsh`` (ARPACK, default
  ``ncv`` and tolerance, random cold start) on a ``LinearOperator`` whose dtype is the
  HVP's (float32). Their code leaves ``which`` at its default ``'LM'`` (largest magnitude);
  ``'LA'`` (largest algebraic) is the sharpness by definition. Both are offered.
* **Power iteration with PyHessian's stopping rule** (Yao et al. 2020, arXiv 1912.07145):
  random normalised start, ``v <- Hv/||Hv||``, stop when the Rayleigh quotient changes by
  less than ``tol`` relative (``|l - l_prev| / (|l_prev| + 1e-6) < tol``), at most
  ``max_iter`` products. PyHessian builds the gradient graph once and differentiates it again
  for each product (``retain_graph=True``): :class:`TorchHessian` with ``retain=True``.
* **Eager full-batch GD** with ``torch.optim.SGD`` on the same MLP, and an eager loop of
  normalized GD on toy A, $L(x, y) = (1 + x^2) y^2$.

Models take their weights from eosflow's equinox models (same layout as ``torch.nn``), so
the baselines see the same function, data and starting point.

Threads: :func:`configure_threads` limits the OpenBLAS pools of NumPy and SciPy to one
thread with ``threadpoolctl`` (installed with scikit-learn; MEASURED.md: OpenBLAS threads
fight XLA's), gives PyTorch's intra-op pool one thread per core (the cores XLA uses too) and
one inter-op thread. Only the benchmarks import this module; eosflow never imports torch.
"""

import contextlib
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

_LIMITS = None  # keeps the threadpoolctl limit alive for the life of the process


def configure_threads(torch_threads: int | None = None) -> dict:
    """Set the thread pools (see the module docstring) and return what was set."""
    global _LIMITS
    from threadpoolctl import threadpool_info, threadpool_limits

    if _LIMITS is None:
        _LIMITS = threadpool_limits(limits=1, user_api="blas")
    n = torch_threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work has started
        torch.set_num_interop_threads(1)
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "blas_pools": [
            f"{d['internal_api']}:{d['num_threads']} ({os.path.basename(d['filepath'])})"
            for d in threadpool_info()
            if d["user_api"] == "blas"
        ],
    }


# --- models and losses ------------------------------------------------------------------


def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """eosflow's ``mse``: 1/2 summed over outputs, averaged over examples."""
    return 0.5 * (out - target).pow(2).sum(dim=1).mean()


_ACTS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def mlp_from_eqx(eqx_params, act: str = "tanh") -> torch.nn.Sequential:
    """A ``torch.nn.Sequential`` MLP with the weights of an ``eosflow.problems.MLP``.

    ``eqx_params.layers[i].weight`` is (out, in) and ``.bias`` (out,), as in ``nn.Linear``.
    """
    mods: list[torch.nn.Module] = []
    layers = eqx_params.layers
    for i, layer in enumerate(layers):
        w = np.asarray(layer.weight, np.float32)
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.copy()))
            lin.bias.copy_(torch.from_numpy(np.asarray(layer.bias, np.float32).copy()))
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(_ACTS[act]())
    return torch.nn.Sequential(*mods)


def cnn(in_channels: int, num_classes: int, *, image_size: int = 32, width: int = 32,
        act: str = "relu") -> torch.nn.Sequential:
    """Cohen et al.'s small CNN: two (3x3 conv, padding 1, activation, 2x2 max-pool), linear."""
    side = image_size // 4
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, width, 3, padding=1), _ACTS[act](), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(width, width, 3, padding=1), _ACTS[act](), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(width * side * side, num_classes),
    )


def copy_weights_in_order(eqx_params, module: torch.nn.Module) -> bool:
    """Copy the leaves of an equinox parameter tree into ``module.parameters()`` in order.

    Leaves are matched one to one and reshaped (equinox keeps a conv bias as (out, 1, 1),
    torch as (out,)). Returns False, copying nothing, if the counts or sizes differ.
    """
    import jax

    leaves = [np.asarray(x, np.float32) for x in jax.tree.leaves(eqx_params)]
    params = list(module.parameters())
    if len(leaves) != len(params):
        return False
    if any(a.size != p.numel() for a, p in zip(leaves, params, strict=True)):
        return False
    with torch.no_grad():
        for a, p in zip(leaves, params, strict=True):
            p.copy_(torch.from_numpy(a.reshape(tuple(p.shape)).copy()))
    return True


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- Hessian-vector products --------------------------------------------------------------


class TorchHessian:
    """The Hessian of ``loss_fn(model(x), y)`` by double backward, on flat vectors.

    ``retain=False`` (Cohen et al.): every product runs the forward pass and the gradient
    with ``create_graph=True`` again, then differentiates ``<g, v>``. ``retain=True``
    (PyHessian): the gradient graph is built once and each product only runs the second
    backward pass. ``num_matvecs`` counts products.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable, x: torch.Tensor,
                 y: torch.Tensor, *, retain: bool = False):
        self.model, self.loss_fn, self.x, self.y, self.retain = model, loss_fn, x, y, retain
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shapes = [p.shape for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.size = sum(self.sizes)
        self.num_matvecs = 0
        self._grads = None

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        return [t.view(s) for t, s in zip(torch.split(v, self.sizes), self.shapes, strict=True)]

    def _gradient_graph(self):
        loss = self.loss_fn(self.model(self.x), self.y)
        return torch.autograd.grad(loss, self.params, create_graph=True)

    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat float32 tensor ``v``."""
        self.num_matvecs += 1
        vs = self._split(v)
        if self.retain:
            if self._grads is None:
                self._grads = self._gradient_graph()
            hv = torch.autograd.grad(self._grads, self.params, grad_outputs=vs,
                                     retain_graph=True)
        else:
            grads = self._gradient_graph()
            dot = sum((g * u).sum() for g, u in zip(grads, vs, strict=True))
            hv = torch.autograd.grad(dot, self.params)
        return torch.cat([h.reshape(-1) for h in hv])

    def mv_numpy(self, v: np.ndarray) -> np.ndarray:
        vt = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32).reshape(-1))
        return self.mv(vt).numpy()

    def gradient(self) -> torch.Tensor:
        loss = self.loss_fn(self.model(self.x), self.y)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, self.params)])


# --- sharpness estimators -----------------------------------------------------------------


def cohen_sharpness(hessian: TorchHessian, *, which: str = "LM", k: int = 1) -> dict:
    """The top-``k`` eigenvalues by ARPACK on double-backward HVPs, cold (Cohen et al.).

    ``eigsh`` with its defaults (``ncv = max(2k + 1, 20)``, ``tol = 0``: machine precision,
    a random start), in the HVP's dtype (float32), eigenvectors computed as their code does.
    Returns the eigenvalues (descending), the products spent and the wall time.
    """
    n = hessian.size
    op = LinearOperator((n, n), matvec=hessian.mv_numpy, dtype=np.float32)
    start = hessian.num_matvecs
    t0 = time.perf_counter()
    evals, _ = eigsh(op, k=k, which=which)
    seconds = time.perf_counter() - t0
    return {
        "eigenvalues": np.sort(np.asarray(evals, np.float64))[::-1],
        "num_matvecs": hessian.num_matvecs - start,
        "seconds": seconds,
    }


def power_iteration(hessian: TorchHessian, *, tol: float = 1e-3, max_iter: int = 100,
                    seed: int = 0) -> dict:
    """Power iteration stopped by PyHessian's rule (relative change of the Rayleigh quotient).

    Converges to the eigenvalue of largest *magnitude*, and stops early whenever the top
    eigenvalues nearly tie (the quotient creeps). Returns the last Rayleigh quotient, the
    products spent and the wall time.
    """
    gen = torch.Generator().manual_seed(seed)
    start = hessian.num_matvecs
    t0 = time.perf_counter()
    v = torch.randn(hessian.size, generator=gen)
    v /= v.norm()
    lam_prev, lam = None, float("nan")
    for _ in range(max_iter):
        hv = hessian.mv(v)
        lam = float(hv @ v)
        v = hv / hv.norm()
        if lam_prev is not None and abs(lam - lam_prev) / (abs(lam_prev) + 1e-6) < tol:
            break
        lam_prev = lam
    return {"eigenvalue": lam, "num_matvecs": hessian.num_matvecs - start,
            "seconds": time.perf_counter() - t0}


# --- eager training loops -----------------------------------------------------------------


def gd_loop(model: torch.nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
            lr: float) -> Callable[[int], float]:
    """An eager full-batch GD loop (``torch.optim.SGD``); ``run(n)`` takes n steps.

    ``run`` returns the last loss (one ``.item()`` per call, not per step).
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def run(n: int) -> float:
        loss = None
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        return float(loss.item()) if loss is not None else float("nan")

    return run


def toy_a_normalized_gd_loop(x0: Sequence[float], lr: float) -> Callable[[int], np.ndarray]:
    """Eager normalized GD on toy A, $L = (1 + x^2) y^2$: ``x <- x - lr * g / ||g||``."""
    z = torch.tensor(list(x0), dtype=torch.float32, requires_grad=True)

    def run(n: int) -> np.ndarray:
        for _ in range(n):
            loss = (1 + z[0] ** 2) * z[1] ** 2
            (g,) = torch.autograd.grad(loss, z)
            with torch.no_grad():
                z.sub_(lr * g / g.norm())
        return z.detach().numpy().copy()

    return run
