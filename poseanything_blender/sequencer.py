"""Strips in the Video Sequencer through the data API (sequencer operators need a UI to poll):
finished takes as movie strips, the skeleton preview as an image sequence.

``strips.new_movie`` on a missing or unreadable file silently makes a one-frame strip, so the
file is checked first and the strip's length afterwards: a take arrives complete or not at all.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from ..engine.errors import BadInput

MAX_CHANNEL = 128


class StripError(BadInput):
    """A video or image sequence that cannot become the strip it should be."""


def _occupied(scene: bpy.types.Scene, channel: int, start: int, end: int) -> bool:
    """Whether any top-level strip on ``channel`` overlaps frames ``start`` to ``end - 1``."""
    editor = scene.sequence_editor
    return any(
        strip.channel == channel and strip.frame_final_start < end and start < strip.frame_final_end
        for strip in editor.strips
    )


def free_channel(scene: bpy.types.Scene, start: int, length: int) -> int:
    """The lowest channel with no strip over frames ``start`` .. ``start + length - 1``."""
    scene.sequence_editor_create()
    for channel in range(1, MAX_CHANNEL + 1):
        if not _occupied(scene, channel, start, start + length):
            return channel
    raise StripError(
        f"every sequencer channel is in use at frames {start}-{start + length - 1}; "
        "remove or move some strips"
    )


def add_movie_strip(
    scene: bpy.types.Scene, video: str | Path, name: str, frame_start: int, num_frames: int
) -> bpy.types.Strip:
    """A movie strip of ``video`` at ``frame_start`` on a free channel, ``num_frames`` long."""
    video = Path(video)
    if not video.is_file():
        raise StripError(
            f"the video {video} is gone (moved or deleted while the job ran); "
            "generate the take again"
        )
    channel = free_channel(scene, frame_start, num_frames)
    strips = scene.sequence_editor.strips
    strip = strips.new_movie(name, str(video), channel=channel, frame_start=frame_start)
    if strip.frame_final_duration != num_frames:
        duration = strip.frame_final_duration
        strips.remove(strip)
        raise StripError(
            f"the video {video} holds {duration} frames where the shot has {num_frames}; "
            "Blender cannot read it fully; generate the take again"
        )
    return strip


def add_take_strip(
    scene: bpy.types.Scene, video: Path, frame_start: int, num_frames: int
) -> bpy.types.Strip:
    """A finished take's ``video`` as a strip named after it, as one undo step."""
    strip = add_movie_strip(scene, video, video.stem, frame_start, num_frames)
    if bpy.ops.ed.undo_push.poll():  # needs a window manager; none in the bpy module
        bpy.ops.ed.undo_push(message=f"PoseAnything: add {strip.name}")
    return strip


def add_image_sequence_strip(
    scene: bpy.types.Scene, images: list[Path], name: str, frame_start: int
) -> bpy.types.Strip:
    """An image-sequence strip of ``images`` (one folder, in order) at ``frame_start``."""
    if not images or not all(image.is_file() for image in images):
        raise StripError(f"images for {name!r} are missing; export the shot again")
    channel = free_channel(scene, frame_start, len(images))
    strip = scene.sequence_editor.strips.new_image(
        name, str(images[0]), channel=channel, frame_start=frame_start
    )
    for image in images[1:]:
        strip.elements.append(image.name)
    return strip
