"""The one exception type the CLI turns into a single clear line."""


class FlywheelError(Exception):
    """A problem the user can fix, worded for them (no traceback is shown)."""
