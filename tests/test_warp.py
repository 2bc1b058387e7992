"""engine.warp: the reference moved along the skeleton and the camera, and the pipeline and
trainer built on it (the default model's flow base)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import TINY_PIPELINE, one_torch_thread, tiny_pipeline  # noqa: F401

from poseanything.engine.contract.shot import read_reference, read_shot
from poseanything.engine.inference import warp
from poseanything.engine.inference.guidance import (
    RECTANGLE_EDGES,
    SkeletonTrack,
    full_track,
    rectangle_track,
)
from poseanything.engine.inference.pipeline import (
    PoseAnythingPipeline,
    RenderSettings,
    compose_detail,
    fit_image,
)
from poseanything.engine.inference.sampling import rebase_velocity
from poseanything.engine.training.evaluate import load_clip, warp_along_shot

EVAL_CLIP = Path(__file__).parent / "data" / "eval_clip"
SIZE = 48
EDGES = np.array([[0, 1]])


def scene_with_a_bar(center_x: float = 16.0) -> np.ndarray:
    """A grey gradient backdrop with a red bar along the bone (x = center_x, y 14..34)."""
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    image[..., 1] = np.linspace(40, 200, SIZE, dtype=np.uint8)[None, :]
    image[..., 2] = 90
    x = int(center_x)
    image[14:34, x - 2 : x + 2] = (230, 20, 20)
    return image


def bone_track(offsets: list[tuple[float, float]], x: float = 16.0) -> SkeletonTrack:
    """A one-bone skeleton (pixel centres of the bar) shifted by ``offsets`` frame by frame."""
    joints = np.array([[[x, 14.0], [x, 34.0]]]) + np.array(offsets)[:, None, :]
    return SkeletonTrack(joints, np.ones(joints.shape[:2], dtype=bool), EDGES)


def rectangle(shifts: list[float]) -> SkeletonTrack:
    corners = np.array([[8.0, 8.0], [40.0, 8.0], [40.0, 40.0], [8.0, 40.0]])
    joints = corners[None] + np.array([[dx, 0.0] for dx in shifts])[:, None, :]
    return SkeletonTrack(joints, np.ones(joints.shape[:2], dtype=bool), RECTANGLE_EDGES)


def test_without_motion_every_frame_is_the_reference():
    reference = scene_with_a_bar()
    still, everywhere = warp.warp_reference(reference, 3, None, None)
    assert still.shape == (3, SIZE, SIZE, 3) and (still == reference).all()
    assert (everywhere == 1).all()  # no skeleton: nothing says where the subject is
    held = warp.warp_reference(reference, 3, bone_track([(0, 0)] * 3), rectangle([0, 0, 0])).frames
    assert np.abs(held - reference).mean() < 1.0
    assert (held[0] == reference).all()


def test_the_subject_follows_its_bone_and_leaves_background_behind():
    reference = scene_with_a_bar(16)
    moved = warp.warp_reference(reference, 2, bone_track([(0, 0), (12, 0)]), None).frames[1]
    expected = scene_with_a_bar(28)
    body = (slice(18, 30), slice(27, 29))
    assert np.abs(moved[body] - expected[body]).max() < 12  # the bar arrived
    vacated = moved[18:30, 15:17]
    assert vacated[..., 0].max() < 120  # no red ghost where the bar was: filled backdrop
    far = (slice(0, 8), slice(0, SIZE))
    assert np.abs(moved[far] - reference[far]).max() < 1  # the backdrop stayed


def test_the_guess_region_covers_the_moved_subject_only():
    reference = scene_with_a_bar(16)
    region = warp.warp_reference(reference, 2, bone_track([(0, 0), (12, 0)]), None).region[1]
    assert region[24, 28] > 0.95  # the bar's new place
    assert region[24, 16] < 0.01  # the backdrop it uncovered is inpainted, not left to guess
    assert region[2, 2] < 0.01 and region[24, 45] < 0.01  # far from it: the warp is exact


def test_a_turning_bone_turns_its_pixels():
    reference = scene_with_a_bar(24)
    # The bone turns 90 degrees about its head at (24, 14): its tail goes to (4, 14).
    joints = np.array([[[24.0, 14.0], [24.0, 34.0]], [[24.0, 14.0], [4.0, 14.0]]])
    track = SkeletonTrack(joints, np.ones((2, 2), dtype=bool), EDGES)
    turned = warp.warp_reference(reference, 2, track, None).frames[1]
    assert turned[14, 8:20, 0].min() > 150  # red now lies along the row
    assert turned[28:33, 23:25, 0].max() < 120  # and no longer down the column


def test_the_camera_rectangle_moves_the_whole_backdrop():
    reference = scene_with_a_bar()
    panned = warp.warp_reference(reference, 2, None, rectangle([0.0, -4.0])).frames[1]
    # The world moved 4 px left in the image: what was at x + 4 is now at x.
    assert np.abs(panned[:, 8:40] - reference[:, 12:44]).max() < 1


def test_camera_homographies_take_each_frames_rectangle_back_to_the_first():
    truth = np.array([[1.1, 0.05, 3.0], [-0.02, 0.95, -2.0], [1e-3, -5e-4, 1.0]])
    first = np.array([[8.0, 8.0], [40.0, 10.0], [38.0, 41.0], [7.0, 39.0]])
    moved = np.c_[first, np.ones(4)] @ np.linalg.inv(truth).T
    corners = np.stack([first, moved[:, :2] / moved[:, 2:]])
    fitted = warp.camera_homographies(corners, np.ones((2, 4), dtype=bool))
    assert np.allclose(fitted[0], np.eye(3)) and np.allclose(fitted[1], truth, atol=1e-5)
    behind = warp.camera_homographies(corners, np.array([[True] * 4, [True, False, True, True]]))
    assert np.allclose(behind[1], np.eye(3))  # a corner behind the camera: no fit


def two_bars(front: str) -> tuple[np.ndarray, np.ndarray, SkeletonTrack]:
    """A red bar (bone 0, x 14..18) and a blue bar (bone 1, x 30..34) on grey; in frame 1 the
    red one slides right over the blue one, ``front`` says which is nearer the camera."""
    image = np.full((SIZE, SIZE, 3), 120, dtype=np.uint8)
    image[10:38, 14:19] = (230, 20, 20)
    image[10:38, 30:35] = (20, 20, 230)
    mask = np.zeros((SIZE, SIZE), dtype=np.float32)
    mask[10:38, 14:19] = mask[10:38, 30:35] = 1.0
    first = [[16.5, 10.0], [16.5, 38.0], [32.5, 10.0], [32.5, 38.0]]
    joints = np.array([first, [[32.5, 10.0], [32.5, 38.0], [32.5, 10.0], [32.5, 38.0]]])
    red, blue = (1.0, 2.0) if front == "red" else (2.0, 1.0)
    depth = np.array([[red, red, blue, blue]] * 2)
    track = SkeletonTrack(joints, np.ones((2, 4), dtype=bool), np.array([[0, 1], [2, 3]]), depth)
    return image, mask, track


@pytest.mark.parametrize("front", ["red", "blue"])
def test_the_bone_nearer_the_camera_covers_the_farther_one(front):
    image, mask, track = two_bars(front)
    frame = warp.warp_reference(image, 2, track, None, mask).frames[1]
    crossing = frame[14:34, 31:34]
    channel = 0 if front == "red" else 2
    assert (crossing[..., channel] > 200).mean() > 0.95  # the nearer bar, not a blend of both
    assert (frame[14:34, 14:19, 0] < 160).all()  # where red was: background, no red ghost


def test_the_subjects_thickness_is_the_masks():
    """A bar far thicker than a fixed share of the skeleton travels whole with its bone."""
    image = np.full((SIZE, SIZE, 3), 60, dtype=np.uint8)
    image[12:36, 8:22] = (200, 180, 40)
    mask = np.zeros((SIZE, SIZE), dtype=np.float32)
    mask[12:36, 8:22] = 1.0
    track = bone_track([(0, 0), (16, 0)], x=15.0)
    track = SkeletonTrack(track.joints2d + [0, 0], track.in_front, EDGES)
    moved = warp.warp_reference(image, 2, track, None, mask).frames[1]
    assert (np.abs(moved[14:34, 25:37] - (200, 180, 40)).max(-1) < 20).mean() > 0.95
    band = warp.warp_reference(image, 2, track, None).frames[1]  # no mask: a thin band
    assert (np.abs(band[14:34, 25:37] - (200, 180, 40)).max(-1) < 20).mean() < 0.5


def test_a_bone_that_comes_nearer_the_camera_carries_a_thicker_subject():
    """A bar 6 px wide whose bone comes to half its distance from the camera is 12 px wide:
    thickness scales with the pixels a world unit spans there, as its length does."""
    image = np.full((SIZE, SIZE, 3), 60, dtype=np.uint8)
    image[20:28, 21:27] = (200, 180, 40)
    mask = np.zeros((SIZE, SIZE), dtype=np.float32)
    mask[20:28, 21:27] = 1.0
    joints = np.array([[[24.0, 20.0], [24.0, 28.0]], [[24.0, 16.0], [24.0, 32.0]]])
    scale = np.array([[10.0, 10.0], [20.0, 20.0]])  # pixels per unit: twice as near
    track = SkeletonTrack(joints, np.ones((2, 2), dtype=bool), EDGES, None, scale)
    near = warp.warp_reference(image, 2, track, None, mask).frames[1]
    yellow = np.abs(near - (200, 180, 40)).max(-1) < 70  # nearer yellow than the grey
    widths = yellow[18:30].sum(1)
    assert np.abs(widths - 12).max() <= 1, widths
    as_before = warp.warp_reference(image, 2, replace(track, pixel_scale=None), None, mask)
    assert (np.abs(as_before.frames[1] - (200, 180, 40)).max(-1) < 70)[18:30].sum(1).max() <= 7


def test_with_plates_the_subject_moves_over_each_frames_plate():
    """With background plates, the backdrop of frame t is plate t (the camera's parallax and
    what the subject uncovers, as the scene has them), the moved subject laid over it; frame 0
    stays the reference."""
    reference = scene_with_a_bar(16)
    mask = np.zeros((SIZE, SIZE), dtype=np.float32)
    mask[14:34, 14:18] = 1.0
    plate = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    plate[..., 2] = np.linspace(30, 220, SIZE, dtype=np.uint8)[:, None]  # not the reference's
    plates = [np.zeros_like(plate), plate]
    track = bone_track([(0, 0), (12, 0)])
    frames = warp.warp_reference(reference, 2, track, rectangle([0, 5]), mask, plates=plates)
    assert (frames.frames[0] == reference).all()
    moved = frames.frames[1]
    assert np.abs(moved[18:30, 27:29] - (230, 20, 20)).max() < 12  # the bar arrived
    backdrop = np.ones((SIZE, SIZE), dtype=bool)
    backdrop[12:36, 24:32] = False
    assert np.abs(moved[backdrop] - plate[backdrop]).max() < 1  # uncovered and far: the plate
    held = warp.flow_base(reference, "subject", track, None, 2, mask=mask, plates=plates).frames
    assert np.abs(held[1][backdrop] - 0).max() < 1  # a camera held still keeps plate 0


def test_uncovered_background_continues_the_backdrop():
    """What a moving subject uncovers is the backdrop filled in (inpainted), no smear of it."""
    image, mask, track = two_bars("red")
    frame = warp.warp_reference(image, 2, track, None, mask).frames[1]
    assert np.abs(frame[12:36, 14:19] - 120).max() < 12


def test_sparse_poses_interpolate_between_the_shown_frames():
    track = bone_track([(0, 0), (4, 0), (8, 0), (2, 0), (10, 0), (7, 0)])
    posed = np.array([True, False, False, True, False, False])
    shown = warp.shown_frames_only(track, posed).joints2d[:, 0, 0] - 16.0
    assert np.allclose(shown, [0, 2 / 3, 4 / 3, 2, 2, 2])  # held after the last shown frame
    assert warp.shown_frames_only(track, None) is track


def test_each_anchor_base_moves_what_its_skeleton_video_shows():
    reference = scene_with_a_bar()
    skeleton, camera = bone_track([(0, 0), (6, 0)]), rectangle([0.0, -4.0])
    bases = {
        a: warp.flow_base(reference, a, skeleton, camera, 2).frames[1] for a in warp.ANCHOR_MOTIONS
    }

    def moved(skeleton, camera):
        return warp.warp_reference(reference, 2, skeleton, camera).frames[1]

    assert (bases["blank"] == reference).all()
    assert np.allclose(bases["camera"], moved(None, camera))
    assert np.allclose(bases["subject"], moved(skeleton, None))
    assert np.allclose(bases["full"], moved(skeleton, camera))
    assert len({bases[a].tobytes() for a in bases}) == 4


def test_rebased_velocity_moves_the_clean_estimate_to_the_base():
    latents = torch.randn(1, 2, 3, 4, 4)
    velocity = torch.randn_like(latents)
    offsets = torch.randn_like(latents)
    offsets[:, :, 0] = 0
    timestep = torch.tensor([[0.0, 400.0, 700.0]])
    sigma = timestep[:, None, :, None, None] / 1000
    rebased = rebase_velocity(velocity, offsets, timestep)
    clean, clean_rebased = latents - sigma * velocity, latents - sigma * rebased
    assert torch.allclose(clean_rebased[:, :, 1:], (clean + offsets)[:, :, 1:], atol=1e-5)
    assert torch.equal(rebased[:, :, 0], velocity[:, :, 0])


def warp_pipeline() -> PoseAnythingPipeline:
    """A tiny pipeline that predicts no change from its flow base (output layer zeroed)."""
    config = replace(TINY_PIPELINE, reference_source=0.5, flow_base="warp")  # 8-frame windows
    pipeline = tiny_pipeline(config)
    pipeline.model.register_to_config(prediction="reference_delta")
    torch.nn.init.zeros_(pipeline.model.proj_out.weight)
    torch.nn.init.zeros_(pipeline.model.proj_out.bias)
    return pipeline


def test_every_window_starts_and_ends_at_the_warped_shot_reference():
    pipeline = warp_pipeline()
    clip = load_clip(EVAL_CLIP, *pipeline.working_size(load_clip(EVAL_CLIP, 32, 32).shot))
    settings = RenderSettings(upscale=False, ptcm=False)
    frames = pipeline.render(clip.shot, clip.reference, settings).frames
    reference = fit_image(clip.reference, *frames.shape[2:0:-1])
    base = np.rint(warp_along_shot(clip.shot, reference)).astype(np.uint8)
    assert np.abs(base[1:].astype(float) - base[:1]).mean() > 1.0  # the pose moves the base
    expected = pipeline.decode_latents(pipeline.encode_videos([base]))
    assert np.abs(frames.astype(float) - np.rint(expected)).max() <= 1.0
    blank = pipeline.render(clip.shot, clip.reference, replace(settings, blank_pose=True)).frames
    repeated = np.repeat(reference[None], len(frames), 0)
    still = pipeline.decode_latents(pipeline.encode_videos([repeated]))
    assert np.abs(blank.astype(float) - np.rint(still)).max() <= 1.0  # no pose: the reference


def test_a_warp_model_refuses_a_flow_from_pure_noise():
    with pytest.raises(ValueError, match="reference_source"):
        replace(TINY_PIPELINE, flow_base="warp")
    with pytest.raises(ValueError, match="flow_base"):
        replace(TINY_PIPELINE, reference_source=0.5, flow_base="sideways")


def test_at_the_shots_size_the_warp_stands_outside_the_guess_region():
    """With ``warp_long_side`` the warp runs at the shot's size and frame 1 is the reference
    exactly; a network that changes nothing from its flow base changes nothing at all (the
    codec's blur never reaches the frames); ``compose_detail`` below adds a change inside the
    guess region only."""
    pipeline = warp_pipeline()
    pipeline.config = replace(pipeline.config, warp_long_side=1280)
    shot = read_shot(EVAL_CLIP)
    reference = read_reference(EVAL_CLIP)
    frames = pipeline.render(shot, reference, RenderSettings()).frames
    assert frames.shape[1:3] == (shot.height, shot.width)
    assert (frames[0] == fit_image(reference, shot.width, shot.height)).all()
    warped = warp.flow_base(
        fit_image(reference, shot.width, shot.height),
        "full",
        full_track(shot),
        rectangle_track(shot),
        shot.num_frames,
    )
    assert (warped.region[1:] < 1e-3).mean() > 0.1  # the warp alone stands outside
    assert np.abs(frames.astype(float) - warped.frames).max() <= 1.0


def test_compose_detail_adds_only_the_networks_change_from_its_base():
    rng = np.random.default_rng(0)
    warped = rng.uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    region = np.zeros((2, 16, 16), dtype=np.float32)
    region[:, 4:12, 4:12] = 1.0
    base = rng.uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    composed = compose_detail(warped, region, np.full_like(base, 10.0))
    assert np.allclose(composed[region == 0], warped[region == 0])
    inside = region == 1
    assert np.allclose(composed[inside], np.clip(warped[inside] + 10.0, 0, 255), atol=1e-3)


def test_later_windows_warp_the_shots_own_reference():
    """A long shot's windows all start from the shot's reference moved to their frames, never
    from a generated frame, so blur and drift do not compound window by window."""
    pipeline = warp_pipeline()
    shot = read_shot(EVAL_CLIP)
    plan = pipeline.plan(shot, RenderSettings(upscale=False))
    assert len(plan.starts) > 1 and plan.anchors == ("full",)
    inputs = pipeline.prepare(shot, read_reference(EVAL_CLIP), plan)
    start = plan.starts[1]
    frames = np.arange(start, start + plan.length)
    (base,) = pipeline.flow_bases(inputs, frames, None)
    whole = warp_along_shot(shot, fit_image(read_reference(EVAL_CLIP), plan.width, plan.height))
    np.testing.assert_allclose(base.frames, whole[frames], atol=1e-3)


def test_without_the_network_the_video_is_the_warp_window_by_window():
    """``network`` off: each window is the warp of the shot's reference at the shot's size,
    the same frames as warping the whole shot at once; progress counts one step a window."""
    pipeline = tiny_pipeline(
        replace(TINY_PIPELINE, reference_source=0.5, flow_base="warp", warp_long_side=1280)
    )
    pipeline.config = replace(pipeline.config, network=False)
    shot, reference = read_shot(EVAL_CLIP), read_reference(EVAL_CLIP)
    progress = []
    result = pipeline.render(shot, reference, RenderSettings(), callback=progress.append)
    windows = len(result.report["windows"])
    assert windows > 1 and result.report["settings"]["steps"] == 0
    assert [(p.step, p.total, p.stage) for p in progress] == [
        (i, windows, "warp") for i in range(1, windows + 1)
    ]
    assert progress[-1].preview().shape == (shot.height, shot.width, 3)
    whole = warp_along_shot(shot, fit_image(reference, shot.width, shot.height))
    assert (result.frames[0] == fit_image(reference, shot.width, shot.height)).all()
    assert np.abs(result.frames[1:].astype(float) - whole[1:]).max() <= 1.0


def test_a_render_with_background_plates_lays_the_subject_over_them_window_by_window():
    """``render(background=...)``: every window's backdrop is the shot's plate of that frame,
    the same frames as warping the whole shot over them at once."""
    pipeline = tiny_pipeline(
        replace(TINY_PIPELINE, reference_source=0.5, flow_base="warp", warp_long_side=1280)
    )
    pipeline.config = replace(pipeline.config, network=False)
    shot, reference = read_shot(EVAL_CLIP), read_reference(EVAL_CLIP)
    size = (shot.height, shot.width, 3)
    plates = {f: np.full(size, 5 * f, dtype=np.uint8) for f in range(shot.num_frames)}
    result = pipeline.render(shot, reference, RenderSettings(), background=plates)
    fitted = fit_image(reference, shot.width, shot.height)
    whole = warp_along_shot(shot, fitted, background=plates)
    assert len(result.report["windows"]) > 1
    assert (result.frames[0] == fitted).all()
    assert np.abs(result.frames[1:].astype(float) - whole[1:]).max() <= 1.0
    corner = result.frames[1:, :4, :4].reshape(len(result.frames) - 1, -1)
    assert (corner == 5 * np.arange(1, shot.num_frames)[:, None]).all()  # far off: the plate


def test_only_a_warp_model_can_render_without_its_network():
    with pytest.raises(ValueError, match="network"):
        replace(TINY_PIPELINE, network=False)


def test_a_bone_too_short_to_have_a_direction_turns_with_the_joints_around_it():
    """A face bone a pixel long whose drawn direction flips (it points at the camera) amid
    bones that hold still: its pixels hold still with them, not turned half a circle."""
    ring = [[18, 18], [22, 18], [26, 18], [30, 18], [18, 30], [22, 30], [26, 30], [30, 30]]
    first = np.array([*ring, [24.0, 24.0], [25.0, 24.0]])
    flipped = np.array([*ring, [25.0, 24.0], [24.0, 24.0]])
    edges = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
    depth = np.array([2.0] * 8 + [1.0, 1.0])  # the face bone nearest: it owns its middle
    mask = np.zeros((SIZE, SIZE), dtype=np.float32)
    mask[12:36, 12:36] = 1.0
    image = np.full((SIZE, SIZE, 3), 90, dtype=np.uint8)
    layers = warp.subject_layers(image, mask, first, depth, np.ones(10, dtype=bool), edges)
    assert (layers.owner[22:26, 22:28] == 4).all()
    source, covered = warp.carry_subject(
        layers, first, flipped, depth, edges, np.ones(5, dtype=bool)
    )
    ys, xs = np.mgrid[14:34, 14:34]
    assert covered[14:34, 14:34].all()
    # Within the pixel its head moved (the bone's own anchor), not mirrored across the square.
    assert np.abs(source[14:34, 14:34] - np.stack([xs, ys], -1)).max() <= 1.0 + 1e-4


def test_a_small_bone_inside_a_blob_claims_no_more_than_its_length_allows():
    """A face bone 2 px long nearer the camera than the head bone beside it: the head's blob is
    the head bone's, the face bone keeps only what lies next to it (the mask's thickness at it
    is the whole blob's)."""
    joints = np.array([[24.0, 8.0], [24.0, 40.0], [30.0, 24.0], [32.0, 24.0]])
    edges = np.array([[0, 1], [2, 3]])
    depth = np.array([2.0, 2.0, 1.0, 1.0])
    mask = np.zeros((SIZE, SIZE), dtype=np.float32)
    mask[8:40, 8:40] = 1.0
    image = np.full((SIZE, SIZE, 3), 90, dtype=np.uint8)
    owner = warp.subject_layers(image, mask, joints, depth, np.ones(4, dtype=bool), edges).owner
    assert (owner[20:28, 22:27] == 0).all()  # along the head bone: the head's
    assert (owner[23:25, 30:32] == 1).all()  # on the face bone: the face's
