"""Every integer size or count eosflow takes is checked the same way: an int (not a bool)
above its minimum, or one error line naming the argument: a TypeError for a bad kind, a
ValueError for a bad value (``eosflow._errors.check_int``)."""

import jax.numpy as jnp
import numpy as np
import pytest

from eosflow import curvature, flows, problems

loss = lambda x: 0.5 * jnp.sum(jnp.arange(1.0, 7.0) * x**2)
x = jnp.ones(6)

CALLS = {
    "k": lambda v: curvature.top_eigenpairs(loss, x, v),
    "block_size": lambda v: curvature.top_eigenpairs(loss, x, 1, block_size=v),
    "num_iters": lambda v: curvature.lanczos(lambda u: u, x, v),
    "num_probes": lambda v: curvature.spectral_density(loss, x, num_iters=2, num_probes=v),
    "num_samples": lambda v: curvature.hutchinson_trace(loss, x, num_samples=v),
    "max_iters": lambda v: curvature.power_iteration(loss, x, max_iters=v),
    "num_parallel": lambda v: curvature.batch_sharpness(
        lambda p, b: loss(p * b), x, jnp.ones((2, 6)), num_parallel=v),
    "block": lambda v: curvature.tracking_history(x, v),
    "period": lambda v: curvature.tracking_history(x, 1, period=v),
    "num_points": lambda v: flows.gradient_flow(loss, x, t_end=1.0, num_points=v),
    "num_steps": lambda v: flows.central_flow(loss, x, lr=0.1, num_steps=v),
    "batch_size": lambda v: problems.batch_indices(0, 0, 10, v),
    "n": lambda v: problems.teacher_student(n=v),
    "width": lambda v: problems.CNN(1, 10, width=v, image_size=8, key=None),
    "widths": lambda v: problems.ResNet(1, 10, widths=(4, v), key=None),
}
MINIMUM = {"num_samples": 2, "num_points": 2}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("bad", ["below", True, 2.0, "3"])
def test_a_bad_count_is_one_error_naming_it(name, bad):
    low = MINIMUM.get(name, 1)
    value = low - 1 if bad == "below" else bad
    error = ValueError if bad == "below" else TypeError  # a bad value, or a bad kind
    with pytest.raises(error, match=f"^{name} must be an int >= {low}, got "):
        CALLS[name](value)


def test_numpy_ints_are_counts():
    res = curvature.top_eigenpairs(loss, x, np.int64(2))
    np.testing.assert_allclose(res.eigenvalues, [6.0, 5.0], rtol=1e-6)
