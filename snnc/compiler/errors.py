"""User-facing compiler errors.

Every problem a user can fix (a bad flag, an unsupported layer, a corrupt file) is raised as
:class:`SnncError` with a message that names the culprit and says what to do. The CLI prints such
errors as ``snnc: error: <message>`` and exits with status 2, without a traceback; anything else
that escapes is a bug in snnc.
"""

from __future__ import annotations

__all__ = ["SnncError", "describe_module"]


class SnncError(Exception):
    """An error the user can fix; ``str(exc)`` is the complete message shown to them."""


def describe_module(module) -> str:
    """Short user-facing name of a module's class: ``nn.Linear`` for torch.nn classes.

    Examples
    --------
    >>> import torch
    >>> describe_module(torch.nn.LSTM(2, 2))
    'nn.LSTM'
    """
    cls = type(module)
    if cls.__module__.startswith("torch.nn."):
        return f"nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"
