"""The full model against the released PoseAnything code, without that code.

``tests/data/official_parity/`` holds what the release's own code computed (``tools/
official_parity.py --write``, its commit in ``cases.json``) for a tiny official checkpoint whose
weights are a function of (seed, key name, shape): the key list is stored, the weights are
rebuilt here and saved as the release's two shards, then our loader, transformer, sampler,
skeleton drawing, part masks and VAE tiling must reproduce every output within 1e-4 relative
(images: identical or PSNR >= 45 dB). See ``official_parity_cases`` for the cases.
"""

import numpy as np
import pytest
import torch
from official_parity_cases import (
    MIN_PSNR,
    RELEASE_INDEX,
    RELEASE_SHARDS,
    TOLERANCE,
    checkpoint_tensors,
    load_fixture,
    parity_inputs,
    psnr,
    relative_difference,
    weights_checksum,
    write_checkpoint,
)
from official_parity_engine import (
    correspondence,
    denoise,
    forward_with_parts,
    forward_without_parts,
    our_model,
    schedule,
    skeleton_case,
    tiling_case,
)
from tiny_models import one_torch_thread  # noqa: F401

from poseanything.engine.checkpoints.hub import DIT_INDEX, DIT_SHARDS


@pytest.fixture(scope="module")
def fixture():
    return load_fixture()


@pytest.fixture(scope="module")
def checkpoint(fixture, tmp_path_factory):
    """The release's two shards, no index (as the release loads them)."""
    meta, config, _ = fixture
    tensors = checkpoint_tensors(config.seed, meta["keys"])
    assert weights_checksum(tensors) == pytest.approx(meta["weights_checksum"], rel=1e-9), (
        "the seeded weights differ from the release run's: torch's random generator changed, "
        "so the fixture must be rebuilt with tools/official_parity.py --write"
    )
    return write_checkpoint(tmp_path_factory.mktemp("official") / "dit", tensors, index=False)


@pytest.fixture(scope="module")
def model(checkpoint):
    with torch.device("cpu"):
        return our_model(checkpoint)


@pytest.fixture(scope="module")
def inputs(fixture):
    return parity_inputs(fixture[1])


def within(ours, release) -> float:
    difference = relative_difference(ours, release)
    assert difference <= TOLERANCE, f"max relative difference {difference:.3g}"
    return difference


def test_the_official_checkpoint_runs_the_release_way(fixture, model):
    meta, config, _ = fixture
    assert (RELEASE_SHARDS, RELEASE_INDEX) == (DIT_SHARDS, DIT_INDEX)
    assert len(meta["official_commit"]) == 40
    assert model.config.ptcm_variant == "release"
    assert model.config.timestep_rounding == "bfloat16"
    assert model.config.num_layers == config.layers and model.capture_block_index == 27
    assert len(model.state_dict()) == len(meta["keys"])


def test_a_forward_without_ptcm(fixture, model, inputs):
    _, config, golden = fixture
    within(forward_without_parts(model, config, inputs), golden["forward_without_parts"])


def test_b_forward_with_partial_parts(fixture, model, inputs):
    _, config, golden = fixture
    first, union = golden["first_masks"], golden["union_masks"]
    assert first.shape[0] == config.parts and 0 < first.mean() < 1 and 0 < union.mean() < 1
    out = forward_with_parts(model, config, inputs, first, union)
    within(out, golden["forward_with_parts"])
    # The parts matter: without them the output is far from the release's.
    assert relative_difference(golden["forward_without_parts"], golden["forward_with_parts"]) > 0.01


def test_c_correspondence_read_out_and_union_masks(fixture, model, inputs):
    _, config, golden = fixture
    attention, union = correspondence(
        model, config, inputs, torch.from_numpy(golden["check_latents"])
    )
    within(attention, golden["attention"])
    assert torch.equal(union, torch.from_numpy(golden["union_masks"]))


def test_d_sigmas_and_timesteps(fixture, model):
    _, config, golden = fixture
    ours = schedule(model, config)
    for name in ("sigmas", "timesteps", "model_timesteps"):
        within(ours[name], golden[name])
    # The timesteps the release's model was called with, recorded in the run.
    called = golden["called_timesteps"]
    within(ours["model_timesteps"][: len(called)], called)
    assert ours["model_timesteps"][-3:].tolist() == [242.0, 172.0, 92.5]


def test_e_first_steps_of_sampling_read_parts_and_restart(fixture, model, inputs):
    _, config, golden = fixture
    within(denoise(model, config, inputs), golden["denoised"])


def test_f_skeleton_images_and_part_masks_of_a_graph(fixture):
    _, _, golden = fixture
    ours = skeleton_case()
    for name in ("drawn", "images"):
        assert psnr(ours[name], golden[f"skeleton.{name}"]) >= MIN_PSNR, name
    assert ours["images"].shape == (4, 448, 832, 3)
    assert int(ours["dilation"]) == int(golden["skeleton.dilation"]) > 1
    assert int(ours["first_parts"]) == int(golden["skeleton.first_parts"])
    np.testing.assert_array_equal(ours["part_masks"], golden["skeleton.part_masks"])


def test_g_vae_tiling(fixture):
    _, config, golden = fixture
    for name, ours in tiling_case(config.seed).items():
        within(ours, golden[f"tiling.{name}"])


def test_shards_load_with_or_without_the_index(fixture, checkpoint, model, tmp_path):
    meta, config, _ = fixture
    assert not (checkpoint / DIT_INDEX).exists()  # ``model`` came from the shards alone
    tensors = checkpoint_tensors(config.seed, meta["keys"])
    indexed = write_checkpoint(tmp_path / "indexed", tensors, index=True)
    assert (indexed / DIT_INDEX).is_file()
    with_index, without = our_model(indexed).state_dict(), model.state_dict()
    assert with_index.keys() == without.keys()
    assert all(torch.equal(with_index[name], without[name]) for name in without)
