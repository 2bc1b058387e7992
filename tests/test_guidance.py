"""Decoupled subject/camera CFG: anchor tracks from a shot and the arithmetic of the mix."""

import numpy as np
import pytest
import torch
from synthetic_shots import make_shot

from poseanything.engine.contract.camera import project_points
from poseanything.engine.inference import guidance


def stub_predictions(names):
    """A plain function of the anchor stands in for the transformer: distinct, known values."""
    values = {"camera": 1.0, "subject": 3.0, "full": 7.0}
    return torch.cat([torch.full((2, 4), values[name]) for name in names]), values


@pytest.mark.parametrize(
    ("subject", "camera"), [(1.0, 1.0), (1.5, 1.0), (1.0, 0.0), (1.3, 0.0), (2.0, 0.5), (1.2, 1.7)]
)
def test_combine_matches_the_documented_formula(subject, camera):
    names = guidance.anchors_needed(subject, camera)
    predictions, values = stub_predictions(names)
    mixed = guidance.combine(predictions, names, subject, camera)
    expected = (
        values["camera"]
        + subject * (values["subject"] - values["camera"])
        + camera * (values["full"] - values["subject"])
    )
    assert mixed.shape == (2, 4)
    torch.testing.assert_close(mixed, torch.full((2, 4), expected))


def test_only_anchors_with_weight_are_evaluated():
    assert guidance.anchors_needed(1.0, 1.0) == ("full",)
    assert guidance.anchors_needed(1.0, 0.0) == ("subject",)
    assert guidance.anchors_needed(1.5, 0.0) == ("camera", "subject")
    assert guidance.anchors_needed(1.5, 1.0) == ("camera", "subject", "full")
    assert sum(guidance.anchor_weights(1.37, 0.4).values()) == pytest.approx(1.0)


def test_paper_two_anchor_form_at_zero_camera_guidance():
    names = guidance.anchors_needed(1.4, 0.0)
    predictions, values = stub_predictions(names)
    mixed = guidance.combine(predictions, names, 1.4, 0.0)
    paper = values["camera"] + 1.4 * (values["subject"] - values["camera"])
    torch.testing.assert_close(mixed, torch.full((2, 4), paper))


def test_full_track_is_the_shot():
    shot = make_shot()
    track = guidance.full_track(shot)
    np.testing.assert_array_equal(track.joints2d, shot.joints2d)


def test_subject_track_removes_the_camera_pan():
    shot = make_shot(num_frames=6, pan=0.2)
    subject = guidance.subject_track(shot)
    np.testing.assert_allclose(subject.joints2d[0], shot.joints2d[0])
    # The shot's pan moves the figure in the image; the subject track keeps only the walk.
    focal = shot.camera_path.K[0, 0, 0]
    shift = (shot.joints2d - subject.joints2d)[..., 0]
    expected = -0.2 * np.arange(6)[:, None] * focal / shot.depth
    np.testing.assert_allclose(shift, expected, rtol=1e-6, atol=1e-9)


def test_rectangle_track_moves_with_the_camera_only():
    shot = make_shot(num_frames=5, width=96, height=64, pan=0.1)
    rectangle = guidance.rectangle_track(shot)
    assert rectangle.joints2d.shape == (5, 4, 2)
    assert rectangle.in_front.all()
    first = rectangle.joints2d[0]
    np.testing.assert_allclose(first.min(axis=0), [9.6, 6.4])
    np.testing.assert_allclose(first.max(axis=0), [86.4, 57.6])
    step = np.diff(rectangle.joints2d[..., 0], axis=0)
    focal, depth = shot.camera_path.K[0, 0, 0], guidance.subject_depth(shot)
    np.testing.assert_allclose(step, -0.1 * focal / depth, rtol=1e-6)


def test_unproject_inverts_orthographic_projection():
    K = np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]])
    w2c = np.eye(4)
    w2c[:3, 3] = [0.3, -0.2, 4.0]
    pixels = np.array([[5.0, 6.0], [60.0, 40.0]])
    points = guidance.unproject(pixels, 3.0, K, w2c, "orthographic")
    back, depth, _ = project_points(points[None], K[None], w2c[None], "orthographic", 64, 48)
    np.testing.assert_allclose(back[0], pixels)
    np.testing.assert_allclose(depth[0], 3.0)


def test_static_track_holds_the_first_frame():
    shot = make_shot(num_frames=4)
    static = guidance.camera_track(shot, "static")
    np.testing.assert_array_equal(static.joints2d, np.repeat(shot.joints2d[:1], 4, axis=0))
    with pytest.raises(ValueError, match="camera anchor"):
        guidance.camera_track(shot, "wobble")


def test_camera_anchor_changes_the_result():
    """With a stub model reading the drawn anchor, the camera-only anchor moves the mix."""
    shot = make_shot(num_frames=4, pan=0.2)
    names = guidance.anchors_needed(1.5, 1.0)

    def stub_model(tracks):
        return torch.cat([torch.as_tensor(tracks[n].joints2d.mean(axis=(1,)))[None] for n in names])

    rectangle = guidance.anchor_tracks(shot, names, "rectangle")
    static = guidance.anchor_tracks(shot, names, "static")
    with_rectangle = guidance.combine(stub_model(rectangle), names, 1.5, 1.0)
    with_static = guidance.combine(stub_model(static), names, 1.5, 1.0)
    assert not torch.allclose(with_rectangle, with_static)
    locked = guidance.combine(stub_model(rectangle), names, 1.5, 0.0)
    assert not torch.allclose(with_rectangle, locked)
