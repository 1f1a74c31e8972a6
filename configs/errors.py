"""The base class of lifetag's own errors: a bad input, config or request, as opposed to a bug."""
from __future__ import annotations

__all__ = ["LifetagError"]


class LifetagError(Exception):
    """A mistake in what lifetag was given (file, config, option, request); its message is one paragraph
    for the person who made it, naming what is wrong and how to fix it.

    The command line answers it with exit code 2 and no traceback; any other exception is a bug (exit 1).
    """
