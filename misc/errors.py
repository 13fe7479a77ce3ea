"""MarsError: a user mistake (config, path, data, file), reported as one line (this module imports nothing)."""


class MarsError(Exception):
    """A user mistake (config, path, data, file): mars.py prints it as one `mars: error: ...` line."""
