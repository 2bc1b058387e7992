"""The one error family and the exit codes of every PoseAnything command line.

``BadInput`` is the root of every error that means "the user's input is wrong"; command lines
turn it into exit 2 and its message, batch never retries it. Anything else (a ``ValueError`` from
our own code included) is a bug or an accident: a traceback and exit 1, retried by batch.
Pure Python, so the bpy side (``poseanything_blender``) derives its classes from it too.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CRASH = 1
"""A bug or an accident: the traceback is on stderr."""
EXIT_FAILED = 1
"""The command ran, but some of its work failed (a batch shot, a Generate); the summary says."""
EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_CANCELLED = 130
"""128 + SIGINT, as a shell reports a command stopped by Ctrl-C."""


class BadInput(Exception):
    """The user's input is wrong and the message says what to do: exit 2, never retried by batch.

    Deliberately not a ``ValueError``: a ``ValueError`` raised by our own code (or a library) is
    a bug, and must not be caught, reported and given up on as if the user were at fault. Classes
    that are also an ``OSError`` by nature (a missing model, an existing output) derive from both.
    """
