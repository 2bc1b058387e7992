"""The reference moved along the skeleton and the camera, at the shot's own size: the default
engine's picture, and the default model's flow start.

A two-core model cannot learn in an hour how every pixel of a subject follows its bones, but
that motion is mostly geometry the shot already gives. ``warp_reference`` builds each frame in
two layers, like 2D linear-blend skinning with a depth buffer:

- the background: the shot's plate of that frame when it has them (the set without the subject,
  rendered through that frame's camera: exact, parallax and all); else the reference with the
  subject cut out by its mask and inpainted (OpenCV), moved by the homography that takes the
  camera rectangle (fixed in the world, ``guidance.rectangle_track``) back to the first frame.
  What the subject uncovers is the background the camera saw there, not a smear of the subject;
- the subject: each bone carries the reference pixels it owns to where it is now, keeping their
  position along the bone and their offset across it, turned as the joints around it turn. A
  pixel of the mask belongs to the bone nearest the camera among those whose band holds it (a
  bone's band is the mask's thickness along it, from a distance transform, at most half its
  length), else to the nearest bone; in a frame, where several bones claim a pixel, the one
  nearest the camera wins, so a leg passing in front of the body covers it.

The diffusion model starts its flow from this video brought to its working size and predicts
the change from it; inside ``WarpedReference.region`` (around the moved subject) its
correction is added back at low frequency, outside it the warp's pixels stand: the background
the subject uncovers is the inpainted backdrop, never repainted with a shadow of the subject.
Without a skeleton the subject holds still with the background; with neither track every frame
is the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from .guidance import SkeletonTrack

RADIUS_FRACTION = 0.04
"""Without a mask, the subject is a band this share of the skeleton's extent around its bones."""
MIN_RADIUS_PX = 1.5
CLAIM_MARGIN_PX = 1.0
"""A bone reaches this much further than the farthest pixel it owns (antialiased edges)."""
BAND_PER_LENGTH = 0.5
"""In the reference a bone claims pixels (before the bones behind it) at most this share of its
length (at least ``MIN_RADIUS_PX``) from it, however thick the mask is there."""
CUT_DILATION_PX = 2
"""The subject is cut from the background this much wider than its mask (its soft edge)."""
INPAINT_RADIUS_PX = 5
REGION_RADII = 1.0
"""The guess region reaches this many median bone radii beyond the moved subject's silhouette."""
ANCHOR_MOTIONS = {
    "full": (True, True),
    "subject": (True, False),
    "camera": (False, True),
    "blank": (False, False),
}
"""What the flow base of each guidance anchor (and of the blank no-pose input) moves:
(the subject along its skeleton, the background with the camera)."""
TURN_SPREAD = 0.5
"""A bone turns as the joints within about this many of its radii around it do (its own count
most): the weights of the fit of its rotation fall off as a Gaussian of this width."""
MIN_TURN_MOMENT = 0.125
"""Joints spanning less (pixels squared, a bone under half a pixel) give no rotation."""
NEIGHBOUR_CLAIM, HIDDEN_CLAIM = 1e9, 2e9
"""Added to the depth of a bone's claim on a pixel its neighbour owns, and on any other subject
pixel within its thickness (a part hidden in the reference, carried with what covered it):
any own claim wins over a neighbour's, which wins over a hidden part's."""


def to_opencv(matrix: np.ndarray) -> np.ndarray:
    """A homography between our pixel coordinates (pixel i spans [i, i+1)) in OpenCV's, whose
    pixel centres are whole numbers."""
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    return np.linalg.inv(shift) @ matrix @ shift


def camera_homographies(corners: np.ndarray, in_front: np.ndarray) -> np.ndarray:
    """(F,3,3) homographies taking frame t's pixels to frame 0's, from the camera rectangle's
    corners (F,4,2); identity where a corner is behind the camera or the fit is degenerate."""
    out = np.repeat(np.eye(3)[None], len(corners), axis=0)
    if not in_front[0].all():
        return out
    target = corners[0].astype(np.float32)
    for t in range(1, len(corners)):
        if in_front[t].all():
            matrix = cv2.getPerspectiveTransform(corners[t].astype(np.float32), target)
            if np.isfinite(matrix).all() and abs(np.linalg.det(matrix)) > 1e-12:
                out[t] = matrix
    return out


def _segments(
    pixels: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pixel's position along each bone (u in [0,1]), its offset from the closest point
    and its distance: pixels (N,2), start/end (E,2) -> u (N,E), offset (N,E,2), distance (N,E)."""
    direction = end - start
    length2 = np.maximum((direction * direction).sum(-1), 1e-6)
    u = np.clip(((pixels[:, None] - start[None]) * direction[None]).sum(-1) / length2, 0.0, 1.0)
    offset = pixels[:, None] - (start[None] + u[..., None] * direction[None])
    return u, offset, np.sqrt((offset * offset).sum(-1))


class SubjectLayers(NamedTuple):
    """The reference cut into what each bone carries, and the background it leaves."""

    edges: np.ndarray
    """(E,2) the bones that carry pixels: those in front of the camera in the reference."""
    owner: np.ndarray
    """(H,W) int32: the bone (index into the kept edges) that carries each reference pixel;
    -1 off the subject."""
    reach: np.ndarray
    """(E,) float32: how far from its bone (pixels) a bone's owned pixels lie, plus a margin."""
    thickness: np.ndarray
    """(E,) float32: the mask's half-thickness along each bone (pixels, with the margin)."""
    adjacent: np.ndarray
    """(E,E) bool: bones that share a joint (a bone is adjacent to itself)."""
    mask: np.ndarray
    """(H,W) float32 in 0..1: the subject's coverage in the reference."""
    background: np.ndarray
    """(H,W,3) uint8: the reference with the subject inpainted away."""
    radius: float
    """The median bone radius (pixels): the scale of the guess region's margin."""


def band_mask(joints: np.ndarray, valid: np.ndarray, edges: np.ndarray, size: tuple[int, int]):
    """(H,W) float32: a band of ``RADIUS_FRACTION`` of the skeleton's extent around its bones,
    the subject's stand-in when no mask says where it is."""
    width, height = size
    kept = edges[valid[edges[:, 0]] & valid[edges[:, 1]]]
    points = joints[valid] if valid.any() else joints.reshape(-1, 2)
    extent = float(np.ptp(points, axis=0).max()) if len(points) else 0.0
    radius = max(RADIUS_FRACTION * extent, MIN_RADIUS_PX)
    mask = np.zeros((height, width), dtype=np.uint8)
    for a, b in kept:
        start = tuple(np.rint(joints[a] - 0.5).astype(int))
        end = tuple(np.rint(joints[b] - 0.5).astype(int))
        cv2.line(mask, start, end, 255, max(int(round(2 * radius)), 1), cv2.LINE_AA)
    return mask.astype(np.float32) / 255.0


def subject_layers(
    reference: np.ndarray,
    mask: np.ndarray | None,
    joints: np.ndarray,
    depth: np.ndarray | None,
    valid: np.ndarray,
    edges: np.ndarray,
) -> SubjectLayers:
    """Cut the reference (H,W,3) uint8 by the subject's ``mask`` (H,W) 0..1 (None: a band around
    the skeleton) into bones' layers, given the first frame's joints (J,2), their camera
    ``depth`` (J,) (None: no occlusion order) and ``valid`` (J,) joints of the ``edges``."""
    height, width = reference.shape[:2]
    if mask is None:
        mask = band_mask(joints, valid, edges, (width, height))
    mask = np.clip(mask.astype(np.float32), 0.0, 1.0)
    inside = mask >= 0.5
    # The mask's thickness along each bone: its distance transform at the bone's middle half.
    thickness = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
    start, end = joints[edges[:, 0]], joints[edges[:, 1]]
    samples = start[:, None] + np.array([0.25, 0.5, 0.75])[None, :, None] * (end - start)[:, None]
    cells = np.clip(np.floor(samples).astype(int), 0, [width - 1, height - 1])
    radius = np.maximum(np.median(thickness[cells[..., 1], cells[..., 0]], axis=1), MIN_RADIUS_PX)
    radius = radius + CLAIM_MARGIN_PX
    length = np.sqrt(((end - start) ** 2).sum(-1))
    band = np.minimum(radius, np.maximum(BAND_PER_LENGTH * length, MIN_RADIUS_PX) + CLAIM_MARGIN_PX)
    # Each subject pixel to the nearest-to-camera bone whose band holds it (else the nearest).
    # The band is the mask's thickness, but no wider than a share of the bone's length: the
    # mask's thickness at a small bone inside a blob (a face bone in the head) is the blob's.
    ys, xs = np.nonzero(inside)
    pixels = np.stack([xs, ys], axis=-1).astype(np.float32) + 0.5
    owner = np.full((height, width), -1, dtype=np.int32)
    reach = np.zeros(len(edges), dtype=np.float32)
    for chunk in np.array_split(np.arange(len(pixels)), max(1, len(pixels) // 8192)):
        if len(chunk) == 0:
            continue
        u, _, distance = _segments(pixels[chunk], start, end)
        nearest = distance.argmin(1)
        if depth is None:
            chosen = (distance / band).argmin(1)
            banded = distance[np.arange(len(chunk)), chosen] <= band[chosen]
        else:
            along = depth[edges[:, 0]][None] + u * (depth[edges[:, 1]] - depth[edges[:, 0]])[None]
            key = np.where(distance <= band[None], along, np.inf)
            chosen = key.argmin(1)
            banded = np.isfinite(key[np.arange(len(chunk)), chosen])
        chosen = np.where(banded, chosen, nearest)
        owner[ys[chunk], xs[chunk]] = chosen
        far = distance[np.arange(len(chunk)), chosen]
        np.maximum.at(reach, chosen, far)
    reach = np.where(reach > 0, reach + CLAIM_MARGIN_PX, 0.0).astype(np.float32)
    shared = (edges[:, None, :, None] == edges[None, :, None, :]).any((-1, -2))
    cut = cv2.dilate(
        (mask > 0.02).astype(np.uint8),
        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * CUT_DILATION_PX + 1,) * 2),
    )
    background = cv2.inpaint(
        np.ascontiguousarray(reference[..., :3]), cut, INPAINT_RADIUS_PX, cv2.INPAINT_NS
    )
    median = float(np.median(radius[reach > 0])) if (reach > 0).any() else MIN_RADIUS_PX
    return SubjectLayers(
        edges, owner, reach, radius.astype(np.float32), shared, mask, background, median
    )


def _bone_turns(
    joints_ref: np.ndarray,
    joints: np.ndarray,
    edges: np.ndarray,
    active: np.ndarray,
    radius: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(E,) cos and sin of the angle that turns each bone from ``joints`` (J,2) back to
    ``joints_ref``: the rotation that best carries the ``active`` bones' joints near it (weights
    falling off over ``TURN_SPREAD`` of its ``radius``), so a bone too short to have a reliable
    direction (a face bone, one seen end-on) turns with what is around it, while a long bone's
    own two joints outweigh its neighbours'. No turn where nothing spans ``MIN_TURN_MOMENT``."""
    used = np.unique(edges[active])
    now, then = joints[used].astype(np.float64), joints_ref[used].astype(np.float64)
    _, _, distance = _segments(then, joints_ref[edges[:, 0]], joints_ref[edges[:, 1]])
    spread = np.maximum(TURN_SPREAD * radius.astype(np.float64), MIN_RADIUS_PX)
    weight = np.exp(-0.5 * (distance.T / spread[:, None]) ** 2)  # (E,J)
    total = np.maximum(weight.sum(1), 1e-12)
    now_mean, then_mean = (weight @ now) / total[:, None], (weight @ then) / total[:, None]

    def moment(a: np.ndarray, b: np.ndarray, a_mean: np.ndarray, b_mean: np.ndarray):
        """Weighted sums of (a - mean) . (b - mean) and (a - mean) x (b - mean), per bone."""
        dot = weight @ (a * b).sum(1) - total * (a_mean * b_mean).sum(1)
        cross = weight @ (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
        cross = cross - total * (a_mean[:, 0] * b_mean[:, 1] - a_mean[:, 1] * b_mean[:, 0])
        return dot, cross

    dot, cross = moment(now, then, now_mean, then_mean)
    spans = np.minimum(
        moment(now, now, now_mean, now_mean)[0], moment(then, then, then_mean, then_mean)[0]
    )
    turns = spans >= MIN_TURN_MOMENT
    norm = np.where(turns, np.hypot(dot, cross), 1.0)
    return np.where(turns, dot / norm, 1.0), np.where(turns, cross / norm, 0.0)


def cut_subject(
    reference: np.ndarray, mask: np.ndarray | None, skeleton: SkeletonTrack
) -> SubjectLayers:
    """``subject_layers`` of the reference in the pose of the ``skeleton``'s first frame."""
    in_front = skeleton.in_front[0]
    depth = None if skeleton.depth is None else skeleton.depth[0]
    kept = skeleton.edges[in_front[skeleton.edges].all(1)]
    return subject_layers(reference, mask, skeleton.joints2d[0], depth, in_front, kept)


def carry_subject(
    layers: SubjectLayers,
    joints_ref: np.ndarray,
    joints: np.ndarray,
    depth: np.ndarray | None,
    edges: np.ndarray,
    active: np.ndarray,
    thinning: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of a frame whose joints are ``joints`` (J,2) was in the reference, and
    whether the subject covers it there: (H,W,2) float32 reference coordinates (OpenCV's pixel
    centres) and (H,W) bool. The ``active`` (E,) bones (in front of the camera) are rasterised
    into a depth buffer, nearest wins (``NEIGHBOUR_CLAIM``). ``thinning`` (J,): how many times
    thinner than in the reference the subject looks at each joint now (nearer the camera or
    zoomed in: below 1; None: as thick)."""
    height, width = layers.owner.shape
    source = np.zeros((height, width, 2), dtype=np.float32)
    nearest = np.full((height, width), np.inf, dtype=np.float32)
    thinning = np.ones(len(joints), dtype=np.float32) if thinning is None else thinning
    cosines, sines = _bone_turns(joints_ref, joints, edges, active, layers.thickness)
    for bone in np.flatnonzero(active):
        a, b = edges[bone]
        reach = max(layers.reach[bone], layers.thickness[bone])
        # The capsule's reach in this frame's pixels: thicker where the bone looks bigger.
        box_reach = reach / max(min(float(thinning[a]), float(thinning[b])), 1e-3)
        cur = joints[[a, b]].astype(np.float32)
        low = np.floor(cur.min(0) - box_reach).astype(int)
        high = np.ceil(cur.max(0) + box_reach).astype(int)
        x0, y0 = np.maximum(low, 0)
        x1, y1 = np.minimum(high, [width, height])
        if x0 >= x1 or y0 >= y1:
            continue
        # The bone's capsule in its box: position along it, offset across it.
        direction = cur[1] - cur[0]
        length2 = max(float(direction @ direction), 1e-6)
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cur[0, 0])[None, :]
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cur[0, 1])[:, None]
        u = np.clip((dx * direction[0] + dy * direction[1]) / length2, 0.0, 1.0)
        # The offset across the bone in the reference's pixels.
        ratio = thinning[a] + u * (thinning[b] - thinning[a])
        across_x, across_y = (dx - u * direction[0]) * ratio, (dy - u * direction[1]) * ratio
        rows, cols = np.nonzero(across_x * across_x + across_y * across_y <= reach * reach)
        if len(rows) == 0:
            continue
        u, across_x, across_y = u[rows, cols], across_x[rows, cols], across_y[rows, cols]
        distance = np.sqrt(across_x * across_x + across_y * across_y)
        rows, cols = rows + y0, cols + x0
        # Back to the reference: the same place along the bone, the offset turned with it.
        ref = joints_ref[[a, b]].astype(np.float32)
        cos, sin = float(cosines[bone]), float(sines[bone])
        along = ref[1] - ref[0]
        back_x = ref[0, 0] + u * along[0] + cos * across_x - sin * across_y - 0.5
        back_y = ref[0, 1] + u * along[1] + sin * across_x + cos * across_y - 0.5
        cell_x, cell_y = np.rint(back_x).astype(np.intp), np.rint(back_y).astype(np.intp)
        on_image = (cell_x >= 0) & (cell_x < width) & (cell_y >= 0) & (cell_y < height)
        owned = np.full(len(rows), -1, dtype=np.int32)
        owned[on_image] = layers.owner[cell_y[on_image], cell_x[on_image]]
        banded = (owned >= 0) & (distance <= layers.reach[bone])
        own = banded & (owned == bone)
        neighbour = banded & ~own
        neighbour[neighbour] = layers.adjacent[bone, owned[neighbour]]
        hidden = (owned >= 0) & ~own & ~neighbour & (distance <= layers.thickness[bone])
        key = np.where(own, 0.0, np.where(neighbour, NEIGHBOUR_CLAIM, HIDDEN_CLAIM))
        key = key.astype(np.float32)
        if depth is not None:
            key += depth[a] + u * (depth[b] - depth[a])
        wins = (own | neighbour | hidden) & (key < nearest[rows, cols])
        rows, cols = rows[wins], cols[wins]
        nearest[rows, cols] = key[wins]
        source[rows, cols, 0] = back_x[wins]
        source[rows, cols, 1] = back_y[wins]
    covered = np.isfinite(nearest)
    return source, covered


class WarpedReference(NamedTuple):
    frames: np.ndarray
    """(F,H,W,3) float32 in 0..255: the reference moved frame by frame."""
    region: np.ndarray
    """(F,H,W) float32 in 0..1: where the warp is a guess, which the network may repaint:
    around the moved subject. Outside it a still scene seen by the moving camera is the warp
    exactly, and what the subject uncovered is the backdrop inpainted. Ones when there is no
    skeleton: then nothing says where the subject is."""


def _grow(binary: np.ndarray, radius: float) -> np.ndarray:
    """``binary`` (H,W) grown by ``radius`` pixels with a soft edge: float32 in 0..1."""
    size = 2 * max(int(round(radius)), 1) + 1
    grown = cv2.dilate(
        binary.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    ).astype(np.float32)
    return cv2.GaussianBlur(grown, (0, 0), max(radius / 3.0, 0.5))


def warp_reference(
    reference: np.ndarray,
    num_frames: int,
    skeleton: SkeletonTrack | None,
    camera: SkeletonTrack | None,
    mask: np.ndarray | None = None,
    layers: SubjectLayers | None = None,
    plates: Sequence[np.ndarray] | None = None,
) -> WarpedReference:
    """The reference (H,W,3) uint8 carried through ``num_frames``, with its guess region.

    ``skeleton``: the subject's joints at the reference's size, frame 0 in the reference's pose
    (None: the subject holds still). ``camera``: the camera rectangle's 4 corners (None: the
    camera holds still). ``mask``: the subject's coverage in the reference (H,W) in 0..1 (None:
    a band around the skeleton). ``layers``: ``cut_subject``'s result for this reference and
    skeleton, when several warps share it (``mask`` is then not read). ``plates``: each frame's
    background without the subject (H,W,3) uint8, which the moved subject is laid over instead
    of the reference's background moved by the camera (read only when the subject moves).
    Frame 0 is the reference itself; with neither track, every frame is."""
    height, width = reference.shape[:2]
    reference = np.ascontiguousarray(reference[..., :3])
    frames = np.empty((num_frames, height, width, 3), dtype=np.float32)
    frames[:] = reference
    region = np.ones((num_frames, height, width), dtype=np.float32)
    if skeleton is None and camera is None:
        return WarpedReference(frames, region)
    homographies = (
        np.repeat(np.eye(3)[None], num_frames, axis=0)
        if camera is None
        else camera_homographies(camera.joints2d, camera.in_front)
    )
    if skeleton is None:
        layers = None
    else:
        joints, in_front, depth = skeleton.joints2d, skeleton.in_front, skeleton.depth
        layers = layers or cut_subject(reference, mask, skeleton)
        kept = layers.edges
        if skeleton.pixel_scale is not None:
            thinning = (skeleton.pixel_scale[:1] / skeleton.pixel_scale).astype(np.float32)
    background = reference if layers is None else layers.background
    size = (width, height)
    for t in range(1, num_frames):
        if plates is not None and layers is not None:
            frame = np.asarray(plates[t], dtype=np.float32)
        else:
            frame = cv2.warpPerspective(
                background,
                to_opencv(homographies[t]),
                size,
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            ).astype(np.float32)
        if layers is not None:
            source, covered = carry_subject(
                layers,
                joints[0],
                joints[t],
                None if depth is None else depth[t],
                kept,
                in_front[t][kept].all(1),
                None if skeleton.pixel_scale is None else thinning[t],
            )
            subject = cv2.remap(
                reference,
                source[..., 0],
                source[..., 1],
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            ).astype(np.float32)
            alpha = cv2.remap(layers.mask, source[..., 0], source[..., 1], cv2.INTER_LINEAR)
            alpha = np.where(covered, alpha, 0.0)[..., None]
            frame = alpha * subject + (1.0 - alpha) * frame
            region[t] = _grow(alpha[..., 0] > 0.02, REGION_RADII * layers.radius)
        frames[t] = frame
    if layers is not None:
        region[0] = _grow(layers.mask > 0.02, REGION_RADII * layers.radius)
    return WarpedReference(frames, region)


def shown_frames_only(track: SkeletonTrack, posed: np.ndarray | None) -> SkeletonTrack:
    """Sparse poses: the track with the frames whose skeleton is not shown replaced by a linear
    interpolation between the nearest shown ones (held after the last), so the warp knows no
    more than the skeleton video does. ``posed`` (F,) bool, frame 0 always counts as shown."""
    if posed is None or posed.all():
        return track
    shown = np.flatnonzero(posed | (np.arange(len(posed)) == 0))
    frames = np.arange(len(posed))
    left = shown[np.searchsorted(shown, frames, side="right") - 1]
    right = shown[np.minimum(np.searchsorted(shown, frames, side="left"), len(shown) - 1)]
    span = np.maximum(right - left, 1)
    t = np.clip((frames - left) / span, 0.0, 1.0)[:, None]

    def between(values: np.ndarray | None) -> np.ndarray | None:
        if values is None:
            return None
        weight = t if values.ndim == 2 else t[..., None]
        return (1 - weight) * values[left] + weight * values[right]

    return SkeletonTrack(
        between(track.joints2d),
        track.in_front[left] & track.in_front[right],
        track.edges,
        between(track.depth),
        between(track.pixel_scale),
    )


def flow_base(
    reference: np.ndarray,
    anchor: str,
    skeleton: SkeletonTrack | None,
    rectangle: SkeletonTrack | None,
    num_frames: int,
    posed: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    layers: SubjectLayers | None = None,
    plates: Sequence[np.ndarray] | None = None,
) -> WarpedReference:
    """The flow base of a guidance anchor (or the "blank" no-pose condition): the reference
    moved by what that anchor's skeleton video shows (``ANCHOR_MOTIONS``).

    ``skeleton``: the anchor's own joints (the shot's for "full", the camera-free ones for
    "subject"); ``rectangle``: the camera rectangle, both at the reference's size; ``mask``:
    the subject's coverage in the reference; ``layers``: its cut, shared (``cut_subject``);
    ``plates``: the shot's background plates of these frames (an anchor whose camera holds
    still keeps the first)."""
    moves_subject, moves_camera = ANCHOR_MOTIONS[anchor]
    if plates is not None and not moves_camera:
        plates = [plates[0]] * num_frames
    return warp_reference(
        reference,
        num_frames,
        shown_frames_only(skeleton, posed) if moves_subject and skeleton is not None else None,
        shown_frames_only(rectangle, posed) if moves_camera and rectangle is not None else None,
        mask,
        layers,
        plates,
    )
