"""Config dataclasses read from JSON: a key the dataclass has no field for is warned about.

A model folder or checkpoint written by a newer engine (or edited by hand, with a typo) still
loads, and what it ignores is named instead of silently dropped.
"""

from __future__ import annotations

import warnings
from dataclasses import fields


class UnknownConfigKey(UserWarning):
    """A config file holds a key its dataclass does not know; the key is ignored."""


def known_fields(cls: type, data: dict, source: str) -> dict:
    """The entries of ``data`` that are fields of the dataclass ``cls``.

    Every other key is named in one ``UnknownConfigKey`` warning, with ``source`` (the file it
    came from) and ``cls``'s fields, so a typo can be fixed.
    """
    names = [field.name for field in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        warnings.warn(
            f"{source}: ignoring {', '.join(map(repr, unknown))}, not a {cls.__name__} field "
            f"(the fields: {', '.join(names)})",
            UnknownConfigKey,
            stacklevel=3,
        )
    return {key: value for key, value in data.items() if key in names}
