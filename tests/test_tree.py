"""Exact powers of two (eosflow._tree): the oracle is NumPy's ldexp, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow._tree import exp2, mul_exp2, pow2_peak

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]


def _f64(x):
    return np.asarray(jnp.asarray(x).astype(jnp.float64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp2_is_every_normal_power_of_two(dtype):
    info = jnp.finfo(dtype)
    e = np.arange(int(info.minexp), int(info.maxexp))
    got = jax.jit(exp2, static_argnums=1)(jnp.asarray(e), dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(_f64(got), np.ldexp(1.0, e))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mul_exp2_is_ldexp_up_to_the_ends_of_the_range(dtype):
    """Scaling the largest finite number down to 1 and the smallest normal one up to 1 and
    beyond (|e| up to the whole exponent range, past what one normal power of two holds);
    entries of every size, a zero and an inf; under jit and vmap (per-entry exponents)."""
    info = jnp.finfo(dtype)
    span = int(info.maxexp) - int(info.minexp)
    x = jnp.asarray([float(info.max), -float(info.tiny), 1.5, -3.0, 0.0, np.inf], dtype)
    exps = np.array([-int(info.maxexp) + 1, -span // 2, -7, 0, 5, int(info.maxexp) - 2,
                     -int(info.minexp) + 1, span - 3])
    for e in exps:
        with np.errstate(over="ignore"):  # an inf entry, and results past the dtype's max
            want = np.ldexp(_f64(x), e)
        # a result out of the dtype's range overflows (inf) or flushes, as in the dtype
        want = _f64(jnp.asarray(want).astype(dtype))
        got = jax.jit(mul_exp2)(x, jnp.int32(e))
        ok = np.isfinite(want) & (np.abs(want) >= float(info.tiny)) | (want == 0)
        np.testing.assert_array_equal(_f64(got)[ok], want[ok], err_msg=f"e = {e}")
    y, k = jnp.asarray([1.5, -3.0, 0.75, float(info.max)], dtype), np.array([-7, 0, 5, -span // 2])
    got = jax.vmap(mul_exp2)(y, jnp.asarray(k, jnp.int32))
    np.testing.assert_array_equal(_f64(got), np.ldexp(_f64(y), k))


def test_pow2_peak():
    x = jnp.asarray([3e-30, -5.0, np.nan, -np.inf], jnp.float32)
    assert float(pow2_peak(x)) == 4.0
    # clipped at 2^126: 2^-127 is not normal
    assert float(pow2_peak(jnp.asarray([3e38], jnp.float32))) == 2.0**126
    assert float(pow2_peak(jnp.asarray([3e-30], jnp.float32))) == 2.0 ** np.floor(np.log2(3e-30))
    assert float(pow2_peak(jnp.zeros(3))) == 0.0
