"""Stopping a render between two sampling steps: the token a UI or signal handler sets.

torch-free, so a command line holds one (and answers Ctrl-C) before torch has loaded.
"""

from __future__ import annotations

import threading


class Cancelled(Exception):
    """Sampling was stopped through its cancel token; nothing was written."""


class CancelToken:
    """Thread-safe flag the sampler checks before every step (set from a UI or signal handler)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("generation cancelled")
