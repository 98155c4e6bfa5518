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
    least ``minimum``; otherwise one error line naming the argument ``name``:
    ``{name} must be an int >= {minimum}, got {value!r}.``

    Raises:
        TypeError: ``value`` is not an integer (a bool, a float, a string, ...).
        ValueError: ``value`` is below ``minimum``.
    """
    message = f"{name} must be an int >= {minimum}, got {value!r}."
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(message)
    if value < minimum:
        raise ValueError(message)
    return int(value)
