"""The full model's loading path on scaled-down fakes of the official downloads, network off."""

import json
import shutil

import pytest
import torch
from fake_full_model import DIM, make_fake_cache, official_tensors
from synthetic_shots import write_synthetic_shot
from tiny_models import one_torch_thread  # noqa: F401

from poseanything.engine import cli
from poseanything.engine.checkpoints.hub import (
    DIT_INDEX,
    DIT_SHARDS,
    CheckpointError,
    FullModelSources,
    WeightsMissingError,
    inventory,
    plan_download,
    require_complete,
)
from poseanything.engine.checkpoints.official import load_official_transformer, official_to_ours
from poseanything.engine.contract.video import read_video


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf") / "hub"
    snapshots = make_fake_cache(cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield snapshots


@pytest.fixture
def dit_copy(fake_cache, tmp_path):
    """A folder copy of the official DiT checkpoint, to damage."""
    return shutil.copytree(fake_cache["poseanything"], tmp_path / "dit")


def test_official_keys_load_onto_our_transformer_strictly(fake_cache):
    model = load_official_transformer(fake_cache["poseanything"], dtype=torch.bfloat16)
    assert model.config.num_attention_heads == DIM // 128 and model.config.ptcm
    params = model.state_dict()
    tensors = official_tensors()
    assert len(params) == len(tensors)
    for name, tensor in tensors.items():
        ours = params[official_to_ours(name)]
        assert torch.equal(ours.float(), tensor.to(ours.dtype).float()), name
    # Modulation tables and norms stay float32 under bf16, like diffusers keeps Wan's.
    assert params["blocks.0.scale_shift_table"].dtype == torch.float32
    assert params["condition_embedder.time_embedder.linear_1.weight"].dtype == torch.float32
    assert params["blocks.0.attn1.to_q.weight"].dtype == torch.bfloat16
    ptcm_out = official_to_ours("blocks.3.cross_attn_instance.o.weight")
    assert ptcm_out == "blocks.3.ptcm.to_out.weight"
    assert official_to_ours("blocks.3.norm4.bias") == "blocks.3.ptcm.norm.bias"


def test_full_model_renders_a_shot_folder_offline(fake_cache, tmp_path, capsys):
    shot = write_synthetic_shot(tmp_path / "shot", num_frames=7, width=64, height=48)
    out = tmp_path / "take.mp4"
    args = ["render", str(shot), "--out", str(out), "--full", "--allow-cpu", "--device", "cpu"]
    sizing = ["--window-frames", "5", "--pixel-area", "4096", "--steps", "2", "--progress", "none"]
    assert cli.main(args + sizing) == 0, capsys.readouterr()
    frames, fps = read_video(out)
    assert frames.shape == (7, 48, 64, 3) and fps == 12.0
    report = json.loads((tmp_path / "engine.json").read_text())
    assert report["model"] == "poseanything-official" and report["working_size"] == [64, 64]
    assert report["num_frames"] == 7 and report["backend"] == "torch"


def test_full_model_refuses_the_cpu_unless_allowed(fake_cache, tmp_path, capsys):
    shot = write_synthetic_shot(tmp_path / "shot", num_frames=3, width=32, height=32)
    args = ["render", str(shot), "--out", str(tmp_path / "v.mp4"), "--full", "--device", "cpu"]
    assert cli.main(args + ["--progress", "json"]) == 2
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert "CUDA GPU" in error["message"] and "--allow-cpu" in error["message"]


def test_models_lists_present_files_with_sizes(fake_cache, capsys):
    assert cli.main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    files = {row["file"]: row for row in listing["files"]}
    assert listing["complete"] and set(DIT_SHARDS) <= set(files)
    assert files[DIT_SHARDS[0]]["size"] > 0 and files["vae/config.json"]["present"]
    assert "text_encoder/model-00001-of-00003.safetensors" in files  # shards from the index


def test_missing_files_are_listed_with_what_to_do(dit_copy, fake_cache, tmp_path, capsys):
    (dit_copy / DIT_SHARDS[1]).unlink()
    sources = FullModelSources(str(dit_copy))
    assert [status.filename for status in inventory(sources).missing] == [DIT_SHARDS[1]]
    with pytest.raises(WeightsMissingError, match=DIT_SHARDS[1]) as error:
        require_complete(sources)
    assert "poseanything models --download" in str(error.value)
    assert cli.main(["models", "--poseanything-weights", str(dit_copy)]) == 1
    assert "MISSING" in capsys.readouterr().out

    shot = write_synthetic_shot(tmp_path / "shot", num_frames=3, width=32, height=32)
    args = ["render", str(shot), "--out", str(tmp_path / "v.mp4"), "--full", "--allow-cpu"]
    code = cli.main(args + ["--poseanything-weights", str(dit_copy), "--progress", "json"])
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 2 and DIT_SHARDS[1] in error["message"]


def test_missing_wan_repo_is_reported_per_file(tmp_path):
    sources = FullModelSources(wan=str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    found = inventory(sources)
    assert "vae/diffusion_pytorch_model.safetensors" in {s.filename for s in found.missing}
    assert any("text_encoder" in note for note in found.notes)


def test_truncated_shard_is_a_clear_error(dit_copy):
    shard = dit_copy / DIT_SHARDS[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{DIT_SHARDS[0]}.*download it again"):
        load_official_transformer(dit_copy)


def test_wrong_shape_tensor_is_named(dit_copy):
    from safetensors.torch import load_file, save_file

    shard = dit_copy / DIT_SHARDS[1]
    tensors = load_file(str(shard))
    tensors["blocks.1.ffn.2.weight"] = torch.zeros(DIM, 65)
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError) as error:
        load_official_transformer(dit_copy)
    message = str(error.value)
    assert "blocks.1.ffn.2.weight -> blocks.1.ffn.net.2.weight" in message
    assert f"({DIM}, 65)" in message and f"({DIM}, 64)" in message


def test_unknown_and_missing_keys_are_listed(dit_copy):
    index = json.loads((dit_copy / DIT_INDEX).read_text())
    shard = dit_copy / DIT_SHARDS[1]
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(shard))
    tensors["blocks.1.extra.weight"] = tensors.pop("blocks.1.norm4.weight")
    save_file(tensors, str(shard))
    del index["weight_map"]["blocks.1.norm4.weight"]
    index["weight_map"]["blocks.1.extra.weight"] = DIT_SHARDS[1]
    (dit_copy / DIT_INDEX).write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as error:
        load_official_transformer(dit_copy)
    assert "unexpected tensor blocks.1.extra.weight" in str(error.value)
    assert "missing tensor for model parameter blocks.1.ptcm.norm.weight" in str(error.value)


def test_plan_without_network_says_what_to_do(fake_cache, capsys):
    assert cli.main(["models", "--plan"]) == 2  # HF_HUB_OFFLINE=1 in this module
    message = capsys.readouterr().err
    assert "cannot list Ryan241005/PoseAnything" in message and "HF_HUB_OFFLINE" in message


def test_download_plan_selects_exactly_the_needed_files():
    remote = {
        "vae/config.json": 1,
        "vae/diffusion_pytorch_model.safetensors": 100,
        "transformer/diffusion_pytorch_model-00001-of-00003.safetensors": 5000,
        "README.md": 2,
        "tokenizer/spiece.model": 3,
    }
    patterns = ("vae/config.json", "vae/diffusion_pytorch_model.safetensors", "tokenizer/*")
    plan = plan_download("org/wan", remote, patterns, present={"vae/config.json"})
    assert [(item.filename, item.present) for item in plan] == [
        ("tokenizer/spiece.model", False),
        ("vae/config.json", True),
        ("vae/diffusion_pytorch_model.safetensors", False),
    ]


def test_text_encoder_runs_once_per_prompt(fake_cache):
    from poseanything.engine.checkpoints.full_model import OnDemandTextEncoder
    from poseanything.engine.model import UMT5TextEncoder

    umt5 = UMT5TextEncoder.from_pretrained(fake_cache["wan"], torch_dtype=torch.float32)
    calls = []
    umt5.encoder.register_forward_hook(lambda *args: calls.append(1))
    encoder = OnDemandTextEncoder(umt5, "cpu", evict=(torch.nn.Linear(2, 2),))
    first = encoder.encode(["a cat walks"])
    assert torch.equal(encoder.encode(["a cat walks"]), first) and len(calls) == 1
    assert first.shape == (1, umt5.max_length, umt5.dim)
    assert next(umt5.encoder.parameters()).device.type == "cpu"


def test_shards_without_index_load_as_the_release_loads_them(dit_copy):
    (dit_copy / DIT_INDEX).unlink()
    assert inventory(FullModelSources(str(dit_copy))).complete
    model = load_official_transformer(dit_copy, dtype=torch.float32)
    params = model.state_dict()
    for name, tensor in official_tensors().items():
        assert torch.equal(params[official_to_ours(name)], tensor), name
    assert model.config.ptcm_variant == "release" and model.config.timestep_rounding == "bfloat16"


def test_a_tensor_in_two_shards_is_a_clear_error(dit_copy):
    from safetensors.torch import load_file, save_file

    (dit_copy / DIT_INDEX).unlink()
    first = load_file(str(dit_copy / DIT_SHARDS[0]))
    second = load_file(str(dit_copy / DIT_SHARDS[1]))
    second["blocks.0.modulation"] = first["blocks.0.modulation"]
    save_file(second, str(dit_copy / DIT_SHARDS[1]))
    with pytest.raises(CheckpointError, match="blocks.0.modulation is in both"):
        load_official_transformer(dit_copy)


def test_rms_norms_of_part_attention_follow_the_model_dtype(fake_cache):
    params = load_official_transformer(fake_cache["poseanything"], torch.bfloat16).state_dict()
    assert params["blocks.0.ptcm.norm.weight"].dtype == torch.float32  # the LayerNorm
    assert params["blocks.0.ptcm.norm_q.weight"].dtype == torch.bfloat16
    assert params["blocks.0.ptcm.norm_k.weight"].dtype == torch.bfloat16
