"""The ``poseanything`` command line; it sits on top, and nothing in the engine imports it."""

from .render import build_parser, main

__all__ = ["build_parser", "main"]
