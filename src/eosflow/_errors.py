"""The package's user-error classes: what the command line prints as one line (exit 2).

Anything else raised inside eosflow is a bug (or JAX's) and keeps its traceback.
"""

import numpy as np


class EosflowError(ValueError):
    """A bad input from the user (a value, a file, a folder); the message is one line that
    names the argument, field or file, and says what to do."""


class ConfigError(EosflowError):
    """A bad configuration value; the message names the field."""


class RunDirError(EosflowError):
    """A run directory that cannot be used as asked; the message names the file or folder."""


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (a Python or NumPy int, not a bool) of at
    least ``minimum``; otherwise a one-line ``ValueError`` naming the argument ``name``.

    Raises:
        ValueError: ``{name} must be an int >= {minimum}, got {value!r}.``
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)
