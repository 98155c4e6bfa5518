"""The package's user-error classes: what the command line prints as one line (exit 2).

Anything else raised inside eosflow is a bug (or JAX's) and keeps its traceback.
"""


class EosflowError(ValueError):
    """A bad input from the user (a value, a file, a folder); the message is one line that
    names the argument, field or file, and says what to do."""


class ConfigError(EosflowError):
    """A bad configuration value; the message names the field."""


class RunDirError(EosflowError):
    """A run directory that cannot be used as asked; the message names the file or folder."""
