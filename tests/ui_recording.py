"""A stand-in for ``bpy.types.UILayout`` that checks what a ``draw()`` asks of this Blender.

The bpy module has no windows, so no panel draws in a test. ``RecordingLayout`` is handed to a
panel's or the preferences' ``draw()`` instead: every call must be a function of this Blender's
``UILayout`` with parameters it has, every ``prop``/``prop_search`` path must resolve on the
real data, every operator must be registered, every icon must be in the icon enum, and every
attribute set must be a ``UILayout`` property. It keeps what was drawn for the test to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import bpy


@dataclass
class Drawn:
    """One call of a ``draw()``: the layout function, its arguments, its child layout."""

    function: str
    args: tuple
    kwargs: dict
    child: RecordingLayout | None = None


def _rna_functions() -> Any:
    return bpy.types.UILayout.bl_rna.functions


def _icons() -> set[str]:
    return set(_rna_functions()["label"].parameters["icon"].enum_items.keys())


def _unwrap(data: Any) -> Any:
    """A panel's ``self`` is a ``DrawingAs`` here; its properties live on the real object."""
    return data.target if isinstance(data, DrawingAs) else data


def _check_path(data: Any, path: str, function: str) -> None:
    data = _unwrap(data)
    assert data is not None, f"{function}(None, {path!r})"
    properties = data.bl_rna.properties
    assert path in properties, f"{function}: {data.bl_rna.identifier} has no property {path!r}"


def _check_operator(idname: str) -> Any:
    module, _, name = idname.partition(".")
    operator = getattr(getattr(bpy.ops, module), name)
    return operator.get_rna_type()  # KeyError when no such operator is registered


class OperatorSettings:
    """What ``layout.operator()`` returns: setting a property the operator lacks fails."""

    def __init__(self, rna_type: Any) -> None:
        object.__setattr__(self, "rna_type", rna_type)

    def __setattr__(self, name: str, value: Any) -> None:
        assert name in self.rna_type.properties, f"{self.rna_type.identifier} has no {name!r}"


@dataclass
class RecordingLayout:
    """What a ``draw()`` drew into it, in order (``drawn``), checked as it is drawn."""

    drawn: list[Drawn] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("drawn", "settings"):
            object.__setattr__(self, name, value)
            return
        assert name in bpy.types.UILayout.bl_rna.properties, f"UILayout has no {name!r}"
        self.settings[name] = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        functions = _rna_functions()
        assert name in functions, f"UILayout has no function {name!r} in this Blender"
        parameters = functions[name].parameters

        def call(*args: Any, **kwargs: Any) -> RecordingLayout | None:
            names = [p.identifier for p in parameters if not p.is_output]
            assert len(args) <= len(names), f"{name}: too many arguments {args}"
            given = {**dict(zip(names, args, strict=False)), **kwargs}
            unknown = set(given) - set(names)
            assert not unknown, f"UILayout.{name} has no parameter {sorted(unknown)} here"
            for key, value in given.items():
                if key == "icon" and value:
                    assert value in _icons(), f"{name}: no icon {value!r} in this Blender"
            if name in ("prop", "prop_search", "prop_enum", "props_enum", "prop_menu_enum"):
                _check_path(given["data"], given["property"], name)
            if name == "prop_search":
                _check_path(given["search_data"], given["search_property"], name)
            returns = [p for p in parameters if p.is_output]
            child = None
            if returns and returns[0].fixed_type.identifier == "UILayout":
                child = RecordingLayout()
            self.drawn.append(Drawn(name, args, kwargs, child))
            if name in ("operator", "operator_menu_enum", "operator_enum"):
                return OperatorSettings(_check_operator(given["operator"]))
            return child

        return call

    def walk(self):
        """Every call drawn, children after their parent."""
        for drawn in self.drawn:
            yield drawn
            if drawn.child is not None:
                yield from drawn.child.walk()

    def texts(self) -> list[str]:
        return [d.kwargs.get("text", "") for d in self.walk()]

    def props(self) -> list[str]:
        return [d.kwargs.get("property") or d.args[1] for d in self.walk() if d.function == "prop"]


class DrawingAs:
    """``self`` for a ``draw()`` called with a recording layout: ``layout`` is the recording,
    everything else is the real panel class or preferences object's."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.layout = RecordingLayout()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def draw(draw_function, target: Any, context: Any) -> RecordingLayout:
    """Call ``draw_function(self, context)`` with a recording layout; return the recording."""
    drawing = DrawingAs(target)
    draw_function(drawing, context)
    return drawing.layout
