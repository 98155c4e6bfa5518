import jax
import pytest

# Exact algebra in the tests: float64 unless a test asks for float32 explicitly.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.key(1234)
