"""Lines for whoever reads a command's output, who may go away mid-render.

Python ignores SIGPIPE, so a write to a pipe whose reader closed it (the add-on's Blender
killed, ``poseanything render ... | head``) raises ``BrokenPipeError`` wherever it happens.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TextIO


def print_line(text: str, stream: TextIO | None = None, end: str = "\n") -> bool:
    """Print ``text`` to ``stream`` (stdout) and flush; False when its reader has gone.

    The stream is then pointed at the null device, so later lines and the interpreter's last
    flush are dropped quietly instead of raising again at some other place."""
    stream = sys.stdout if stream is None else stream
    try:
        print(text, end=end, file=stream, flush=True)
    except BrokenPipeError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
        return False
    return True


class ProgressOutput:
    """A command's progress lines, and whether their reader has gone.

    ``on_reader_gone`` is called once, at the first line nobody reads: the command cancels its
    work, since nobody would learn that it finished."""

    def __init__(self, on_reader_gone: Callable[[], None]) -> None:
        self.on_reader_gone = on_reader_gone
        self.reader_gone = False

    def print(self, text: str, stream: TextIO | None = None, end: str = "\n") -> None:
        if not print_line(text, stream, end) and not self.reader_gone:
            self.reader_gone = True
            self.on_reader_gone()
