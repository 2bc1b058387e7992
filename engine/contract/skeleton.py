"""Skeletons as the model sees them: body parts, skeleton images and part masks.

numpy and the standard library only: the add-on writes skeleton images from inside Blender's
Python (no PIL there), and the engine re-renders them at the model's working size.

The image style follows the paper: black background, white bones (about 3 px at 832 px),
green dots on endpoint joints (degree 1) and red dots on junction joints (degree >= 3).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

MAX_PARTS = 5
REFERENCE_SIZE = 832
"""Long side, in pixels, at which the paper's bones are ``BONE_WIDTH_AT_REFERENCE`` wide."""
BONE_WIDTH_AT_REFERENCE = 3.0
DOT_SCALE = 1.6
"""Joint dots are this much wider than bones, so they stay visible where bones meet."""

BONE_COLOR = (255, 255, 255)
ENDPOINT_COLOR = (0, 255, 0)
JUNCTION_COLOR = (255, 0, 0)
PART_COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180))
"""One colour per part for previews; far apart in hue so a wrong bone filter shows at once."""


def joint_degrees(edges: np.ndarray, num_joints: int) -> np.ndarray:
    """Number of bones meeting at each joint."""
    return np.bincount(np.asarray(edges, dtype=np.int64).ravel(), minlength=num_joints)


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _chains(edges: np.ndarray, num_joints: int) -> np.ndarray:
    """Chain id per edge: edges joined through degree-2 joints, cut at endpoints and junctions."""
    parent = np.arange(len(edges))
    incident: list[list[int]] = [[] for _ in range(num_joints)]
    for e, (a, b) in enumerate(edges.tolist()):
        incident[a].append(e)
        incident[b].append(e)
    for pair in incident:
        if len(pair) == 2:
            ra, rb = _find(parent, pair[0]), _find(parent, pair[1])
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([_find(parent, e) for e in range(len(edges))])
    return np.unique(roots, return_inverse=True)[1]


def _neighbour_parts(edges: np.ndarray, part: np.ndarray, p: int) -> list[int]:
    """Parts other than ``p`` that share a joint with it."""
    members = part == p
    touching = np.isin(edges, np.unique(edges[members])).any(axis=1) & ~members
    return np.unique(part[touching]).tolist()


def segment_parts(
    edges: np.ndarray,
    num_joints: int,
    bone_lengths: np.ndarray | None = None,
    max_parts: int = MAX_PARTS,
) -> np.ndarray:
    """Label each bone with a body part, at most ``max_parts`` parts, as the paper's PTCM does.

    The graph is cut at endpoints and junctions into chains (limbs, spine, tail, ...); then the
    smallest part (by total bone length) is merged into a neighbour until few enough remain.
    The neighbour chosen is the most connected one (most neighbouring parts; ties: the
    largest): a chain running between junctions is trunk, one ending in a tip is a limb, so a
    head or a finger joins the trunk or the limb it hangs from instead of fusing two limbs. A
    part with no neighbour (a separate root) joins the largest part. Part 0 is the largest.
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if len(edges) == 0:
        return np.zeros(0, dtype=np.int8)
    lengths = np.ones(len(edges)) if bone_lengths is None else np.asarray(bone_lengths, float)
    part = _chains(edges, num_joints)
    sizes = np.bincount(part, weights=np.maximum(lengths, 1e-9))
    alive = list(range(len(sizes)))
    while len(alive) > max_parts:
        smallest = min(alive, key=lambda p: (sizes[p], p))
        members = part == smallest
        neighbours = _neighbour_parts(edges, part, smallest)
        if neighbours:
            target = max(
                neighbours, key=lambda p: (len(_neighbour_parts(edges, part, p)), sizes[p], -p)
            )
        else:
            target = max((p for p in alive if p != smallest), key=lambda p: (sizes[p], -p))
        part[members] = target
        sizes[target] += sizes[smallest]
        alive.remove(smallest)
    order = sorted(alive, key=lambda p: (-sizes[p], p))
    relabel = np.zeros(len(sizes), dtype=np.int8)
    relabel[order] = np.arange(len(order), dtype=np.int8)
    return relabel[part]


def bone_width(width: int, height: int) -> float:
    """Bone width in pixels, scaled from the paper's 3 px at an 832 px long side."""
    return max(1.0, BONE_WIDTH_AT_REFERENCE * max(width, height) / REFERENCE_SIZE)


def _stamp_segment(
    canvas: np.ndarray, p0: np.ndarray, p1: np.ndarray, radius: float, color: np.ndarray
) -> None:
    """Composite an anti-aliased capsule from p0 to p1 over the canvas, clipped to the frame."""
    h, w = canvas.shape[:2]
    lo = np.floor(np.minimum(p0, p1) - radius - 1).astype(np.int64)
    hi = np.ceil(np.maximum(p0, p1) + radius + 1).astype(np.int64)
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], w), min(hi[1], h)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1) + 0.5
    ys = np.arange(y0, y1) + 0.5
    d = p1 - p0
    px = xs[None, :] - p0[0]
    py = ys[:, None] - p0[1]
    length2 = float(d @ d)
    t = np.clip((px * d[0] + py * d[1]) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    dist = np.hypot(px - t * d[0], py - t * d[1])
    alpha = np.clip(radius + 0.5 - dist, 0.0, 1.0)[..., None]
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - alpha
    region += alpha * color


def _draw_frame(
    canvas: np.ndarray,
    points: np.ndarray,
    in_front: np.ndarray,
    edges: np.ndarray,
    radius: float,
    edge_colors: np.ndarray,
    dots: Sequence[tuple[np.ndarray, np.ndarray]],
    dot_radius: float,
) -> None:
    drawable = in_front[edges].all(axis=1)
    for e in np.flatnonzero(drawable):
        a, b = edges[e]
        _stamp_segment(canvas, points[a], points[b], radius, edge_colors[e])
    for joints, color in dots:
        for j in joints[in_front[joints]]:
            _stamp_segment(canvas, points[j], points[j], dot_radius, color)


def skeleton_frames(
    joints2d: np.ndarray,
    in_front: np.ndarray,
    edges: np.ndarray,
    width: int,
    height: int,
    pose_frames: Sequence[int] | None = None,
    edge_part: np.ndarray | None = None,
    part_colors: bool = False,
) -> Iterator[np.ndarray]:
    """Skeleton images in the paper's style, one (H, W, 3) uint8 frame at a time, in order: the
    model's pose condition. One at a time, so a long shot's images can go to disk as they are
    drawn instead of all being held (``render_skeleton_frames`` stacks them).

    Bones with an endpoint behind the camera are skipped (their projection is meaningless);
    bones leaving the frame are clipped. Frames not in ``pose_frames`` stay black, which is how
    the model was trained to read sparse poses. ``part_colors`` colours bones by part instead of
    white, for previews.
    """
    joints2d = np.asarray(joints2d, dtype=np.float64)
    in_front = np.asarray(in_front, dtype=bool)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    num_frames, num_joints = joints2d.shape[:2]
    posed = set(range(num_frames) if pose_frames is None else pose_frames)
    outside = sorted(f for f in posed if not 0 <= f < num_frames)
    if outside:
        raise IndexError(f"pose frame {outside[0]} is outside the shot's {num_frames} frames")
    if part_colors and edge_part is None:
        raise ValueError("part_colors needs edge_part")
    palette = np.asarray(PART_COLORS, dtype=np.float64)
    edge_colors = (
        palette[np.asarray(edge_part) % len(palette)]
        if part_colors
        else np.tile(np.asarray(BONE_COLOR, np.float64), (len(edges), 1))
    )
    degree = joint_degrees(edges, num_joints)
    dots = (
        (np.flatnonzero(degree == 1), np.asarray(ENDPOINT_COLOR, np.float64)),
        (np.flatnonzero(degree >= 3), np.asarray(JUNCTION_COLOR, np.float64)),
    )
    radius = bone_width(width, height) / 2

    def drawn() -> Iterator[np.ndarray]:
        black = np.zeros((height, width, 3), dtype=np.uint8)
        black.flags.writeable = False
        canvas = np.empty((height, width, 3), dtype=np.float64)
        for f in range(num_frames):
            if f not in posed:
                yield black
                continue
            canvas.fill(0.0)
            _draw_frame(
                canvas,
                joints2d[f],
                in_front[f],
                edges,
                radius,
                edge_colors,
                dots,
                radius * DOT_SCALE,
            )
            yield np.rint(canvas).astype(np.uint8)

    return drawn()


def render_skeleton_frames(
    joints2d: np.ndarray,
    in_front: np.ndarray,
    edges: np.ndarray,
    width: int,
    height: int,
    pose_frames: Sequence[int] | None = None,
    edge_part: np.ndarray | None = None,
    part_colors: bool = False,
) -> np.ndarray:
    """All of ``skeleton_frames`` as one (F, H, W, 3) uint8 array (a window, a preview)."""
    frames = skeleton_frames(
        joints2d, in_front, edges, width, height, pose_frames, edge_part, part_colors
    )
    out = np.empty((len(joints2d), height, width, 3), dtype=np.uint8)
    for f, image in enumerate(frames):
        out[f] = image
    return out


def default_dilation(width: int, height: int) -> float:
    """Half-width of a body around its bones: a part mask should cover flesh, not just lines."""
    return 0.04 * max(width, height)


def part_masks(
    joints2d: np.ndarray,
    in_front: np.ndarray,
    edges: np.ndarray,
    edge_part: np.ndarray,
    width: int,
    height: int,
    grid: tuple[int, int],
    dilation_px: float | None = None,
) -> np.ndarray:
    """Per-frame, per-part subject masks on the token grid, (F, P, gh, gw) bool.

    The bones of each part are drawn dilated and rasterised straight at token resolution
    (joints scaled to the grid), so a token is in a part when the dilated part touches it.
    """
    gh, gw = grid
    joints2d = np.asarray(joints2d, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    edge_part = np.asarray(edge_part, dtype=np.int64)
    num_frames = joints2d.shape[0]
    num_parts = int(edge_part.max()) + 1 if len(edge_part) else 0
    scale = np.array([gw / width, gh / height])
    radius = default_dilation(width, height) if dilation_px is None else dilation_px
    radius_grid = radius * float(scale.max())
    points = joints2d * scale
    masks = np.zeros((num_frames, num_parts, gh, gw), dtype=bool)
    canvas = np.empty((gh, gw, 1), dtype=np.float64)
    in_front = np.asarray(in_front, dtype=bool)
    for p in range(num_parts):
        part_edges = edges[edge_part == p]
        white = np.ones((len(part_edges), 1))
        for f in range(num_frames):
            canvas.fill(0.0)
            _draw_frame(canvas, points[f], in_front[f], part_edges, radius_grid, white, (), 0.0)
            masks[f, p] = canvas[..., 0] > 0.0
    return masks


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3|4) or (H, W) uint8 image, with zlib only (works in Blender)."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"PNG needs uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    height, width, channels = image.shape
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write a PNG (not atomically: callers write into a temporary folder)."""
    Path(path).write_bytes(encode_png(image))
