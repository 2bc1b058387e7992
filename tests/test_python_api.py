"""The README's Python example, run exactly as it is written there."""

import re
import shutil
from pathlib import Path

from tiny_models import one_torch_thread  # noqa: F401

from poseanything.engine.contract.video import read_video

README = Path(__file__).resolve().parents[1] / "README.md"
EVAL_CLIP = Path(__file__).parent / "data" / "eval_clip"


def readme_python_example() -> str:
    section = README.read_text(encoding="utf-8").split("### From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_python_example_renders_the_demo_shot(tmp_path, monkeypatch):
    code = readme_python_example()
    assert len(code.strip().splitlines()) == 6 + 1  # six lines of code and one blank
    monkeypatch.chdir(tmp_path)
    shutil.copytree(EVAL_CLIP, tmp_path / "out" / "demo" / "Walk")  # an exported shot folder
    exec(compile(code, str(README), "exec"), {})
    frames, fps = read_video(tmp_path / "walk.mp4")
    assert frames.shape == (16, 128, 128, 3) and fps == 24.0
    assert frames.std() > 5  # a picture, not a flat colour
