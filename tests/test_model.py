"""The pose-conditioned DiT, PTCM, codecs and text encoders (engine.model); no bpy."""

import sys

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from safetensors.torch import load_file

from poseanything.engine.model import (
    TINY_CONFIG,
    WAN22_TI2V_5B_CONFIG,
    HashTextEncoder,
    PartConditioning,
    PartCrossAttention,
    PoseAnythingTransformer,
    TinyVideoCodec,
    UMT5TextEncoder,
    WanVAECodec,
    match_parts,
    part_affinity_from_attention,
    pool_part_masks_to_latent_frames,
)
from poseanything.engine.model.ptcm import (
    FramePartMasks,
    part_affinity,
    part_attention_masks,
    release_conditioning,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread is fastest, and two thrash on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = dict(
    latent_channels=4,
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=24,
    text_dim=16,
    freq_dim=32,
    ffn_dim=64,
    num_layers=3,
)


def small_model(seed: int = 0, **overrides) -> PoseAnythingTransformer:
    torch.manual_seed(seed)
    return PoseAnythingTransformer(**{**SMALL, **overrides}).eval()


def inputs(batch=1, frames=4, height=8, width=12, channels=4, text_dim=16, seed=1):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, channels, frames, height, width)
    latents = torch.randn(shape, generator=generator)
    pose = torch.randn(shape, generator=generator)
    timestep = torch.full((batch, frames), 700.0)
    timestep[:, 0] = 0.0
    text = torch.randn(batch, 5, text_dim, generator=generator)
    return latents, pose, timestep, text


def stripe_masks(parts: int, frames: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(1, P, T, gh, gw): part p is column stripe p (stripes shift by one column per frame)."""
    masks = torch.zeros(1, parts, frames, grid_h, grid_w, dtype=torch.bool)
    columns = torch.arange(grid_w)
    for t in range(frames):
        labels = (columns + t) % grid_w * parts // grid_w
        for p in range(parts):
            masks[0, p, t, :, labels == p] = True
    return masks


def randomise_ptcm_output(model: PoseAnythingTransformer) -> None:
    for block in model.blocks:
        torch.nn.init.normal_(block.ptcm.to_out.weight, std=0.2)


@pytest.mark.parametrize(
    "batch, frames, height, width, parts",
    [(1, 4, 8, 12, 1), (2, 3, 16, 8, 3), (3, 5, 12, 12, 5)],
)
def test_forward_shapes_and_dtypes(batch, frames, height, width, parts):
    model = small_model()
    randomise_ptcm_output(model)
    latents, pose, timestep, text = inputs(batch, frames, height, width)
    masks = stripe_masks(parts, frames, height // 2, width // 2)
    with torch.no_grad():
        plain = model(latents, pose, timestep, text)
        with_parts = model(latents, pose, timestep, text, PartConditioning(masks))
    assert plain.shape == latents.shape and plain.dtype == torch.float32
    assert with_parts.shape == latents.shape
    assert torch.isfinite(with_parts).all()
    assert not torch.equal(plain, with_parts)


def test_bfloat16_model_returns_the_latents_dtype():
    model = small_model().to(torch.bfloat16)
    latents, pose, timestep, text = inputs()
    with torch.no_grad():
        out = model(latents, pose, timestep, text)
        out_bf16 = model(latents.bfloat16(), pose.bfloat16(), timestep, text.bfloat16())
    assert out.dtype == torch.float32 and out_bf16.dtype == torch.bfloat16
    assert torch.isfinite(out).all()


def test_tiny_config_generates_16_frames_at_64px():
    torch.manual_seed(0)
    model = PoseAnythingTransformer(**TINY_CONFIG).eval()
    channels = TINY_CONFIG["latent_channels"]
    latents, pose, timestep, text = inputs(1, 16, 16, 16, channels, TINY_CONFIG["text_dim"])
    with torch.no_grad():
        out = model(latents, pose, timestep, text)
    assert out.shape == (1, channels, 16, 16, 16)
    assert model.patch_embedding.in_channels == 2 * channels


def test_per_frame_timestep():
    model = small_model()
    latents, pose, _, text = inputs(batch=2)
    with torch.no_grad():
        scalar = model(latents, pose, torch.tensor([300.0, 800.0]), text)
        per_frame = model(latents, pose, torch.tensor([[300.0] * 4, [800.0] * 4]), text)
        timestep = torch.tensor([[300.0] * 4, [800.0] * 4])
        timestep[:, 2] = 0.0
        changed = model(latents, pose, timestep, text)
    torch.testing.assert_close(scalar, per_frame)
    assert not torch.allclose(changed, per_frame)


def test_matches_diffusers_wan_with_per_token_timesteps():
    """Without PTCM the model IS diffusers' Wan2.2 TI2V transformer with in = 2C, out = C."""
    model = small_model(ptcm=False)
    reference = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=24,
        in_channels=8,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=64,
        num_layers=3,
    ).eval()
    reference.load_state_dict(model.state_dict(), strict=True)
    latents, pose, timestep, text = inputs(batch=2, frames=3)
    tokens_per_frame = (8 // 2) * (12 // 2)
    with torch.no_grad():
        ours = model(latents, pose, timestep, text)
        theirs = reference(
            torch.cat([latents, pose], 1),
            timestep.repeat_interleave(tokens_per_frame, dim=1),
            text,
            return_dict=False,
        )[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_untrained_ptcm_is_identity():
    model = small_model()
    latents, pose, timestep, text = inputs(batch=2, frames=4, height=8, width=8)
    masks = stripe_masks(3, 4, 4, 4)
    with torch.no_grad():
        off = model(latents, pose, timestep, text)
        on = model(latents, pose, timestep, text, PartConditioning(masks))
        inactive = model(latents, pose, timestep, text, PartConditioning(masks, active=False))
    torch.testing.assert_close(on, off, rtol=0, atol=0)
    torch.testing.assert_close(inactive, off, rtol=0, atol=0)


def test_ptcm_switch_and_config_off():
    model = small_model()
    randomise_ptcm_output(model)
    latents, pose, timestep, text = inputs(frames=3, height=8, width=8)
    masks = stripe_masks(2, 3, 4, 4)
    with torch.no_grad():
        off = model(latents, pose, timestep, text)
        inactive = model(latents, pose, timestep, text, PartConditioning(masks, active=False))
        on = model(latents, pose, timestep, text, PartConditioning(masks))
    assert torch.equal(off, inactive) and not torch.equal(off, on)
    without = small_model(ptcm=False)
    assert not any("ptcm" in key for key in without.state_dict())


def test_part_attention_never_crosses_parts():
    torch.manual_seed(0)
    dim, frames, grid = 16, 3, (2, 4)
    n = grid[0] * grid[1]
    attention = PartCrossAttention(dim, num_heads=2)
    torch.nn.init.normal_(attention.to_out.weight, std=0.5)
    torch.nn.init.normal_(attention.to_out.bias, std=0.5)
    masks = torch.zeros(1, 2, frames, *grid, dtype=torch.bool)
    masks[0, 0, :, :, :2] = True  # part 0: left half
    masks[0, 1, :, :, 2:3] = True  # part 1: third column; the last column is in no part
    # Frame 2 has its labels swapped: its part 0 is the first frame's part 1 and vice versa.
    correspondence = torch.tensor([[0, 1], [0, 1], [1, 0]])
    part_masks = part_attention_masks(PartConditioning(masks, correspondence), batch_size=1)
    hidden = torch.randn(1, frames * n, dim)
    out = attention(hidden, part_masks)
    perturbed = hidden.clone()
    perturbed[0, 2] += 3.0  # a first-frame token of part 1 (row 0, column 2)
    changed = (attention(perturbed, part_masks) - out).abs().amax(-1)[0].view(frames, *grid)

    assert torch.equal(out[0, :n], torch.zeros(n, dim))  # the reference frame is never changed
    assert torch.equal(out[0].view(frames, *grid, dim)[:, :, 3], torch.zeros(frames, 2, dim))
    assert (changed[0] == 0).all()
    # Frame 1 keeps the labels: only its part-1 tokens see the perturbed part-1 key.
    assert (changed[1][:, 2] > 0).all() and (changed[1][:, [0, 1, 3]] == 0).all()
    # Frame 2's part 0 (left half) IS first-frame part 1, so it, and only it, changes.
    assert (changed[2][:, :2] > 0).all() and (changed[2][:, 2:] == 0).all()


def constructed_attention(permutations, parts=3, grid=(2, 6), scale=8.0):
    """Queries/keys whose attention links first-frame part p to frame-t part q iff perm[q] = p."""
    frames = len(permutations)
    masks = stripe_masks(parts, frames, *grid)
    n = grid[0] * grid[1]
    labels = masks[0].float().argmax(0).flatten(1)  # (T, n) part label per token
    query = scale * torch.eye(parts)[labels[0]]  # (n, P): one-hot of the first-frame part
    keys = []
    for t, permutation in enumerate(permutations):
        first_frame_part = torch.tensor(permutation)[labels[t]]
        keys.append(scale * torch.eye(parts)[first_frame_part])
    key = torch.cat(keys)  # (T*n, P)
    # One head, head_dim = P; the attention scale 1/sqrt(P) is part of the construction.
    return query.view(1, 1, n, parts), key.view(1, 1, frames * n, parts), masks


def test_capture_and_match_recover_a_known_permutation():
    permutations = [(0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1)]
    query, key, masks = constructed_attention(permutations)
    affinity = part_affinity_from_attention(query, key, masks, query_chunk=5)
    assert affinity.shape == (1, 3, 4, 3)
    matched = match_parts(affinity[0], masks[0])
    assert matched.tolist() == [list(p) for p in permutations]
    assert match_parts(affinity, masks).tolist() == [[list(p) for p in permutations]]


def test_chunked_affinity_equals_the_full_attention_matrix():
    generator = torch.Generator().manual_seed(3)
    frames, grid, parts = 3, (3, 4), 4
    n = grid[0] * grid[1]
    query = torch.randn(2, 2, n, 8, generator=generator)
    key = torch.randn(2, 2, frames * n, 8, generator=generator)
    masks = torch.rand(2, parts, frames, *grid, generator=generator) > 0.5
    chunked = part_affinity_from_attention(query, key, masks, query_chunk=5)
    probs = torch.softmax(query @ key.transpose(-1, -2) / 8**0.5, -1).sum(1)  # (B, n, T*n)
    flat = masks.flatten(3).float()
    expected = torch.zeros_like(chunked)
    for b in range(2):
        for p in range(parts):
            for t in range(frames):
                for q in range(parts):
                    rows, cols = flat[b, p, 0] > 0, flat[b, q, t] > 0
                    block = probs[b][rows][:, t * n : (t + 1) * n][:, cols]
                    expected[b, p, t, q] = block.mean() if block.numel() else 0.0
    torch.testing.assert_close(chunked, expected)


def test_match_parts_keeps_absent_parts_in_place():
    affinity = torch.zeros(3, 2, 3)
    affinity[0, 1, 1] = 1.0  # first-frame part 0 looks like frame-1 part 1
    affinity[1, 1, 0] = 1.0  # first-frame part 1 looks like frame-1 part 0
    masks = torch.ones(3, 2, 2, 2, dtype=torch.bool)
    masks[2] = False  # part 2 is drawn in no frame
    assert match_parts(affinity, masks).tolist() == [[0, 1, 2], [1, 0, 2]]
    masks[:, 1] = True
    masks[0, 1] = False  # frame 1 lost part 0: nothing to match, identity
    affinity.zero_()
    assert match_parts(affinity, masks).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_model_part_affinity_then_correspondence():
    model = small_model()
    latents, pose, timestep, text = inputs(batch=2, frames=4, height=8, width=8)
    masks = stripe_masks(3, 4, 4, 4)
    attention = model.first_part_attention(
        latents, pose, timestep, text, masks[:, :, 0], query_chunk=7
    )
    affinity = part_affinity(attention, masks)
    assert affinity.shape == (2, 3, 4, 3) and torch.isfinite(affinity).all()
    assert model.capture_block_index == 2
    correspondence = match_parts(affinity[0], masks[0])
    assert correspondence.shape == (4, 3)
    randomise_ptcm_output(model)
    with torch.no_grad():
        out = model(latents, pose, timestep, text, PartConditioning(masks, correspondence))
    assert out.shape == latents.shape


def test_pool_part_masks_to_latent_frames():
    masks = torch.zeros(2, 9, 2, 2, dtype=torch.bool)
    masks[0, 3, 0, 0] = True  # pixel frame 3 -> latent frame 1 (frames 1..4)
    masks[1, 8, 1, 1] = True  # pixel frame 8 -> latent frame 2 (frames 5..8)
    pooled = pool_part_masks_to_latent_frames(masks, 4)
    assert pooled.shape == (2, 3, 2, 2)
    assert pooled[0, 1, 0, 0] and pooled[1, 2, 1, 1] and pooled.sum() == 2
    assert torch.equal(pool_part_masks_to_latent_frames(masks, 1), masks)
    with pytest.raises(ValueError, match="1 \\+ 4"):
        pool_part_masks_to_latent_frames(masks[:, :8], 4)


def test_bad_inputs_name_the_problem():
    model = small_model()
    latents, pose, timestep, text = inputs()
    with pytest.raises(ValueError, match="same shape"):
        model(latents, pose[:, :, :2], timestep, text)
    with pytest.raises(ValueError, match="timestep"):
        model(latents, pose, timestep[:, :2], text)
    with pytest.raises(ValueError, match="patch"):
        model(latents[..., :7], pose[..., :7], timestep, text)
    with pytest.raises(ValueError, match="grid"):
        model(latents, pose, timestep, text, PartConditioning(stripe_masks(2, 4, 3, 3)))
    masks = stripe_masks(2, 4, 4, 6).expand(3, -1, -1, -1, -1)
    with pytest.raises(ValueError, match="batch 3"):
        model(latents, pose, timestep, text, PartConditioning(masks))


def test_wan22_ti2v_5b_config_builds_on_meta():
    with torch.device("meta"):
        model = PoseAnythingTransformer(**WAN22_TI2V_5B_CONFIG)
    assert model.patch_embedding.weight.shape == (3072, 96, 1, 2, 2)
    assert model.proj_out.weight.shape == (48 * 4, 3072)
    assert len(model.blocks) == 30 and model.capture_block_index == 27
    assert model.blocks[0].ffn.net[0].proj.weight.shape == (14336, 3072)
    assert model.condition_embedder.text_embedder.linear_1.weight.shape == (3072, 4096)
    backbone = sum(p.numel() for n, p in model.named_parameters() if ".ptcm." not in n)
    assert 4.9e9 < backbone < 5.1e9


def test_built_on_meta_then_loaded_by_assignment():
    """The big-checkpoint path: no weights allocated at construction, tensors assigned later."""
    model = small_model()
    randomise_ptcm_output(model)
    with torch.device("meta"):
        empty = PoseAnythingTransformer(**SMALL)
    empty.load_state_dict(model.state_dict(), strict=True, assign=True)
    latents, pose, timestep, text = inputs(frames=3, height=8, width=8)
    masks = PartConditioning(stripe_masks(2, 3, 4, 4))
    with torch.no_grad():
        torch.testing.assert_close(
            empty.eval()(latents, pose, timestep, text, masks),
            model(latents, pose, timestep, text, masks),
        )


def test_save_and_load_round_trip_with_safetensors(tmp_path):
    model = small_model()
    randomise_ptcm_output(model)
    model.save_pretrained(tmp_path / "dit")
    assert (tmp_path / "dit" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list((tmp_path / "dit").glob("*.bin"))
    loaded = PoseAnythingTransformer.from_pretrained(tmp_path / "dit", use_safetensors=True).eval()
    saved = load_file(tmp_path / "dit" / "diffusion_pytorch_model.safetensors")
    assert "blocks.0.ptcm.to_out.weight" in saved
    latents, pose, timestep, text = inputs(frames=3, height=8, width=8)
    masks = PartConditioning(stripe_masks(2, 3, 4, 4))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(latents, pose, timestep, text, masks),
            model(latents, pose, timestep, text, masks),
        )
    assert loaded.config.num_layers == 3 and tuple(loaded.config.patch_size) == (1, 2, 2)


@pytest.mark.parametrize("factor", [4, 8])
def test_tiny_codec_round_trip_shapes(factor, tmp_path):
    codec = TinyVideoCodec(latent_channels=6, spatial_factor=factor, hidden_channels=32).eval()
    video = torch.rand(2, 3, 5, 32, 48) * 2 - 1
    with torch.no_grad():
        latents = codec.encode(video)
        decoded = codec.decode(latents)
    assert latents.shape == (2, 6, 5, 32 // factor, 48 // factor)
    assert decoded.shape == video.shape and decoded.abs().max() <= 1.0
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor) == (6, factor, 1)
    assert codec.frames_to_latent(5) == 5 and codec.latent_to_frames(5) == 5
    codec.fit_latent_statistics(video)
    with torch.no_grad():
        normalised = codec.encode(video)
    assert normalised.mean(dim=(0, 2, 3, 4)).abs().max() < 1e-4
    codec.save_pretrained(tmp_path / "codec")
    loaded = TinyVideoCodec.from_pretrained(tmp_path / "codec", use_safetensors=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(video), normalised)
    with pytest.raises(ValueError, match="multiple"):
        codec.encode(video[..., :30])


def test_tiny_codec_overfits_a_tiny_batch():
    torch.manual_seed(0)
    codec = TinyVideoCodec(latent_channels=8, spatial_factor=4, hidden_channels=32)
    y, x = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    frames = []
    for shift in (0.0, 0.3):
        disc = ((x - shift) ** 2 + y**2 < 0.3).float()
        frames.append(torch.stack([x * 0.8, y * 0.5 + disc * 0.4, disc - 0.5]))
    video = torch.stack(frames, dim=1)[None]  # (1, 3, 2, 32, 32)
    optimiser = torch.optim.Adam(codec.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        loss = torch.nn.functional.mse_loss(codec(video), video)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.1 * first and loss.item() < 0.02


def tiny_wan_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.5, -0.5, 0.0, 1.0],
        latents_std=[2.0, 1.0, 0.5, 1.0],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
    ).eval()


def test_wan_vae_codec_shapes_and_normalisation(tmp_path):
    vae = tiny_wan_vae()
    vae.save_pretrained(tmp_path / "wan" / "vae")
    codec = WanVAECodec.from_pretrained(tmp_path / "wan")
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor) == (4, 16, 4)
    assert codec.frames_to_latent(9) == 3 and codec.latent_to_frames(3) == 9
    video = torch.rand(1, 3, 9, 32, 48) * 2 - 1
    with torch.no_grad():
        latents = codec.encode(video)
        raw = vae.encode(video).latent_dist.mode()
        decoded = codec.decode(latents)
    assert latents.shape == (1, 4, 3, 2, 3)
    mean = torch.tensor([0.5, -0.5, 0.0, 1.0]).view(1, 4, 1, 1, 1)
    std = torch.tensor([2.0, 1.0, 0.5, 1.0]).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(latents, (raw - mean) / std)
    assert decoded.shape == video.shape and decoded.abs().max() <= 1.0
    with pytest.raises(ValueError, match="1 \\+ 4"):
        codec.encode(video[:, :, :8])


def test_hash_text_encoder(tmp_path):
    torch.manual_seed(0)
    encoder = HashTextEncoder(dim=32, num_layers=1, num_heads=2, max_tokens=8).eval()
    with torch.no_grad():
        embeds = encoder.encode(["A red fox runs", "", "a RED fox, runs!"])
        alone = encoder.encode(["a red fox runs"])
    assert embeds.shape == (3, 8, 32) and encoder.dim == 32
    assert torch.equal(embeds[1], torch.zeros(8, 32))  # empty prompt = unconditional
    assert torch.equal(embeds[0, 4:], torch.zeros(4, 32))  # padding past the last word
    torch.testing.assert_close(embeds[0], embeds[2])  # case and punctuation do not matter
    torch.testing.assert_close(embeds[0], alone[0])  # independent of the batch
    assert (
        encoder.tokenize(["fox"]).tolist()
        == HashTextEncoder(max_tokens=8).tokenize(["fox"]).tolist()
    )
    encoder.save_pretrained(tmp_path / "text")
    loaded = HashTextEncoder.from_pretrained(tmp_path / "text", use_safetensors=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(["a red fox runs"]), alone)
    with pytest.raises(TypeError, match="list"):
        encoder.encode("a red fox")


def test_umt5_encoder_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        UMT5TextEncoder.from_pretrained("/nonexistent")


def test_weights_load_from_safetensors_only(tmp_path):
    model = small_model()
    with pytest.raises(ValueError, match="safetensors"):
        model.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    model.save_config(tmp_path / "pickled")
    torch.save(model.state_dict(), tmp_path / "pickled" / "diffusion_pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        PoseAnythingTransformer.from_pretrained(tmp_path / "pickled")
    with pytest.raises(ValueError, match="safetensors"):
        PoseAnythingTransformer.from_pretrained(tmp_path / "pickled", use_safetensors=False)


def test_training_step_with_gradient_checkpointing():
    model = small_model().train()
    model.enable_gradient_checkpointing()
    latents, pose, timestep, text = inputs(frames=3, height=8, width=8)
    masks = PartConditioning(stripe_masks(2, 3, 4, 4))
    loss = model(latents, pose, timestep, text, masks).square().mean()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert model.blocks[0].ptcm.to_out.weight.grad.abs().sum() > 0


def test_release_union_masks_shift_by_one_latent_frame_and_keep_the_last_posed_frame():
    """The release's layout: the masks of latent frame l+1's video frames, matched on latent
    l's attention, land at union index l-1 (l = 0 wraps to the last); the last posed frame
    of each group of 4 wins."""
    frames, grid = 9, (1, 3)  # 3 latent frames: video frames 1-4 and 5-8
    masks = torch.zeros(frames, 2, *grid, dtype=torch.bool)
    masks[0, 0, 0, 0] = True  # the reference's only part: token 0
    masks[0, 1, 0, 1] = True  # a second first-frame part: token 1
    for frame in range(1, frames):
        masks[frame, 0, 0, frame % 3] = True  # each frame: one part on token frame % 3
    posed = torch.ones(frames, dtype=torch.bool)
    posed[4] = False  # frame 4 has no pose: frame 3 is the last posed one of latent 1
    attention = torch.rand(2, 3, 3)  # any attention: each frame has a single candidate part
    parts, matching = release_conditioning(attention, FramePartMasks(masks, 2, posed))
    resolved = parts.masks[0]  # (P, T, gh, gw)
    assert torch.equal(resolved[:, 0], masks[0, :2])
    # Latent 0's loop writes frame 3's mask (token 0) to index -1 = latent frame 2;
    # latent 1's loop writes frame 8's (token 2) OR index 1 (that token 0) to index 0.
    assert resolved[0, 2, 0].tolist() == [True, False, False]
    assert resolved[0, 1, 0].tolist() == [True, False, True]
    assert matching[4].tolist() == [-1, -1] and matching[3].tolist() == [0, 0]


def test_release_part_attention_updates_every_later_token():
    """The release zeroes the inputs outside a part instead of masking attention: tokens in
    no part still receive the (summed) residual, the reference frame none."""
    torch.manual_seed(0)
    dim, frames, grid = 16, 3, (2, 4)
    n = grid[0] * grid[1]
    release = PartCrossAttention(dim, num_heads=2, variant="release")
    torch.nn.init.normal_(release.to_out.weight, std=0.5)
    masks = torch.zeros(1, 2, frames, *grid, dtype=torch.bool)
    masks[0, 0, :, :, :2] = True
    masks[0, 1, :, :, 2:3] = True  # the last column is in no part
    part_masks = part_attention_masks(PartConditioning(masks), batch_size=1)
    out = release(torch.randn(1, frames * n, dim), part_masks)
    assert torch.equal(out[0, :n], torch.zeros(n, dim))
    assert (out[0, n:].abs().amax(-1) > 0).all()  # every later token, the last column too


def test_prompts_are_cleaned_as_the_release_cleans_them():
    from poseanything.engine.model.text import clean_prompt

    assert clean_prompt("  A deer &amp;amp; a bird\n\twalk\u00a0 ") == "A deer & a bird walk"
    assert clean_prompt("cafÃ©") == "café"  # ftfy repairs mojibake
