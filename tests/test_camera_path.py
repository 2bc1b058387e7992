"""poseanything_blender.camera_path against Blender's own projections, with real bpy.

Ground truths: ``bpy_extras.object_utils.world_to_camera_view`` (what the spec names) and
``Object.calc_matrix_camera`` (the render's viewplane), both evaluated per frame.
"""

import math

import numpy as np
import pytest

from poseanything.engine.contract.camera import project_points
from poseanything.poseanything_blender.camera_path import (
    CameraError,
    RenderSize,
    camera_path,
    gather_render_size,
    read_camera_state,
)

pytestmark = pytest.mark.blender

TOLERANCE_PX = 0.01


def _setup_render(scene, size, percentage=100, pixel_aspect=(1.0, 1.0)):
    render = scene.render
    render.resolution_x, render.resolution_y = size
    render.resolution_percentage = percentage
    render.pixel_aspect_x, render.pixel_aspect_y = pixel_aspect


def _scene_camera(scene, **settings):
    camera_obj = scene.camera
    for name, value in settings.items():
        setattr(camera_obj.data, name, value)
    return camera_obj


def _frustum_points(scene, camera_eval, rng, count=64):
    """World points spread over the view frustum, a margin outside it, and behind the camera.

    Built from ``Camera.view_frame`` corners, so the sampling shares no math with the code under
    test.
    """
    from mathutils import Vector

    top_right, bottom_right, bottom_left, _ = camera_eval.data.view_frame(scene=scene)
    across = rng.uniform(-0.25, 1.25, size=count)
    up = rng.uniform(-0.25, 1.25, size=count)
    distance = rng.uniform(0.5, 20.0, size=count) * rng.choice([1.0, 1.0, 1.0, -1.0], size=count)
    camera_to_world = camera_eval.matrix_world.normalized()
    points = []
    for a, b, d in zip(across.tolist(), up.tolist(), distance.tolist(), strict=True):
        local = bottom_left + a * (bottom_right - bottom_left) + b * (top_right - bottom_right)
        if camera_eval.data.type == "ORTHO":
            local = Vector((local.x, local.y, -d))
        else:
            local = local * (d / -local.z)
        points.append(tuple(camera_to_world @ local))
    return np.array(points)


def _blender_truth(scene, camera_eval, depsgraph, points, width, height):
    """Pixels (top-left origin) and depth from world_to_camera_view and calc_matrix_camera."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    ndc = np.array([tuple(world_to_camera_view(scene, camera_eval, Vector(p))) for p in points])
    view_pixels = np.stack([ndc[:, 0] * width, (1.0 - ndc[:, 1]) * height], axis=-1)

    projection = np.array(
        camera_eval.calc_matrix_camera(
            depsgraph,
            x=width,
            y=height,
            scale_x=scene.render.pixel_aspect_x,
            scale_y=scene.render.pixel_aspect_y,
        )
    )
    view = np.array(camera_eval.matrix_world.normalized().inverted())
    clip = np.c_[points, np.ones(len(points))] @ (projection @ view).T
    clip_ndc = clip[:, :2] / clip[:, 3:]
    render_pixels = np.stack(
        [(clip_ndc[:, 0] + 1.0) * 0.5 * width, (1.0 - clip_ndc[:, 1]) * 0.5 * height], axis=-1
    )
    return view_pixels, render_pixels, ndc[:, 2]


def _track(scene, camera_obj, frames, rng):
    """Per-frame camera matrices, states, sample points and Blender's answers for them."""
    import bpy

    size = gather_render_size(scene)
    frame_before = scene.frame_current
    world, states, points, view_px, render_px, depth = [], [], [], [], [], []
    try:
        for frame in frames:
            scene.frame_set(frame)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            camera_eval = camera_obj.evaluated_get(depsgraph)
            world.append(np.array(camera_eval.matrix_world))
            states.append(read_camera_state(camera_eval))
            frame_points = _frustum_points(scene, camera_eval, rng)
            truth = _blender_truth(
                scene, camera_eval, depsgraph, frame_points, size.width, size.height
            )
            points.append(frame_points)
            view_px.append(truth[0])
            render_px.append(truth[1])
            depth.append(truth[2])
    finally:
        scene.frame_set(frame_before)
    return (
        camera_path(np.array(world), np.array(states), size),
        np.array(points),
        np.array(view_px),
        np.array(render_px),
        np.array(depth),
    )


def _assert_matches_blender(scene, camera_obj, frames=(1,), seed=0):
    path, points, view_px, render_px, depth = _track(
        scene, camera_obj, frames, np.random.default_rng(seed)
    )
    joints2d, our_depth, visible = project_points(
        points, path.K, path.w2c, path.cam_type, path.width, path.height
    )
    np.testing.assert_allclose(joints2d, view_px, atol=TOLERANCE_PX, rtol=0)
    np.testing.assert_allclose(joints2d, render_px, atol=TOLERANCE_PX, rtol=0)
    np.testing.assert_allclose(our_depth, depth, atol=1e-4, rtol=0)
    inside = (
        (view_px[..., 0] >= 0)
        & (view_px[..., 0] < path.width)
        & (view_px[..., 1] >= 0)
        & (view_px[..., 1] < path.height)
    )
    np.testing.assert_array_equal(visible, inside & (depth > 0))
    assert visible.any() and not visible.all()
    assert (depth < 0).any() and not visible[depth < 0].any()
    return path


CASES = {
    "landscape_auto": dict(size=(320, 180)),
    "portrait_auto": dict(size=(180, 320)),
    "square_auto": dict(size=(200, 200), camera=dict(sensor_width=24.0)),
    "landscape_vertical_fit": dict(
        size=(320, 180), camera=dict(sensor_fit="VERTICAL", sensor_height=30.0)
    ),
    "portrait_horizontal_fit": dict(
        size=(180, 320), camera=dict(sensor_fit="HORIZONTAL", sensor_width=20.0)
    ),
    "portrait_vertical_fit": dict(
        size=(180, 320), camera=dict(sensor_fit="VERTICAL", sensor_height=18.0)
    ),
    "landscape_shifted": dict(size=(320, 180), camera=dict(shift_x=0.2, shift_y=-0.15)),
    "portrait_shifted": dict(size=(180, 320), camera=dict(shift_x=-0.1, shift_y=0.3)),
    "pixel_aspect_wide": dict(size=(320, 180), pixel_aspect=(2.0, 1.0)),
    "pixel_aspect_tall_flips_auto_fit": dict(
        size=(320, 180), pixel_aspect=(1.0, 3.0), camera=dict(shift_x=0.1, shift_y=0.2)
    ),
    "pixel_aspect_vertical_fit": dict(
        size=(180, 320), pixel_aspect=(1.5, 1.0), camera=dict(sensor_fit="VERTICAL", shift_y=0.1)
    ),
    "percentage_50": dict(size=(640, 360), percentage=50, camera=dict(shift_x=0.05)),
    "percentage_150_portrait": dict(size=(120, 200), percentage=150),
    "ortho_landscape": dict(size=(320, 180), camera=dict(type="ORTHO", ortho_scale=9.0)),
    "ortho_portrait_shifted": dict(
        size=(180, 320),
        pixel_aspect=(1.0, 2.0),
        camera=dict(type="ORTHO", ortho_scale=5.0, shift_x=0.25, shift_y=-0.1),
    ),
    "ortho_vertical_fit": dict(
        size=(320, 180), camera=dict(type="ORTHO", ortho_scale=4.0, sensor_fit="VERTICAL")
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_projection_matches_blender(fresh_scene, case):
    _setup_render(
        fresh_scene,
        case["size"],
        case.get("percentage", 100),
        case.get("pixel_aspect", (1.0, 1.0)),
    )
    camera_obj = _scene_camera(fresh_scene, **case.get("camera", {}))
    path = _assert_matches_blender(fresh_scene, camera_obj)
    percentage = case.get("percentage", 100)
    assert (path.width, path.height) == tuple(s * percentage // 100 for s in case["size"])
    blender_type = case.get("camera", {}).get("type", "PERSP")
    assert path.cam_type == {"PERSP": "perspective", "ORTHO": "orthographic"}[blender_type]


def test_animated_lens_and_shift_are_read_per_frame(fresh_scene):
    _setup_render(fresh_scene, (180, 320))
    camera_obj = _scene_camera(fresh_scene)
    camera = camera_obj.data
    for frame, lens, shift_x in ((1, 18.0, -0.2), (5, 85.0, 0.3)):
        camera.lens, camera.shift_x = lens, shift_x
        camera.keyframe_insert("lens", frame=frame)
        camera.keyframe_insert("shift_x", frame=frame)
    fresh_scene.frame_set(3)

    path = _assert_matches_blender(fresh_scene, camera_obj, frames=range(1, 6))

    focal = path.K[:, 0, 0]
    assert np.all(np.diff(focal) > 0), "a longer lens gives a larger focal length in pixels"
    np.testing.assert_allclose(focal[[0, -1]] / focal[0], [1.0, 85.0 / 18.0])
    assert fresh_scene.frame_current == 3


def test_scaled_rotated_parented_moving_camera(fresh_scene):
    import bpy

    _setup_render(fresh_scene, (320, 180), pixel_aspect=(1.0, 1.25))
    camera_obj = _scene_camera(fresh_scene, shift_y=0.1)
    parent = bpy.data.objects.new("Rig", None)
    fresh_scene.collection.objects.link(parent)
    parent.rotation_euler = (0.3, -0.2, 1.1)
    parent.scale = (2.0, 2.0, 2.0)
    for frame, x in ((1, 0.0), (4, 3.0)):
        parent.location = (x, -1.0, 0.5)
        parent.keyframe_insert("location", frame=frame)
    camera_obj.parent = parent
    camera_obj.location = (1.0, -4.0, 2.0)
    camera_obj.rotation_euler = (math.radians(80), 0.0, math.radians(-20))
    camera_obj.scale = (0.5, 3.0, 1.7)

    path = _assert_matches_blender(fresh_scene, camera_obj, frames=range(1, 5))

    rotation = path.w2c[:, :3, :3]
    np.testing.assert_allclose(
        rotation @ rotation.swapaxes(1, 2), np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-6
    )
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-6)
    assert not np.allclose(path.w2c[0], path.w2c[-1]), "the parent's motion moves the camera"


def test_render_rounding_follows_the_render_not_the_unscaled_resolution(fresh_scene):
    # 1001x501 at 50% renders 500x250 (aspect 2.0, not 1001/501): the render's viewplane decides.
    _setup_render(fresh_scene, (1001, 501), percentage=50)
    camera_obj = _scene_camera(fresh_scene)
    path, points, _, render_px, _ = _track(fresh_scene, camera_obj, (1,), np.random.default_rng(1))
    joints2d, _, _ = project_points(
        points, path.K, path.w2c, path.cam_type, path.width, path.height
    )
    assert (path.width, path.height) == (500, 250)
    np.testing.assert_allclose(joints2d, render_px, atol=TOLERANCE_PX, rtol=0)


def test_intrinsics_follow_the_paper_formula_for_a_landscape_camera(fresh_scene):
    _setup_render(fresh_scene, (832, 480))
    camera_obj = _scene_camera(fresh_scene, lens=35.0, sensor_width=36.0, shift_x=0.1, shift_y=0.2)
    state = read_camera_state(camera_obj)[None]
    K = camera_path(np.eye(4)[None], state, gather_render_size(fresh_scene)).K[0]
    np.testing.assert_allclose(K[0, 0], 35.0 / 36.0 * 832)
    np.testing.assert_allclose(K[1, 1], K[0, 0])
    np.testing.assert_allclose(K[:2, 2], [832 * (0.5 - 0.1), 0.5 * 480 + 832 * 0.2])


def test_camera_at_origin_maps_to_opencv_axes(fresh_scene):
    camera_obj = _scene_camera(fresh_scene)
    size = gather_render_size(fresh_scene)
    state = read_camera_state(camera_obj)[None]
    # Blender camera at the origin looking down -Z: world +Z is behind, world +Y is up.
    path = camera_path(np.eye(4)[None], state, size)
    np.testing.assert_allclose(path.w2c[0], np.diag([1.0, -1.0, -1.0, 1.0]))


def test_bad_cameras_say_what_to_do(fresh_scene):
    camera_obj = _scene_camera(fresh_scene)
    size = gather_render_size(fresh_scene)
    state = read_camera_state(camera_obj)

    camera_obj.data.type = "PANO"
    with pytest.raises(CameraError, match="PANO cameras cannot be exported; set the camera type"):
        camera_path(np.eye(4)[None], read_camera_state(camera_obj)[None], size)
    with pytest.raises(
        CameraError, match="camera type changes from PERSP to PANO at frame offset 1"
    ):
        camera_path(
            np.repeat(np.eye(4)[None], 2, axis=0),
            np.stack([state, read_camera_state(camera_obj)]),
            size,
        )
    with pytest.raises(CameraError, match="zero scale on an axis at frame offset 0"):
        camera_path(np.diag([1.0, 0.0, 1.0, 1.0])[None], state[None], size)
    with pytest.raises(ValueError, match=r"camera_states has shape \(8,\)"):
        camera_path(np.eye(4)[None], state, size)
    with pytest.raises(ValueError, match=r"camera_world has shape \(0, 4, 4\)"):
        camera_path(np.zeros((0, 4, 4)), state[None][:0], size)
    with pytest.raises(CameraError, match=r"render size 0x0 px is empty"):
        camera_path(np.eye(4)[None], state[None], RenderSize(1, 1, 1, 1.0, 1.0))
    with pytest.raises(CameraError, match="'Cube' is a MESH, not a camera"):
        read_camera_state(fresh_scene.objects["Cube"])
