"""Set up the project's virtual environment, then run the demo or the tests.

The README's two commands go through here, so a fresh machine with only Python 3.11 gets
exactly the environment CI gets. The environment is rebuilt when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".poseanything-installed"


def ensure_environment() -> Path:
    """Create .venv and install the package with its test extras when missing or stale."""
    if sys.version_info[:2] != (3, 11):
        sys.exit(
            f"Python 3.11 is needed (Blender 5.0's bpy module); this is {sys.version.split()[0]}"
        )
    python = BIN / "python"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not python.exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    if not STAMP.exists() or STAMP.read_text() != digest:
        print("Installing poseanything with its test extras (bpy, torch CPU, ...) ...", flush=True)
        subprocess.run(
            [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e",
             f"{ROOT}[test]"],
            check=True,
        )  # fmt: skip
        STAMP.write_text(digest)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print("usage: python3.11 tools/dev.py demo [--out DIR] | test [pytest args]")
        return 2
    command, rest = argv[0], argv[1:]
    python = ensure_environment()
    if command == "demo":
        return subprocess.run([BIN / "poseanything-blender", "demo", *rest], cwd=ROOT).returncode
    for check in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        if subprocess.run([python, "-m", *check], cwd=ROOT).returncode:
            return 1
    return subprocess.run([python, "-m", "pytest", *rest], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
