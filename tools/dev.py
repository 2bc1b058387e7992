"""Set up the project's virtual environments, then run the demo or the tests.

The README's two commands go through here, so a fresh machine gets exactly the environments CI
gets. ``.venv`` (Python 3.11, bpy 5.0.1, the engine) runs the whole suite and is the engine's
environment for every Blender version; ``.venv-blender4.5`` and ``.venv-blender5.2`` hold only
that version's bpy wheel and the add-on, and run the bpy-side tests (marked ``blender``) with
the engine as a child process in ``.venv``, as in Blender. An environment is rebuilt when
pyproject.toml or its bpy pin changes.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = "Scripts" if os.name == "nt" else "bin"
MAIN_BLENDER = "5.0"
BLENDERS = {
    # Blender version: the Python its bpy wheel is built for, that wheel.
    "4.5": ("3.11", "bpy==4.5.15"),
    "5.0": ("3.11", "bpy==5.0.1"),
    "5.2": ("3.13", "bpy==5.2.3"),
}
BLENDER_TEST_TOOLS = ["pytest", "imageio", "imageio-ffmpeg"]
"""Beside bpy and the add-on in the other Blenders' environments: the tests read the takes'
videos with imageio (the add-on itself never imports it)."""
USAGE = """usage: python3.11 tools/dev.py demo [--out DIR]
       python3.11 tools/dev.py test [--blender 4.5,5.0,5.2] [pytest args]
test without test paths runs the whole suite under Blender 5.0 and the bpy-side tests under
4.5 and 5.2; with test paths, only under 5.0; --blender names the versions to run under."""


def venv_folder(blender: str) -> Path:
    return ROOT / (".venv" if blender == MAIN_BLENDER else f".venv-blender{blender}")


def find_python(version: str) -> str:
    """An interpreter of ``version`` (``3.13``): this one, one on PATH, or one pyenv installed."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"))[::-1]
    for python in filter(None, candidates):
        probe = [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        found = subprocess.run(probe, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == version:
            return python
    sys.exit(
        f"Python {version} is needed (Blender's bpy wheel for it); install it (e.g. "
        f"`pyenv install {version}`) or leave that Blender out with --blender"
    )


def ensure_environment(blender: str = MAIN_BLENDER) -> Path:
    """Create the environment for ``blender`` and install into it when missing or stale."""
    python_version, bpy_pin = BLENDERS[blender]
    folder = venv_folder(blender)
    python = folder / BIN / "python"
    stamp = folder / ".poseanything-installed"
    pins = " ".join([bpy_pin, *BLENDER_TEST_TOOLS]).encode()
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + pins).hexdigest()
    if not python.exists():
        print(f"Creating {folder} (Python {python_version}) ...", flush=True)
        if sys.version_info[:2] == tuple(map(int, python_version.split("."))):
            venv.create(folder, with_pip=True)
        else:
            subprocess.run([find_python(python_version), "-m", "venv", folder], check=True)
    if not stamp.exists() or stamp.read_text() != digest:
        if blender == MAIN_BLENDER:
            print("Installing poseanything with its test extras (bpy, torch CPU, ...) ...")
            packages = ["-e", f"{ROOT}[test]"]
        else:
            print(f"Installing {bpy_pin} and the add-on (no engine: it runs in .venv) ...")
            packages = ["-e", str(ROOT), bpy_pin, *BLENDER_TEST_TOOLS]
        subprocess.run(
            [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *packages],
            check=True,
        )
        stamp.write_text(digest)
    return python


def blender_test_files() -> list[str]:
    """The test modules marked ``blender``: only they are collected where there is no torch."""
    marked = "pytestmark = pytest.mark.blender"
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    return [str(path.relative_to(ROOT)) for path in tests if marked in path.read_text()]


def split_blenders(args: list[str]) -> tuple[list[str] | None, list[str]]:
    """``--blender 4.5,5.2`` (or ``--blender=...``) out of the pytest arguments."""
    chosen, rest = None, []
    words = iter(args)
    for word in words:
        if word == "--blender" or word.startswith("--blender="):
            value = word.partition("=")[2] or next(words, "")
            chosen = [v for v in value.split(",") if v]
            unknown = [v for v in chosen if v not in BLENDERS]
            if unknown or not chosen:
                sys.exit(f"--blender takes some of {', '.join(BLENDERS)}; got {value!r}")
        else:
            rest.append(word)
    return chosen, rest


def run_tests(args: list[str]) -> int:
    chosen, rest = split_blenders(args)
    targeted = any(
        (ROOT / word.split("::")[0]).exists() for word in rest if not word.startswith("-")
    )
    if chosen is None:
        chosen = [MAIN_BLENDER] if targeted else list(BLENDERS)
    pythons = {blender: ensure_environment(blender) for blender in chosen}
    main_python = ensure_environment(MAIN_BLENDER)
    for check in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        if subprocess.run([main_python, "-m", *check], cwd=ROOT).returncode:
            return 1
    for blender, python in pythons.items():
        python_version, bpy_pin = BLENDERS[blender]
        if blender == MAIN_BLENDER:
            print(f"== Blender {blender} ({bpy_pin}, Python {python_version})", flush=True)
            command, env = [python, "-m", "pytest", *rest], None
        else:
            print(f"== Blender {blender} ({bpy_pin}, Python {python_version}): bpy-side tests")
            sys.stdout.flush()
            paths = [] if targeted else blender_test_files()
            command = [python, "-m", "pytest", "-m", "blender", *rest, *paths]
            env = {**os.environ, "POSEANYTHING_ENGINE_PYTHON": str(main_python)}
        code = subprocess.run(command, cwd=ROOT, env=env).returncode
        if code:
            print(f"== Blender {blender}: pytest exited {code}", flush=True)
            return code
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(USAGE)
        return 2
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"Run this with Python 3.11 (the engine's and bpy 5.0's); this is {sys.version}")
    command, rest = argv[0], argv[1:]
    if command == "demo":
        ensure_environment()
        demo = venv_folder(MAIN_BLENDER) / BIN / "poseanything-blender"
        return subprocess.run([demo, "demo", *rest], cwd=ROOT).returncode
    return run_tests(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
