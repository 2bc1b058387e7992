"""``python -m poseanything.poseanything_blender.synthetic.run make-eval-clips ...``: the synthetic
data commands on their own, for the engine's ``poseanything eval``, which never imports bpy and
so builds its held-out clips in this child process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .command import add_synthetic_commands


class BadInput(ValueError):
    """A mistake in the arguments (exit code 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="poseanything-synthetic")
    handlers = add_synthetic_commands(
        parser.add_subparsers(dest="command", required=True), BadInput
    )
    args = parser.parse_args(argv)
    try:
        handlers[args.command](args)
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
