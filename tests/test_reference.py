"""engine.inference.reference: the reference and its subject mask at the shot's size, the mask
estimated (GrabCut from the skeleton) when the shot has none or one that cannot be right."""

import cv2
import numpy as np
import pytest
from synthetic_shots import make_shot

from poseanything.engine.contract.shot import ShotError, write_shot
from poseanything.engine.inference.reference import (
    estimate_subject_mask,
    load_reference,
    prepare_reference,
)

SIZE = 96


def figure_on_a_backdrop(shot, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The shot's first-frame figure painted as a thick orange body over a textured green
    ground; returns the image and the body's true mask."""
    width, height = round(shot.width * scale), round(shot.height * scale)
    rng = np.random.default_rng(3)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (60, 140, 70)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    points = np.rint(shot.joints2d[0] * scale).astype(np.int32)
    for a, b in shot.skeleton.edges:
        cv2.line(mask, tuple(points[a]), tuple(points[b]), 255, max(3, round(7 * scale)))
    image[mask > 0] = (230, 140, 40)
    return image, mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_grabcut_seeded_by_the_skeleton_finds_the_subject():
    shot = make_shot(width=SIZE, height=SIZE)
    image, truth = figure_on_a_backdrop(shot)
    mask = estimate_subject_mask(image, shot.joints2d[0], shot.in_front[0], shot.skeleton.edges)
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.float32
    assert iou(mask > 0.5, truth > 0) > 0.8


@pytest.mark.parametrize(("fill", "problem"), [(0, "is empty"), (255, "covers the whole frame")])
def test_an_empty_or_full_mask_is_replaced_by_an_estimate_with_a_warning(fill, problem):
    shot = make_shot(width=SIZE, height=SIZE)
    image, truth = figure_on_a_backdrop(shot)
    given = np.full((SIZE, SIZE), fill / 255, np.float32)
    prepared = prepare_reference(shot, image, given)
    assert prepared.mask_source == "estimated"
    assert any(note.startswith("warning") and problem in note for note in prepared.notes)
    assert iou(prepared.mask > 0.5, truth > 0) > 0.8


def test_a_shot_folder_without_a_mask_gets_an_estimate_and_one_with_keeps_its_own(tmp_path):
    shot = make_shot(width=SIZE, height=SIZE)
    image, truth = figure_on_a_backdrop(shot)
    estimated = load_reference(write_shot(shot, tmp_path / "a", image), shot)
    assert estimated.mask_source == "estimated"
    assert any("GrabCut" in note for note in estimated.notes)
    given = load_reference(write_shot(shot, tmp_path / "b", image, reference_mask=truth), shot)
    assert given.mask_source == "shot" and given.notes == ()
    np.testing.assert_array_equal(given.mask, truth / 255.0)
    np.testing.assert_array_equal(given.image, image)


def test_a_reference_of_another_size_is_scaled_with_a_note_or_refused_by_its_aspect():
    shot = make_shot(width=SIZE, height=SIZE)
    image, truth = figure_on_a_backdrop(shot, scale=2.0)
    prepared = prepare_reference(shot, image, truth / 255.0)
    assert prepared.image.shape == (SIZE, SIZE, 3) and prepared.mask.shape == (SIZE, SIZE)
    assert any("reference 192x192 scaled to the shot's 96x96" in n for n in prepared.notes)
    _, small_truth = figure_on_a_backdrop(shot)
    assert iou(prepared.mask > 0.5, small_truth > 0) > 0.8
    with pytest.raises(ShotError, match=r"^reference: 192x180 does not have the shot's aspect"):
        prepare_reference(shot, image[:180], None)
