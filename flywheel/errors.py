"""The one exception type the CLI turns into a single clear line, and the loader of the
`module:function` specs users name on the command line."""

import importlib
from collections.abc import Callable
from types import ModuleType


class FlywheelError(Exception):
    """A problem the user can fix, worded for them (no traceback is shown)."""


def import_function(spec: str, *, what: str) -> tuple[ModuleType, str, Callable]:
    """The module, name and callable that `module:function` names; `what` words the
    error (FlywheelError) for a spec that names nothing callable."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise FlywheelError(f"{what} is module:function, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise FlywheelError(f"cannot import {module_name!r}: {e}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise FlywheelError(f"{module_name!r} has no function {name!r}")
    return module, name, function
