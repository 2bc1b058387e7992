"""A Blender camera over a frame range, as per-frame OpenCV intrinsics and extrinsics.

Two layers, as elsewhere on the bpy side: ``read_camera_state`` and ``gather_render_size`` read
bpy (cheap attribute reads, called inside the motion sampler's frame loop), and ``camera_path``
turns the gathered arrays into an ``engine.shot.CameraPath`` with numpy, all frames at once.

The intrinsics follow Blender's render (``BKE_camera_params_compute_viewplane``): the frame's
aspect is that of the final pixel size (resolution times percentage, rounded down as Blender
does) times the pixel aspect. ``bpy_extras.object_utils.world_to_camera_view`` uses the
resolution before the percentage instead, so the two differ by a fraction of a pixel only when
the percentage does not divide the resolution evenly; the render is what the skeleton images
must line up with.
"""

from dataclasses import dataclass

import numpy as np

from ..engine.contract.shot import CameraPath
from ..engine.errors import BadInput

# Columns of a camera state row, in order; enum settings are stored as their index.
CAMERA_STATE_FIELDS = (
    "type",
    "sensor_fit",
    "lens",
    "ortho_scale",
    "shift_x",
    "shift_y",
    "sensor_width",
    "sensor_height",
)
CAMERA_TYPES = ("PERSP", "ORTHO", "PANO", "CUSTOM")
SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")
_CAM_TYPE_NAMES = {"PERSP": "perspective", "ORTHO": "orthographic"}
_COLUMN = {name: index for index, name in enumerate(CAMERA_STATE_FIELDS)}

# Blender camera space (looking down -Z, +Y up) to OpenCV camera space (down +Z, +Y down).
_BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


class CameraError(BadInput):
    """A camera (or render size) a shot cannot be seen through; the message says what to set.

    Arrays of the wrong shape stay ``ValueError``: they are our bug, not the user's camera."""


@dataclass(frozen=True)
class RenderSize:
    """The scene's output size settings, which set the image the camera's frame maps onto."""

    resolution_x: int
    resolution_y: int
    resolution_percentage: int
    pixel_aspect_x: float
    pixel_aspect_y: float

    @property
    def width(self) -> int:
        """Final image width in pixels, rounded down as Blender's render does."""
        return self.resolution_x * self.resolution_percentage // 100

    @property
    def height(self) -> int:
        """Final image height in pixels, rounded down as Blender's render does."""
        return self.resolution_y * self.resolution_percentage // 100


def gather_render_size(scene) -> RenderSize:
    """Read once per export: output size is not animated, unlike the camera's own settings."""
    render = scene.render
    return RenderSize(
        resolution_x=render.resolution_x,
        resolution_y=render.resolution_y,
        resolution_percentage=render.resolution_percentage,
        pixel_aspect_x=render.pixel_aspect_x,
        pixel_aspect_y=render.pixel_aspect_y,
    )


def read_camera_state(camera_obj) -> np.ndarray:
    """The camera data settings K depends on, as one row laid out by ``CAMERA_STATE_FIELDS``.

    Pass the evaluated object at the current frame, so animated lens, shift or sensor values
    are the frame's own. Attribute reads only: the motion sampler calls this every frame.
    """
    if camera_obj.type != "CAMERA":
        raise CameraError(
            f"object {camera_obj.name!r} is a {camera_obj.type}, not a camera; pick a camera object"
        )
    camera = camera_obj.data
    return np.array(
        (
            CAMERA_TYPES.index(camera.type),
            SENSOR_FITS.index(camera.sensor_fit),
            camera.lens,
            camera.ortho_scale,
            camera.shift_x,
            camera.shift_y,
            camera.sensor_width,
            camera.sensor_height,
        ),
        dtype=np.float64,
    )


def camera_path(
    camera_world: np.ndarray, camera_states: np.ndarray, render: RenderSize
) -> CameraPath:
    """Per-frame K and OpenCV w2c from the camera's world matrices and data states.

    ``camera_world`` (F,4,4) is the camera object's ``matrix_world`` per frame as
    ``np.array(matrix)`` lays it out (translation in ``[:, :3, 3]``); ``camera_states`` (F,N)
    are ``read_camera_state`` rows. Orthographic K maps camera-space x, y (scene units) to pixels
    with no perspective divide; see ``engine.camera``.
    """
    camera_world = np.asarray(camera_world, dtype=np.float64)
    camera_states = np.asarray(camera_states, dtype=np.float64)
    frames = camera_world.shape[0] if camera_world.ndim == 3 else 0
    if frames == 0 or camera_world.shape != (frames, 4, 4):
        raise ValueError(
            f"camera_world has shape {camera_world.shape}; expected (frames, 4, 4), frames >= 1"
        )
    if camera_states.shape != (frames, len(CAMERA_STATE_FIELDS)):
        raise ValueError(
            f"camera_states has shape {camera_states.shape}; expected "
            f"({frames}, {len(CAMERA_STATE_FIELDS)}), one read_camera_state row per frame"
        )
    if render.width < 1 or render.height < 1:
        raise CameraError(
            f"render size {render.width}x{render.height} px is empty; raise the resolution or "
            "its percentage"
        )
    return CameraPath(
        K=_intrinsics(camera_states, render),
        w2c=_world_to_opencv_camera(camera_world),
        cam_type=_cam_type(camera_states),
        width=render.width,
        height=render.height,
    )


def _cam_type(camera_states: np.ndarray) -> str:
    types = camera_states[:, _COLUMN["type"]].astype(int)
    changes = np.flatnonzero(types != types[0])
    if changes.size:
        raise CameraError(
            f"the camera type changes from {CAMERA_TYPES[types[0]]} to "
            f"{CAMERA_TYPES[types[changes[0]]]} at frame offset {changes[0]}; a shot needs one "
            "camera type, so split the shot there"
        )
    name = CAMERA_TYPES[types[0]]
    if name not in _CAM_TYPE_NAMES:
        raise CameraError(
            f"{name} cameras cannot be exported; set the camera type to Perspective or Orthographic"
        )
    return _CAM_TYPE_NAMES[name]


def _intrinsics(camera_states: np.ndarray, render: RenderSize) -> np.ndarray:
    """K per frame, from the frame extent Blender's viewplane gives each camera state.

    ``extent`` is the camera frame's size along the fitted sensor axis: at unit distance for a
    perspective camera (sensor / lens), in scene units for an orthographic one (ortho scale).
    Shift is measured in that extent on both axes.
    """
    column = {name: camera_states[:, index] for name, index in _COLUMN.items()}
    width, height = render.width, render.height
    frame_aspect = (width * render.pixel_aspect_x) / (height * render.pixel_aspect_y)
    fit = column["sensor_fit"].astype(int)
    vertical_sensor = fit == SENSOR_FITS.index("VERTICAL")
    fit_horizontal = (fit == SENSOR_FITS.index("HORIZONTAL")) | (
        (fit == SENSOR_FITS.index("AUTO")) & (frame_aspect >= 1.0)
    )
    sensor = np.where(vertical_sensor, column["sensor_height"], column["sensor_width"])
    orthographic = column["type"].astype(int) == CAMERA_TYPES.index("ORTHO")
    extent = np.where(orthographic, column["ortho_scale"], sensor / column["lens"])
    extent_x = np.where(fit_horizontal, extent, extent * frame_aspect)
    extent_y = np.where(fit_horizontal, extent / frame_aspect, extent)

    K = np.zeros((camera_states.shape[0], 3, 3))
    K[:, 0, 0] = width / extent_x
    K[:, 1, 1] = height / extent_y
    K[:, 0, 2] = width * (0.5 - column["shift_x"] * extent / extent_x)
    K[:, 1, 2] = height * (0.5 + column["shift_y"] * extent / extent_y)
    K[:, 2, 2] = 1.0
    return K


def _world_to_opencv_camera(camera_world: np.ndarray) -> np.ndarray:
    """Invert the scale-free camera matrix, then flip to OpenCV axes.

    Blender's view ignores the camera object's scale: it normalises the matrix's axes first
    (``normalize_m4``, as ``world_to_camera_view`` does with ``matrix_world.normalized()``).
    """
    axis_lengths = np.linalg.norm(camera_world[:, :3, :3], axis=1)
    zero_scale = np.flatnonzero((axis_lengths < 1e-12).any(axis=1))
    if zero_scale.size:
        raise CameraError(
            f"the camera has zero scale on an axis at frame offset {zero_scale[0]}, so it has no "
            "view direction; give the camera (and its parents) a non-zero scale"
        )
    camera_to_world = camera_world.copy()
    camera_to_world[:, :3, :3] /= axis_lengths[:, None, :]
    return _BLENDER_TO_OPENCV @ np.linalg.inv(camera_to_world)
