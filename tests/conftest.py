import atexit
import os
import shutil
import tempfile

import jax
import pytest

# Exact algebra in the tests: float64 unless a test asks for float32 explicitly.
jax.config.update("jax_enable_x64", True)

# One on-disk compilation cache for the whole session, shared with the subprocesses the
# tests start (the CLI reads EOSFLOW_CACHE_DIR): the same programs compile many times over.
if "EOSFLOW_CACHE_DIR" not in os.environ:  # made here: removed when this process exits
    os.environ["EOSFLOW_CACHE_DIR"] = tempfile.mkdtemp(prefix="eosflow-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["EOSFLOW_CACHE_DIR"], ignore_errors=True)
_CACHE = os.environ["EOSFLOW_CACHE_DIR"]
if _CACHE.lower() not in ("off", "0", "none", ""):
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


@pytest.fixture
def key():
    return jax.random.key(1234)
