"""engine.camera: projection conventions, without bpy."""

import numpy as np
import pytest

from poseanything.engine.contract.camera import project_points


def _pinhole(focal: float, cx: float, cy: float, frames: int = 1) -> np.ndarray:
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    return np.repeat(K[None], frames, axis=0)


def _identity_w2c(frames: int = 1) -> np.ndarray:
    return np.repeat(np.eye(4)[None], frames, axis=0)


def test_perspective_divides_by_depth_and_keeps_opencv_axes():
    points = np.array([[[0.0, 0.0, 2.0], [1.0, 0.5, 2.0], [-1.0, -0.5, 4.0]]])
    joints2d, depth, visible = project_points(
        points, _pinhole(100.0, 320.0, 240.0), _identity_w2c(), "perspective", 640, 480
    )
    np.testing.assert_allclose(joints2d[0], [[320.0, 240.0], [370.0, 265.0], [295.0, 227.5]])
    np.testing.assert_allclose(depth[0], [2.0, 2.0, 4.0])
    assert visible.all()


def test_orthographic_ignores_depth():
    points = np.array([[[1.0, -2.0, 1.0], [1.0, -2.0, 50.0]]])
    joints2d, depth, visible = project_points(
        points, _pinhole(10.0, 50.0, 40.0), _identity_w2c(), "orthographic", 100, 80
    )
    np.testing.assert_allclose(joints2d[0], [[60.0, 20.0], [60.0, 20.0]])
    np.testing.assert_allclose(depth[0], [1.0, 50.0])
    assert visible.all()


@pytest.mark.parametrize("cam_type", ["perspective", "orthographic"])
def test_points_behind_or_on_the_camera_are_not_visible_but_finite(cam_type):
    points = np.array([[[0.0, 0.0, -1.0], [0.1, 0.1, 0.0], [0.0, 0.0, 1.0]]])
    joints2d, depth, visible = project_points(
        points, _pinhole(100.0, 320.0, 240.0), _identity_w2c(), cam_type, 640, 480
    )
    assert visible[0].tolist() == [False, False, True]
    assert np.isfinite(joints2d).all()
    np.testing.assert_allclose(depth[0], [-1.0, 0.0, 1.0])


def test_frame_edges_are_half_open():
    # u = 100 * x + 50 on a 100 px wide image: x = -0.5 -> 0 (in), x = 0.5 -> 100 (out).
    xs = np.array([-0.5, -0.50001, 0.49999, 0.5])
    points = np.stack([xs, np.zeros(4), np.ones(4)], axis=-1)[None]
    _, _, visible = project_points(
        points, _pinhole(100.0, 50.0, 50.0), _identity_w2c(), "perspective", 100, 100
    )
    assert visible[0].tolist() == [True, False, True, False]
    vertical = points[..., [1, 0, 2]]
    _, _, visible = project_points(
        vertical, _pinhole(100.0, 50.0, 50.0), _identity_w2c(), "perspective", 100, 100
    )
    assert visible[0].tolist() == [True, False, True, False]


def test_each_frame_uses_its_own_camera():
    points = np.zeros((2, 1, 3))
    w2c = _identity_w2c(2)
    w2c[0, 2, 3] = 2.0  # origin 2 in front of camera 0
    w2c[1, :3, :3] = np.diag([1.0, -1.0, -1.0])  # camera 1 turned around ...
    w2c[1, :3, 3] = [0.5, 0.0, 1.0]  # ... and shifted: origin at x = 0.5, depth 1
    K = _pinhole(100.0, 320.0, 240.0, frames=2)
    K[1, 0, 0] = 200.0
    joints2d, depth, visible = project_points(points, K, w2c, "perspective", 640, 480)
    np.testing.assert_allclose(joints2d[:, 0], [[320.0, 240.0], [420.0, 240.0]])
    np.testing.assert_allclose(depth[:, 0], [2.0, 1.0])
    assert visible.all()


def test_bad_input_says_what_is_wrong():
    points = np.zeros((3, 2, 3))
    with pytest.raises(ValueError, match=r"K has shape \(1, 3, 3\); expected \(3, 3, 3\)"):
        project_points(points, _pinhole(1.0, 0.0, 0.0), _identity_w2c(3), "perspective", 4, 4)
    with pytest.raises(ValueError, match=r"w2c has shape"):
        project_points(points, _pinhole(1.0, 0.0, 0.0, 3), _identity_w2c(), "perspective", 4, 4)
    with pytest.raises(ValueError, match=r"points has shape \(3, 2\)"):
        project_points(points[..., 0], _pinhole(1.0, 0.0, 0.0, 3), _identity_w2c(3), "x", 4, 4)
    with pytest.raises(ValueError, match="cam_type is 'panoramic'"):
        project_points(points, _pinhole(1.0, 0.0, 0.0, 3), _identity_w2c(3), "panoramic", 4, 4)
    with pytest.raises(ValueError, match="image size is 0x4"):
        project_points(points, _pinhole(1.0, 0.0, 0.0, 3), _identity_w2c(3), "perspective", 0, 4)
