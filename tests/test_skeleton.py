"""Skeleton graphs, part segmentation and skeleton images (engine side, no bpy)."""

import numpy as np
import pytest
from PIL import Image

from poseanything.engine.contract.skeleton import (
    ENDPOINT_COLOR,
    JUNCTION_COLOR,
    bone_width,
    encode_png,
    joint_degrees,
    part_masks,
    render_skeleton_frames,
    segment_parts,
    skeleton_frames,
)


def biped():
    """A stick biped: pelvis(0) -> chest(1) -> head(2); legs and arms with two bones each."""
    joints = {
        "pelvis": (50, 50), "chest": (50, 30), "head": (50, 22),
        "knee_l": (44, 65), "foot_l": (44, 80), "knee_r": (56, 65), "foot_r": (56, 80),
        "elbow_l": (38, 38), "hand_l": (30, 45), "elbow_r": (62, 38), "hand_r": (70, 45),
    }  # fmt: skip
    names = list(joints)
    pairs = [
        ("pelvis", "chest"), ("chest", "head"),
        ("pelvis", "knee_l"), ("knee_l", "foot_l"), ("pelvis", "knee_r"), ("knee_r", "foot_r"),
        ("chest", "elbow_l"), ("elbow_l", "hand_l"), ("chest", "elbow_r"), ("elbow_r", "hand_r"),
    ]  # fmt: skip
    edges = np.array([(names.index(a), names.index(b)) for a, b in pairs])
    points = np.array([joints[n] for n in names], dtype=float) + 0.5  # pixel centres
    return names, edges, points


def test_biped_parts_are_trunk_and_four_limbs():
    names, edges, points = biped()
    lengths = np.linalg.norm(points[edges[:, 0]] - points[edges[:, 1]], axis=1)
    part = segment_parts(edges, len(names), lengths)
    assert part.max() + 1 == 5
    # Spine and head share one part (the head is merged into the trunk, not into an arm).
    assert part[0] == part[1]
    limbs = [(2, 3), (4, 5), (6, 7), (8, 9)]
    assert all(part[a] == part[b] for a, b in limbs)
    assert len({part[a] for a, _ in limbs} | {part[0]}) == 5


def test_parts_cap_and_determinism_on_a_random_tree():
    rng = np.random.default_rng(0)
    parents = [int(rng.integers(0, j)) for j in range(1, 60)]
    edges = np.array([(p, j) for j, p in enumerate(parents, start=1)])
    part = segment_parts(edges, 60)
    assert part.shape == (59,) and part.max() < 5 and part.min() == 0
    np.testing.assert_array_equal(part, segment_parts(edges, 60))
    # Every part is connected: growing from one bone over shared joints reaches all its bones.
    for p in np.unique(part):
        sub = edges[part == p]
        reached = {int(sub[0, 0])}
        grew = True
        while grew:
            grew = False
            for a, b in sub.tolist():
                if (a in reached) != (b in reached):
                    reached |= {a, b}
                    grew = True
        assert set(sub.ravel().tolist()) <= reached


def test_disconnected_roots_and_single_bone():
    assert segment_parts(np.array([[0, 1]]), 2).tolist() == [0]
    # Seven separate bones: five parts remain, the short ones joined to the largest.
    edges = np.arange(14).reshape(7, 2)
    lengths = np.array([7, 6, 5, 4, 3, 2, 1], float)
    part = segment_parts(edges, 14, lengths)
    assert part.max() == 4 and part[0] == 0
    assert part[5] == part[6] == 0
    assert segment_parts(np.zeros((0, 2), int), 0).shape == (0,)


def test_skeleton_image_style():
    names, edges, points = biped()
    frames = np.repeat(points[None], 3, axis=0)
    in_front = np.ones((3, len(names)), bool)
    images = render_skeleton_frames(frames, in_front, edges, 100, 100, pose_frames=[0, 2])
    assert images.shape == (3, 100, 100, 3) and images.dtype == np.uint8
    assert images[1].max() == 0  # a sparse frame is black
    np.testing.assert_array_equal(images[0], images[2])
    deg = joint_degrees(edges, len(names))
    foot = points[names.index("foot_l")].astype(int)
    pelvis = points[names.index("pelvis")].astype(int)
    assert deg[names.index("foot_l")] == 1 and deg[names.index("pelvis")] == 3
    assert tuple(images[0, foot[1], foot[0]]) == ENDPOINT_COLOR
    assert tuple(images[0, pelvis[1], pelvis[0]]) == JUNCTION_COLOR
    mid = ((points[names.index("knee_l")] + points[names.index("foot_l")]) / 2).astype(int)
    assert tuple(images[0, mid[1], mid[0]]) == (255, 255, 255)
    assert images[0, 95, 5].max() == 0  # background stays black


def test_skeleton_frames_are_drawn_one_at_a_time():
    """Export writes each image as it is drawn; the frames are those of the stacked drawing,
    and a pose frame outside the shot is refused before anything is drawn."""
    names, edges, points = biped()
    frames = np.repeat(points[None], 4, axis=0) + np.arange(4)[:, None, None]
    in_front = np.ones((4, len(names)), bool)
    drawn = skeleton_frames(frames, in_front, edges, 100, 100, pose_frames=[0, 3])
    first = next(drawn)
    images = render_skeleton_frames(frames, in_front, edges, 100, 100, pose_frames=[0, 3])
    np.testing.assert_array_equal(first, images[0])
    np.testing.assert_array_equal(np.stack([first, *drawn]), images)
    with pytest.raises(IndexError, match="pose frame 4 is outside the shot's 4 frames"):
        skeleton_frames(frames, in_front, edges, 100, 100, pose_frames=[0, 4])


def test_offscreen_and_behind_camera_bones():
    joints = np.array([[[-500.0, 50.5], [50.5, 50.5], [50.5, 90.5]]])
    edges = np.array([[0, 1], [1, 2]])
    image = render_skeleton_frames(joints, np.array([[True, True, True]]), edges, 100, 100)[0]
    assert image[50, 10].max() == 255  # the bone to the off-frame joint is clipped, not dropped
    hidden = render_skeleton_frames(joints, np.array([[True, True, False]]), edges, 100, 100)[0]
    assert hidden[70, 50].max() == 0  # a bone to a joint behind the camera is skipped


def test_bone_width_scales_with_resolution():
    assert bone_width(832, 480) == pytest.approx(3.0)
    assert bone_width(1920, 1080) == pytest.approx(3.0 * 1920 / 832)
    assert bone_width(64, 64) == 1.0


def test_part_masks_on_token_grid():
    names, edges, points = biped()
    lengths = np.linalg.norm(points[edges[:, 0]] - points[edges[:, 1]], axis=1)
    part = segment_parts(edges, len(names), lengths)
    masks = part_masks(
        points[None], np.ones((1, len(names)), bool), edges, part, 100, 100, (10, 10), 3
    )
    assert masks.shape == (1, 5, 10, 10)
    leg = part[2]
    assert masks[0, leg, 7, 4]  # the left shin around (44, 72) -> cell (7, 4)
    assert not masks[0, leg, 3, 6]  # the right upper arm's cell is not in the left leg
    assert not masks[0, :, 9, 0].any()


def test_png_round_trip(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(encode_png(image))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), image)
