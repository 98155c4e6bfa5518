"""Every integer size or count eosflow takes is checked the same way: an int (not a bool)
above its minimum, or one error line naming the argument: a TypeError for a bad kind, a
ValueError for a bad value (``eosflow._errors.check_int``)."""

import jax.numpy as jnp
import numpy as np
import pytest

from eosflow import curvature, flows, optim, problems

loss = lambda x: 0.5 * jnp.sum(jnp.arange(1.0, 7.0) * x**2)
x = jnp.ones(6)

CALLS = [  # (argument, its minimum, a call with the argument set to v)
    ("k", 1, lambda v: curvature.top_eigenpairs(loss, x, v)),
    ("block_size", 1, lambda v: curvature.top_eigenpairs(loss, x, 1, block_size=v)),
    ("num_iters", 1, lambda v: curvature.lanczos(lambda u: u, x, v)),
    ("num_probes", 1, lambda v: curvature.spectral_density(loss, x, num_iters=2, num_probes=v)),
    ("num_samples", 2, lambda v: curvature.hutchinson_trace(loss, x, num_samples=v)),
    ("max_iters", 1, lambda v: curvature.power_iteration(loss, x, max_iters=v)),
    ("num_parallel", 1, lambda v: curvature.batch_sharpness(
        lambda p, b: loss(p * b), x, jnp.ones((2, 6)), num_parallel=v)),
    ("block", 1, lambda v: curvature.tracking_history(x, v)),
    ("period", 1, lambda v: curvature.tracking_history(x, 1, period=v)),
    ("num_points", 2, lambda v: flows.gradient_flow(loss, x, t_end=1.0, num_points=v)),
    ("max_steps", 1, lambda v: flows.gradient_flow(loss, x, t_end=1.0, max_steps=v)),
    ("num_points", 1, lambda v: flows.stableness(loss, x, 0.1, num_points=v)),
    ("num_steps", 1, lambda v: flows.central_flow(loss, x, lr=0.1, num_steps=v)),
    ("at", 0, lambda v: optim.switch(optim.gd(0.1), optim.gd(0.1), at=v)),
    ("batch_size", 1, lambda v: problems.batch_indices(0, 0, 10, v)),
    ("n", 1, lambda v: problems.teacher_student(n=v)),
    ("width", 1, lambda v: problems.CNN(1, 10, width=v, image_size=8, key=None)),
    ("widths", 1, lambda v: problems.ResNet(1, 10, widths=(4, v), key=None)),
]


@pytest.mark.parametrize(("name", "low", "call"), CALLS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CALLS)])
@pytest.mark.parametrize("bad", ["below", True, 2.0, "3"])
def test_a_bad_count_is_one_error_naming_it(name, low, call, bad):
    value = low - 1 if bad == "below" else bad
    error = ValueError if bad == "below" else TypeError  # a bad value, or a bad kind
    with pytest.raises(error, match=f"^{name} must be an int >= {low}, got "):
        call(value)


def test_numpy_ints_are_counts():
    res = curvature.top_eigenpairs(loss, x, np.int64(2))
    np.testing.assert_allclose(res.eigenvalues, [6.0, 5.0], rtol=1e-6)


def test_none_is_no_step_limit_for_gradient_flow():
    _, xs = flows.gradient_flow(loss, x, 1.0, num_points=3, max_steps=None)
    np.testing.assert_allclose(xs[-1], np.exp(-np.arange(1.0, 7.0)), rtol=1e-5)
