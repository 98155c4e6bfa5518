"""Type aliases used at eosflow's public boundaries."""

from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree

Params: TypeAlias = PyTree[Float[Array, "..."]]
Batch: TypeAlias = Any
Scalar: TypeAlias = Float[Array, ""]

__all__ = [
    "Array",
    "ArrayLike",
    "Batch",
    "Bool",
    "Float",
    "Int",
    "PRNGKeyArray",
    "Params",
    "PyTree",
    "Scalar",
]
