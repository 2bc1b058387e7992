"""The per-render choices as one frozen object, checked when it is made.

torch-free, so the command lines, batch planning and the resume key build and compare it without
loading a model; ``PoseAnythingPipeline.render`` takes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from ..contract.shot import guidance_problem, seed_problem
from ..errors import BadInput
from .guidance import CameraAnchorKind

DEFAULT_OVERLAP = 4
"""Frames two consecutive windows share: the cross-fade that hides the seam (>= 1)."""
CAMERA_ANCHORS: tuple[str, ...] = get_args(CameraAnchorKind)


class OptionError(BadInput):
    """A render option that cannot work; the message names the option and what to use."""


@dataclass(frozen=True)
class RenderSettings:
    """Per-render choices; None means "the shot's" (guidance, seed, ``engine["steps"]``), then
    "the model's" (steps)."""

    steps: int | None = None
    subject_guidance: float | None = None
    camera_guidance: float | None = None
    camera_anchor: CameraAnchorKind = "rectangle"
    seed: int | None = None
    ptcm: bool = True
    upscale: bool = True
    """Resize the result to the shot's size (else keep the model's working size)."""
    overlap: int = DEFAULT_OVERLAP
    blank_pose: bool = False
    """Blank skeleton images in every frame (the model's no-pose input, trained as condition
    dropout): the no-pose baseline of ``poseanything eval``."""

    def __post_init__(self) -> None:
        steps = self.steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
            raise OptionError(f"steps is {steps!r}; use a whole number of sampling steps")
        if steps is not None and steps < 1:
            raise OptionError(f"steps is {steps}; use at least 1 sampling step")
        for name, option in (("subject", "--guidance"), ("camera", "--camera-guidance")):
            value = getattr(self, f"{name}_guidance")
            if value is not None and (problem := guidance_problem(value)) is not None:
                raise OptionError(f"{name} guidance ({option}): {problem}")
        if self.seed is not None and (problem := seed_problem(self.seed)) is not None:
            raise OptionError(f"seed (--seed): {problem}")
        if self.camera_anchor not in CAMERA_ANCHORS:
            raise OptionError(
                f"camera anchor is {self.camera_anchor!r}; use one of {', '.join(CAMERA_ANCHORS)}"
            )
