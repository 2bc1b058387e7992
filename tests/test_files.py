"""Atomic outputs: readable like any file the user writes, and never replacing silently."""

import json
import os
import stat

import numpy as np
import pytest

from poseanything.engine.contract.files import write_bytes_atomic, write_json_atomic
from poseanything.engine.contract.video import OutputExistsError, write_video


def test_outputs_get_the_umask_permissions_not_owner_only(tmp_path):
    umask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "engine.json", {"seed": 1})
        video = write_video(tmp_path / "take.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=24)
    finally:
        os.umask(umask)
    for path in (tmp_path / "engine.json", video):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
    assert json.loads((tmp_path / "engine.json").read_text()) == {"seed": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine.json", "take.mp4"]


def test_without_overwrite_an_existing_file_is_kept(tmp_path):
    target = tmp_path / "video.mp4"
    target.write_bytes(b"first take")
    with pytest.raises(FileExistsError):
        write_bytes_atomic(target, b"second take", overwrite=False)
    with pytest.raises(OutputExistsError):
        write_video(target, np.zeros((2, 16, 16, 3), np.uint8), fps=24)
    assert target.read_bytes() == b"first take"
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]
    write_bytes_atomic(target, b"second take", overwrite=True)
    assert target.read_bytes() == b"second take"
