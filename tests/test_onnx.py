"""ONNX Runtime backend: parity with torch, whole-video PSNR, provider fallback, export cache.

All tests render or run at one size (a 10-frame 48x32 shot on the tiny pipeline), so the four
exports (denoiser with and without part attention, codec encode and decode) happen once per run.
"""

import json

import numpy as np
import pytest
import torch
from synthetic_shots import make_shot, reference_image, write_synthetic_shot
from tiny_models import one_torch_thread, tiny_model_folder, tiny_pipeline  # noqa: F401

from poseanything.engine import cli
from poseanything.engine.checkpoints.onnx import (
    CACHE_ENV_VAR,
    OnnxDenoiser,
    make_session,
    onnx_cache_dir,
    use_onnx_runtime,
)
from poseanything.engine.contract.video import read_video
from poseanything.engine.model import PartConditioning

WIDTH, HEIGHT, FRAMES = 48, 32, 10


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("onnx")
        patch.setenv(CACHE_ENV_VAR, str(folder))
        yield folder


@pytest.fixture(scope="module")
def shot():
    return make_shot(num_frames=FRAMES, width=WIDTH, height=HEIGHT)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def denoiser_inputs(pipeline, shot):
    """Random model inputs at the latent size the shot renders at, three anchors."""
    plan = pipeline.plan(shot)
    factor = pipeline.codec.spatial_factor
    channels = pipeline.model.config.latent_channels
    shape = (3, channels, plan.length, plan.height // factor, plan.width // factor)
    generator = torch.Generator().manual_seed(1)
    timestep = torch.full((3, plan.length), 600.0)
    timestep[:, 0] = 0.0
    text = pipeline.text_encoder.encode([shot.prompt]).expand(3, -1, -1)
    return (
        torch.randn(shape, generator=generator),
        torch.randn(shape, generator=generator),
        (timestep),
        text,
    )


def test_denoiser_matches_torch_with_and_without_part_attention(shot):
    pipeline = tiny_pipeline()
    latents, pose, timestep, text = denoiser_inputs(pipeline, shot)
    _, patch_h, patch_w = pipeline.model.config.patch_size
    grid = (latents.shape[2], latents.shape[3] // patch_h, latents.shape[4] // patch_w)
    parts = shot.skeleton.num_parts
    masks = torch.rand((1, parts, *grid), generator=torch.Generator().manual_seed(2)) > 0.5
    correspondence = torch.stack([torch.randperm(parts) for _ in range(grid[0])])
    onnx_model = OnnxDenoiser(pipeline.model)
    with torch.inference_mode():
        for ptcm in (None, PartConditioning(masks, correspondence)):
            expected = pipeline.model(latents, pose, timestep, text, ptcm=ptcm)
            got = onnx_model(latents, pose, timestep, text, ptcm=ptcm)
            assert got.shape == expected.shape
            assert (got - expected).abs().max().item() <= 1e-3
        # Batch is dynamic: one anchor runs through the same export.
        one = onnx_model(latents[:1], pose[:1], timestep[:1], text[:1])
        assert (
            one - pipeline.model(latents[:1], pose[:1], timestep[:1], text[:1])
        ).abs().max() <= 1e-3


def test_whole_video_matches_the_torch_backend(shot):
    reference = reference_image(WIDTH, HEIGHT)
    torch_frames = tiny_pipeline().render(shot, reference).frames
    pipeline = tiny_pipeline()
    use_onnx_runtime(pipeline)
    onnx_frames = pipeline.render(shot, reference).frames
    assert onnx_frames.shape == torch_frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert psnr(onnx_frames, torch_frames) >= 40.0
    target = np.broadcast_to(reference, torch_frames.shape)
    assert abs(psnr(onnx_frames, target) - psnr(torch_frames, target)) <= 0.5
    cached = sorted(path.name.split("-")[0] for path in onnx_cache_dir().glob("*.onnx"))
    assert cached == ["codec", "codec", "denoiser", "denoiser"]  # exported once per size


def test_sessions_fall_back_to_the_cpu(shot):
    path = next(onnx_cache_dir().glob("codec-*.onnx"), None)
    if path is None:  # run alone: export one
        pipeline = tiny_pipeline()
        use_onnx_runtime(pipeline)
        pipeline.codec.decode(torch.zeros(1, 4, 1, 8, 8))
        path = next(onnx_cache_dir().glob("codec-*.onnx"))
    session = make_session(
        path, ("CUDAExecutionProvider", "NoSuchProvider", "CPUExecutionProvider")
    )
    taken = session.get_providers()[0]
    expected = "CUDAExecutionProvider" if torch.cuda.is_available() else "CPUExecutionProvider"
    assert taken in (expected, "CPUExecutionProvider")
    assert make_session(path, ("NoSuchProvider",)).get_providers() == ["CPUExecutionProvider"]


def test_cli_renders_with_the_onnx_backend(tmp_path, capsys):
    shot_dir = write_synthetic_shot(
        tmp_path / "shot", num_frames=FRAMES, width=WIDTH, height=HEIGHT
    )
    model = tiny_model_folder(tmp_path / "model")
    out = tmp_path / "take.mp4"
    args = ["render", str(shot_dir), "--out", str(out), "--model", str(model), "--backend", "onnx"]
    assert cli.main(args + ["--progress", "none"]) == 0, capsys.readouterr()
    frames, _ = read_video(out)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    report = json.loads((tmp_path / "engine.json").read_text())
    assert report["backend"] == "onnx"
    assert report["onnx_providers"][0] in ("CUDAExecutionProvider", "CPUExecutionProvider")
