"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists its public names and the private module each lives in; the module is
imported on first access. ``import eosflow`` and the command line's ``list`` and ``--help``
then cost what they use, not an import of JAX, equinox, optax and diffrax.
"""

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable, list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` exporting ``exports`` (public name
    → module relative to the package, e.g. ``{"Config": "._config"}``; a name mapped to
    ``"."`` is a subpackage or submodule of that name)."""

    def __getattr__(name: str):
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if where == ".":
            value = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(where, package), name)
        globals_of(package)[name] = value  # cached: the next access is a plain lookup
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals_of(package)) | set(exports))

    return __getattr__, __dir__, sorted(exports)


def globals_of(package: str) -> dict:
    return vars(importlib.import_module(package))
