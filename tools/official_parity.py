"""Numeric parity of the full model with the released PoseAnything code, on the CPU.

    python tools/official_parity.py --official DIR [--seed N] [--dim D] [--layers L]
        [--latent-frames F] [--latent-height H] [--latent-width W] [--parts P]
        [--release-python PYTHON] [--write DIR]

DIR is a checkout of github Ryan-w2024/PoseAnything (nothing of it is copied here: it is
imported from DIR at run time). The release's DiffSynth ``WanModel`` is built at a tiny config
with seeded weights (``tests/official_parity_cases.py``), saved as the release's two shards and
loaded the release's way, and the release's own pipeline loop (``WanVideoPipeline.__call__``:
the first steps, the PTCM read-out at step 5, the union masks, the restart) runs on seeded
inputs; then our engine rebuilds the same checkpoint from the key list and runs the same cases
(``tests/official_parity_engine.py``). One line per check, each ending in ``max relative
difference X``; exit 1 when a check is above its tolerance (1e-4; images: identical or PSNR
>= 45 dB):

    (a) the transformer forward without PTCM     (e) the first 7 of 50 denoising steps
    (b) the forward with partial parts (PTCM)    (f) skeleton images and part masks of a graph
    (c) the correspondence read-out + union      (g) the VAE's spatial tiling
    (d) the 50 sigmas and timesteps

``--write DIR`` stores the release's outputs there (the fixtures of
``tests/test_official_parity.py`` are tests/data/official_parity/, made with the defaults).

The release's half runs in ``--release-python`` (default: $POSEANYTHING_RELEASE_PYTHON, else
this Python), because the release's packages cannot share one environment with ours (its
transformers 4 needs huggingface_hub < 1, our diffusers >= 1.32). A venv for it, Python 3.11:
``pip install torch==2.14.1 torchvision==0.29.1``, then ``einops modelscope "transformers<5"
"huggingface_hub<1" ftfy regex imageio opencv-python-headless scikit-image matplotlib
safetensors sentencepiece protobuf pandas``.

What is fed to the release instead of its encoders: the latents its VAE and umT5 would make
(seeded tensors), by a pipeline unit standing in for theirs; the decode at the end is captured
instead of run. Two run-time adjustments, both outside the numerics: the read-out attention,
which the release moves to ``cuda:0``, runs on the CPU; the pipeline keeps bf16 as its dtype
(so timesteps are rounded to bf16 exactly as on a GPU) while the model and latents are float32.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import official_parity_cases as cases  # noqa: E402

CONFIG_FLAGS = ("seed", "dim", "layers", "latent_frames", "latent_height", "latent_width", "parts")


def import_release(official: Path) -> dict:
    """The release's modules, imported from the checkout (paths as its test scripts set them)."""
    for path in (official, official / "examples/wanvideo/model_inference", official / "Extractor"):
        sys.path.insert(0, str(path))
    import data_utils
    import diffsynth.models.wan_video_dit as dit
    from BlumNet.reconstruction import PostProcess
    from diffsynth.models.utils import load_state_dict
    from diffsynth.models.wan_video_vae import WanVideoVAE
    from diffsynth.pipelines.wan_video_new import WanVideoPipeline
    from diffsynth.utils import PipelineUnit

    source = inspect.getsource(dit.custom_scaled_dot_product_attention)
    on_cpu = source.replace('else "cuda:0"', 'else "cpu"')
    if on_cpu == source:
        raise SystemExit("the release's custom_scaled_dot_product_attention changed; update here")
    exec(compile(on_cpu, dit.__file__, "exec"), vars(dit))  # the read-out on the CPU
    return dict(
        dit=dit,
        data_utils=data_utils,
        load_state_dict=load_state_dict,
        PostProcess=PostProcess,
        WanVideoPipeline=WanVideoPipeline,
        WanVideoVAE=WanVideoVAE,
        PipelineUnit=PipelineUnit,
    )


def release_commit(official: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def load_release_model(release: dict, config, folder: Path):
    """The release's ``WanModel`` with the shards of ``folder``, found as its ``ModelManager``
    finds them (every diffusion_pytorch_model-*.safetensors, sorted) and loaded strictly."""
    model = release["dit"].WanModel(**config.official_model_kwargs())
    state = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith("diffusion_pytorch_model-") and name.endswith(".safetensors"):
            state.update(release["load_state_dict"](str(folder / name)))
    model.load_state_dict(state, strict=True)
    return model.eval()


def run_release_pipeline(release: dict, config, model, inputs) -> dict:
    """The release's ``WanVideoPipeline.__call__`` on ``inputs``, its model calls recorded."""
    Unit = release["PipelineUnit"]

    class Inputs(Unit):
        """Stands in for the release's noise, VAE and prompt units: their outputs, given."""

        def __init__(self):
            super().__init__(take_over=True)

        def process(self, pipe, inputs_shared, inputs_posi, inputs_nega):
            inputs_shared["latents"] = inputs.start.clone()
            inputs_shared["first_frame_latents"] = inputs.reference.clone()
            inputs_shared["fuse_vae_embedding_in_latents"] = True
            inputs_posi["context"] = inputs.text.clone()
            inputs_posi["condition_emb"] = inputs.pose.clone()
            return inputs_shared, inputs_posi, inputs_nega

    class CapturedDecode:
        latents = None

        def decode(self, latents, **kwargs):
            CapturedDecode.latents = latents.clone()
            return torch.zeros(1, 3, 1, 2, 2)

    pipe = release["WanVideoPipeline"](device="cpu", torch_dtype=torch.bfloat16)
    pipe.dit = model
    pipe.vae = CapturedDecode()
    pipe.units = [Inputs()]
    pipe.post_units = []
    calls = []
    model_fn = pipe.model_fn

    def recorded(**kwargs):
        out = model_fn(**kwargs)
        calls.append(
            dict(
                check=kwargs.get("check", False),
                union_mask=kwargs.get("union_mask"),
                first_masks=kwargs.get("first_masks"),
                latents=kwargs["latents"].clone(),
                timestep=kwargs["timestep"].float().clone(),
                out=out.detach().clone(),
            )
        )
        return out

    pipe.model_fn = recorded
    binary_masks, condition_index = cases.release_binary_masks(inputs.parts)
    frames = [np.zeros((2, 2, 3), np.uint8) for _ in range(config.video_frames)]
    with torch.no_grad():
        pipe(
            prompt="",
            condition_images=frames,
            condition_index=condition_index,
            binary_masks=binary_masks,
            num_inference_steps=config.steps,
            cfg_scale=1.0,
            seed=config.noise_seed,
            progress_bar_cmd=lambda timesteps: timesteps[: config.recorded_steps],
        )
    check = next(call for call in calls if call["check"])
    masked = next(call for call in calls if call["union_mask"] is not None)
    restart = calls[calls.index(check) + 1 :]
    return {
        "forward_without_parts": calls[0]["out"],
        "forward_with_parts": masked["out"],
        "first_masks": np.stack([np.asarray(m, dtype=bool) for m in masked["first_masks"]]),
        "union_masks": masked["union_mask"].bool(),
        "check_latents": check["latents"],
        "attention": check["out"].sum(1)[0],
        "sigmas": pipe.scheduler.sigmas,
        "timesteps": pipe.scheduler.timesteps,
        "model_timesteps": pipe.scheduler.timesteps.to(torch.bfloat16).float(),
        "called_timesteps": torch.stack([call["timestep"].reshape(-1)[0] for call in restart]),
        "denoised": CapturedDecode.latents,
    }


def release_skeleton_case(release: dict, folder: Path) -> dict[str, np.ndarray]:
    """(f) the release's drawing (``Extractor/skeleton.py``'s polylines, BlumNet's
    ``visualise_pts``) and data code (``load_condition_image``, ``calculate_needed_dilation``,
    ``segment_skeleton``, then ``test_ddp.py``'s nearest resize) on the graph of the cases."""
    import cv2

    data_utils = release["data_utils"]
    joints, in_front = cases.graph_track()
    width, height = cases.GRAPH_SOURCE_SIZE
    degree = np.bincount(cases.GRAPH_EDGES.ravel(), minlength=joints.shape[1])
    paths, drawn = [], np.zeros((cases.GRAPH_FRAMES, height, width, 3), np.uint8)
    for f in cases.GRAPH_POSE_FRAMES:
        canvas = np.zeros((height, width, 3), np.uint8)
        for a, b in cases.GRAPH_EDGES[in_front[f][cases.GRAPH_EDGES].all(axis=1)]:
            branch = np.int32(joints[f][[a, b]])
            cv2.polylines(canvas, [branch], False, color=(255, 255, 255), thickness=3)
        ends = joints[f][(degree == 1) & in_front[f]]
        junctions = joints[f][(degree >= 3) & in_front[f]]
        points = {"pts": ((ends, junctions), (np.ones(len(ends)), np.ones(len(junctions))), None)}
        canvas, _ = release["PostProcess"].visualise_pts(points, 0.05, canvas)
        path = folder / f"{f:03d}.png"
        cv2.imwrite(str(path), canvas)
        paths.append(str(path))
        drawn[f] = canvas[..., ::-1]
    subject_path = folder / "graph_id.png"
    cv2.imwrite(str(subject_path), cases.graph_subject_image(joints[0]))
    images, image_height, image_width = data_utils.load_condition_image(
        paths, list(cases.GRAPH_POSE_FRAMES), 832
    )
    dilation = data_utils.calculate_needed_dilation(str(subject_path), paths[0])
    per_frame = []
    for i, path in enumerate(paths):
        masks, grid_w, grid_h = data_utils.segment_skeleton(
            path, str(subject_path) if i == 0 else None, dilation
        )
        per_frame.append(
            [cv2.resize(m, (grid_w, grid_h), interpolation=cv2.INTER_NEAREST) > 127 for m in masks]
        )
    most = max(len(masks) for masks in per_frame)
    stacked = np.zeros((cases.GRAPH_FRAMES, most, grid_h, grid_w), dtype=bool)
    for f, masks in zip(cases.GRAPH_POSE_FRAMES, per_frame, strict=True):
        stacked[f, : len(masks)] = np.stack(masks)
    return {
        "drawn": drawn,
        "images": np.stack([np.asarray(image) for image in images[: cases.GRAPH_FRAMES]]),
        "part_masks": stacked,
        "first_parts": np.array(len(per_frame[0])),
        "dilation": np.array(dilation),
    }


def release_tiling_case(release: dict, seed: int) -> dict[str, torch.Tensor]:
    """(g) the release's ``WanVideoVAE.tiled_decode``/``tiled_encode`` on the fake VAE."""
    vae_class = release["WanVideoVAE"]

    class FakeVAE:
        upsampling_factor = cases.TILE_SCALE
        z_dim = 4
        scale = None

        class model:
            decode = staticmethod(cases.fake_decode)
            encode = staticmethod(cases.fake_encode)

        build_mask = vae_class.build_mask
        build_1d_mask = vae_class.build_1d_mask

    latents, video = cases.tiling_inputs(seed)
    vae = FakeVAE()
    pixel_tile = tuple(cases.TILE_SCALE * side for side in cases.TILE)
    pixel_stride = tuple(cases.TILE_SCALE * side for side in cases.TILE_STRIDE)
    return {
        "tiled_decode": vae_class.tiled_decode(vae, latents, "cpu", cases.TILE, cases.TILE_STRIDE),
        "tiled_encode": vae_class.tiled_encode(vae, video, "cpu", pixel_tile, pixel_stride),
    }


def compare(config, release_out: dict, ours: dict) -> list[tuple[str, str, bool]]:
    """(check, line, passed) per check."""
    diff = cases.relative_difference
    lines = []

    def add(check: str, text: str, value: float, extra_ok: bool = True) -> None:
        passed = value <= cases.TOLERANCE and extra_ok
        lines.append((check, f"({check}) {text}: max relative difference {value:.3g}", passed))

    add("a", "forward without PTCM", diff(ours["a"], release_out["forward_without_parts"]))
    parts = len(release_out["first_masks"])
    add("b", f"forward with {parts} partial parts in the release's union-mask layout",
        diff(ours["b"], release_out["forward_with_parts"]))  # fmt: skip
    attention, union = ours["c"]
    expected = torch.as_tensor(np.asarray(release_out["union_masks"])).bool()
    differing = int((union != expected).sum())
    add("c", f"block {min(int(0.9 * config.layers), config.layers - 1)} read-out attention and "
        f"union masks ({differing} of {expected.numel()} cells differ)",
        diff(attention, release_out["attention"]), differing == 0)  # fmt: skip
    called = release_out["called_timesteps"]
    add("d", f"{config.steps} sigmas, timesteps and embedded timesteps", max(
        *(diff(ours["d"][name], release_out[name])
          for name in ("sigmas", "timesteps", "model_timesteps")),
        diff(ours["d"]["model_timesteps"][: len(called)], called),
    ))  # fmt: skip
    add("e", f"latents after {config.recorded_steps} of {config.steps} steps (PTCM read at "
        "step 5, restart)", diff(ours["e"], release_out["denoised"]))  # fmt: skip
    skeleton = ours["f"]
    release_skeleton = {name: release_out[f"skeleton.{name}"] for name in skeleton}
    quality = min(
        cases.psnr(skeleton[name], release_skeleton[name]) for name in ("drawn", "images")
    )
    cells = int((skeleton["part_masks"] != release_skeleton["part_masks"]).sum()) if (
        skeleton["part_masks"].shape == release_skeleton["part_masks"].shape
    ) else -1  # fmt: skip
    same = cells == 0 and all(
        int(skeleton[k]) == int(release_skeleton[k]) for k in ("first_parts", "dilation")
    )
    images_ok = quality >= cases.MIN_PSNR
    lines.append(("f", f"(f) skeleton images PSNR {quality:.1f} dB, part masks "
                  f"{'identical' if same else f'differ ({cells} cells)'}: max relative "
                  f"difference {0.0 if images_ok and same else 1.0:.3g}",
                  images_ok and same))  # fmt: skip
    add("g", "VAE tiling (34x34 tiles, stride 18x16)", max(
        diff(ours["g"][name], release_out[f"tiling.{name}"]) for name in ours["g"]
    ))  # fmt: skip
    return lines


def golden_arrays(release_out: dict) -> dict[str, np.ndarray]:
    golden = {}
    for name, value in release_out.items():
        if isinstance(value, dict):
            golden.update({f"{name}.{key}": np.asarray(v) for key, v in value.items()})
        else:
            golden[name] = value.numpy() if torch.is_tensor(value) else np.asarray(value)
    return golden


def release_side(official: Path, config, out: Path) -> None:
    """Run the release's half (in the release's Python) and store it as a fixture in ``out``."""
    release = import_release(official)
    inputs = cases.parity_inputs(config)
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "checkpoint"
        model = release["dit"].WanModel(**config.official_model_kwargs())
        keys = {name: list(t.shape) for name, t in model.state_dict().items()}
        tensors = cases.checkpoint_tensors(config.seed, keys)
        cases.write_checkpoint(folder, tensors, index=False)
        release_model = load_release_model(release, config, folder)
        release_out = run_release_pipeline(release, config, release_model, inputs)
        images = Path(temp) / "skeleton"
        images.mkdir()
        release_out["skeleton"] = release_skeleton_case(release, images)
    release_out["tiling"] = release_tiling_case(release, config.seed)
    commit = release_commit(official)
    meta = cases.fixture_meta(config, commit, keys, cases.weights_checksum(tensors))
    cases.save_fixture(out, meta, golden_arrays(release_out))


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="release checkout")
    defaults = cases.ParityConfig()
    for name in CONFIG_FLAGS:
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    parser.add_argument(
        "--release-python",
        default=os.environ.get("POSEANYTHING_RELEASE_PYTHON", sys.executable),
        help="a Python with the release's requirements (see above)",
    )
    parser.add_argument("--write", type=Path, help="store the release's outputs as fixtures here")
    parser.add_argument("--release-side", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = replace(defaults, **{name: getattr(args, name) for name in CONFIG_FLAGS})
    if config.dim % 128 or config.layers < 28 or config.latent_frames != 21:
        parser.error("use a dim that is a multiple of 128, >= 28 layers and 21 latent frames "
                     "(the release hard-codes block 27 and 21 latent frames)")  # fmt: skip
    return args, config


def main(argv: list[str] | None = None) -> int:
    args, config = parse(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    official = args.official.resolve()
    if args.release_side:
        release_side(official, config, args.release_side)
        return 0
    from official_parity_engine import our_side

    with tempfile.TemporaryDirectory() as temp:
        fixture = Path(temp) / "release"
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in asdict(config).items()
                 if name in CONFIG_FLAGS]  # fmt: skip
        command = [args.release_python, __file__, f"--official={official}", *flags]
        done = subprocess.run([*command, f"--release-side={fixture}"])
        if done.returncode:
            print(f"the release's half failed (exit {done.returncode})", file=sys.stderr)
            return 2
        meta, config, release_out = cases.load_fixture(fixture)
        folder = Path(temp) / "checkpoint"
        cases.write_checkpoint(folder, cases.checkpoint_tensors(config.seed, meta["keys"]), False)
        ours = our_side(config, folder, cases.parity_inputs(config), release_out)
        lines = compare(config, release_out, ours)
        for _, line, _ in lines:
            print(line)
        print(f"release commit {meta['official_commit']}")
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            for name in (cases.CASES_JSON, cases.GOLDEN_NPZ):
                shutil.copyfile(fixture / name, args.write / name)
            print(f"fixtures written to {args.write}")
    return 0 if all(passed for _, _, passed in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
