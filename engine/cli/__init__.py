"""The ``poseanything`` command line; it sits on top, and nothing in the engine imports it.

This module imports nothing heavy: the console script and ``python -m poseanything.engine.cli``
run ``main`` here, which answers Ctrl-C before the commands' imports (torch takes seconds) start.
"""

import os
import signal
import sys
from collections.abc import Sequence

from ..errors import EXIT_CANCELLED

__all__ = ["build_parser", "main"]


def _cancelled_while_starting(signum, frame) -> None:
    """Exit at once: nothing is written before a command installs its own cancel, and an
    exception raised here can surface mid-import as another error (numpy turns it into an
    ImportError while its C extension loads)."""
    os.write(sys.stderr.fileno(), b"poseanything: cancelled (Ctrl-C); nothing was written\n")
    os._exit(EXIT_CANCELLED)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``poseanything`` command; returns its exit code.

    Until a command installs its own cancel (``options.cancel_on_signals``), Ctrl-C exits 130
    with one line, not a ``KeyboardInterrupt`` traceback from halfway through an import.
    """
    previous = signal.signal(signal.SIGINT, _cancelled_while_starting)
    try:
        from .render import main as run_command

        return run_command(argv)
    finally:
        signal.signal(signal.SIGINT, previous)


def __getattr__(name: str):
    if name == "build_parser":  # imported on first use, so ``main`` comes first
        from .render import build_parser

        return build_parser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
