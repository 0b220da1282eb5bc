class LabError(Exception):
    """A user-facing error: printed without a traceback."""
