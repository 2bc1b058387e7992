"""Validate and build the extension zip with Blender's own extension tooling.

The tooling (``blender_ext.py``) ships inside the bpy wheel and runs as a plain Python script, so
the zip is exactly what ``blender --command extension build`` would make: the manifest decides
the name, the version and which files go in (``[build] paths_exclude_pattern``); nothing here
repeats it.

Usage: ``python tools/build_extension.py [--output-dir DIR]`` (prints the zip's path).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class ExtensionToolError(RuntimeError):
    """Blender's extension tool rejected the manifest or could not build the zip."""


def extension_cli_path() -> Path:
    """Blender's extension command line script, found in the installed bpy wheel without
    importing bpy (that takes seconds and is not needed to zip files)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionToolError(
            "bpy is not installed in this Python; install it with `pip install bpy==5.0.1`"
        )
    bpy_dir = Path(next(iter(spec.submodule_search_locations)))
    matches = sorted(bpy_dir.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not matches:
        raise ExtensionToolError(f"Blender's extension tool blender_ext.py is not in {bpy_dir}")
    return matches[-1]


def _run_extension_cli(*args: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(extension_cli_path()), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    output = (completed.stdout + completed.stderr).strip()
    if completed.returncode != 0:
        raise ExtensionToolError(f"blender_ext.py {args[0]} failed:\n{output}")
    return output


def validate(source: str | Path = REPO_ROOT) -> str:
    """Validate an extension source folder or a built zip; return the tool's report."""
    return _run_extension_cli("validate", str(source))


def build(output_dir: str | Path, source_dir: str | Path = REPO_ROOT) -> Path:
    """Build the zip into ``output_dir`` and return its path.

    The tool writes into a private temporary folder first, so the one zip found there is ours
    (its name is the tool's business) and an existing zip is only replaced by a complete one.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".build-") as staging:
        _run_extension_cli("build", "--source-dir", str(source_dir), "--output-dir", staging)
        built = list(Path(staging).glob("*.zip"))
        if len(built) != 1:
            raise ExtensionToolError(f"expected one zip from the build, found {built}")
        return built[0].replace(output_dir / built[0].name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=str(REPO_ROOT / "dist"), help="where the zip goes")
    args = parser.parse_args(argv)
    try:
        validate()
        print(build(args.output_dir))
    except ExtensionToolError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
