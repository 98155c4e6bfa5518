"""The README's PyTorch recipe, run as written, against a dense Hessian; and the callback
mechanism it relies on, with a NumPy host product, where torch is not installed."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.curvature import top_eigenpairs

README = Path(__file__).resolve().parents[1] / "README.md"


def _recipe() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "def torch_sharpness" in b]
    return block


def test_torch_recipe_matches_the_dense_hessian():
    torch = pytest.importorskip("torch")
    namespace: dict = {}
    exec(_recipe(), namespace)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 2)).double()
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64)
    loss_fn = torch.nn.functional.mse_loss
    res = namespace["torch_sharpness"](model, loss_fn, x, y, k=2, tol=1e-8)

    params = list(model.parameters())
    shapes = [p.shape for p in params]

    def flat_loss(w):  # the same loss as a function of the flat parameter vector
        chunks, i = [], 0
        for s in shapes:
            n = int(np.prod(s))
            chunks.append(w[i:i + n].view(s))
            i += n
        return loss_fn(torch.func.functional_call(
            model, dict(zip([n for n, _ in model.named_parameters()], chunks, strict=True)),
            (x,)), y)

    w0 = torch.cat([p.detach().reshape(-1) for p in params])
    dense = torch.autograd.functional.hessian(flat_loss, w0).numpy()
    want = np.linalg.eigvalsh(dense)[::-1][:2]  # largest algebraic
    assert w0.numel() == 66 and bool(res.converged)
    np.testing.assert_allclose(np.asarray(res.eigenvalues), want, rtol=1e-6)


def test_host_matvec_through_pure_callback_matches_the_dense_value():
    """The recipe's mechanism without torch: a NumPy Hessian product on the host, reached
    through jax.pure_callback, on a matrix whose most negative eigenvalue is the largest in
    magnitude (the solver must still report the largest algebraic)."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    spectrum = np.concatenate([[4.0, 3.5, -9.0], rng.uniform(-1.0, 1.0, 57)])
    H = (q * spectrum) @ q.T

    def hvp(v):
        return (H @ np.asarray(v)).astype(np.float32)

    def matvec(v):
        shape = jax.ShapeDtypeStruct(v.shape, v.dtype)
        return jax.pure_callback(hvp, shape, v, vmap_method="sequential")

    res = top_eigenpairs(matvec, jnp.zeros(60, jnp.float32), 2, tol=1e-4)
    np.testing.assert_allclose(np.asarray(res.eigenvalues), [4.0, 3.5], rtol=1e-3)
    assert int(res.num_matvecs) > 0
