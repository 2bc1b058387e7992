"""Install Engine: the engine's own Python environment, made from the preferences (no bpy here).

    plan = InstallPlan(target, python, TORCH_BUILDS["CPU"])
    start_install(plan, online=True)     # refuses, saying what to do, before anything is made
    tick() ... / wait()                  # Blender's timer calls tick; tests and scripts wait

The install is a pipeline of child processes, one after another: ``python -m venv`` with the
chosen Python (Blender's own by default), pip installing torch (the chosen build, from its
index), pip installing the rest of the engine's dependencies (``ENGINE_REQUIREMENTS``, the
pyproject's; a test keeps them equal), the engine code this extension carries copied into the
environment, and a probe that imports it. All of it is built in a sibling folder
``<target>.partial-*`` and renamed onto ``target`` at the end (a Repair's environment is moved
aside first and deleted after), so Cancel or a failure leaves nothing half-made: the pip
process group is killed and the folder deleted. One file lock beside the environment refuses a
second install at once, in this Blender or another. Every step's output goes to one log, which
each failure message names.

Check Engine is the probe alone, in the engine Python the preferences give: its Python, its
torch and the device the engine will use. Each step is an ``EngineProcess`` (reader thread,
stderr log, cancel), polled from ``tick`` on the main thread as a Generate is.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..engine.checkpoints.hub import format_size
from ..engine.errors import BadInput
from .engine_process import (
    CANCELLED,
    DONE,
    EXTENSION_ROOT,
    FAILED,
    INSTALL_HINT,
    RUNNING,
    EngineProcess,
    EngineSettings,
    EngineSetupError,
)

MIN_PYTHON = (3, 11)
TORCH_PIN = "torch==2.13.0"
ENGINE_REQUIREMENTS = (
    "numpy<2; python_version < '3.13'",
    "numpy>=2.1; python_version >= '3.13'",
    "pillow",
    "safetensors",
    "diffusers==0.42.1",
    "huggingface_hub",
    "imageio",
    "imageio-ffmpeg",
    "opencv-python-headless>=4.10,<4.12",
)
"""pyproject.toml's dependencies and its ``engine`` extra but torch, which has a step of its own
(the extension zip carries no pyproject.toml; tests/test_engine_install.py keeps them equal)."""
REST_DOWNLOAD_BYTES = 159_000_000
REST_DISK_BYTES = 515_000_000
"""What ``ENGINE_REQUIREMENTS`` and their dependencies take on Linux, Python 3.11: the wheels
``pip download`` fetches, and the growth of a fresh venv they are installed into."""
LOG_NAME = "engine-install.log"
LOCK_NAME = "engine-install.lock"
LOG_TAIL_LINES = 3
OFFLINE_SIGNS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ProxyError",
    "ConnectTimeoutError",
    "No route to host",
)
"""What pip prints when it cannot reach an index."""


class InstallError(BadInput):
    """An install, repair, removal or check that cannot start; the message says what to do."""


@dataclass(frozen=True)
class TorchBuild:
    """One torch build: where pip gets it and what it costs (torch and the libraries it brings)."""

    name: str
    index_url: str
    download_bytes: int
    disk_bytes: int
    description: str

    @property
    def cost(self) -> str:
        return (
            f"about {format_size(self.download_bytes + REST_DOWNLOAD_BYTES)} to download, "
            f"{format_size(self.disk_bytes + REST_DISK_BYTES)} on disk"
        )


TORCH_BUILDS = {
    "CPU": TorchBuild(
        "CPU",
        "https://download.pytorch.org/whl/cpu",
        202_000_000,
        865_000_000,
        "Runs on any computer; the bundled default model renders on the CPU",
    ),
    "CUDA": TorchBuild(
        "CUDA",
        "https://download.pytorch.org/whl/cu130",
        2_740_000_000,
        4_900_000_000,
        "For an NVIDIA GPU (the full model needs one with 24 GB); brings NVIDIA's CUDA libraries",
    ),
}
"""Measured for torch 2.13.0 on Linux, Python 3.11, with the libraries each brings: the CPU
build's wheels as downloaded and a fresh venv's growth once they are installed; the CUDA build's
wheels (torch, triton, cuda-toolkit and nvidia-* for CUDA 13) by their sizes on the package
index, and its disk by the files the wheels hold plus the bytecode the CPU build's install
compiled (the build is too large to download here)."""


def venv_python(env: Path) -> Path:
    """The Python of the virtual environment at ``env``."""
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@dataclass(frozen=True)
class InstallPlan:
    """What Install Engine builds: a venv at ``target`` made by ``python``, with torch (None:
    no torch, for small test installs), ``requirements`` and the engine code from
    ``engine_source``; ``pip_options`` are added to every pip call (e.g. ``--no-index
    --find-links DIR`` for a folder of wheels)."""

    target: Path
    python: str
    torch: TorchBuild | None = TORCH_BUILDS["CPU"]
    requirements: tuple[str, ...] = ENGINE_REQUIREMENTS
    pip_options: tuple[str, ...] = ()
    engine_source: Path = EXTENSION_ROOT

    @property
    def needed_bytes(self) -> int:
        """Free space wanted where the environment goes: the wheels and what they unpack to."""
        needed = 50_000_000  # the venv, pip and the engine code
        if self.torch is not None:
            needed += self.torch.download_bytes + self.torch.disk_bytes
        if self.requirements:
            needed += REST_DOWNLOAD_BYTES + REST_DISK_BYTES
        return needed

    @property
    def log_path(self) -> Path:
        return self.target.parent / LOG_NAME

    def steps(self, staging: Path) -> list[Step]:
        python = str(venv_python(staging))
        pip = (python, "-m", "pip", "install", "--progress-bar", "off", *self.pip_options)
        steps = [Step("creating the environment", (self.python, "-m", "venv", str(staging)), 1)]
        if self.torch is not None:
            steps.append(
                Step(
                    f"installing torch ({self.torch.name} build)",
                    (*pip, "--index-url", self.torch.index_url, TORCH_PIN),
                    6,
                )
            )
        if self.requirements:
            steps.append(
                Step("installing the engine's dependencies", (*pip, *self.requirements), 3)
            )
        copy = (python, "-c", COPY_ENGINE, str(self.engine_source))
        steps.append(Step("installing the engine", copy, 0.5))
        steps.append(Step("checking the engine", (python, "-c", PROBE), 1))
        return steps


COPY_ENGINE = r"""
import shutil, sys, sysconfig
from pathlib import Path
source = Path(sys.argv[1])
package = Path(sysconfig.get_paths()["purelib"]) / "poseanything"
package.mkdir()
shutil.copy2(source / "__init__.py", package)
shutil.copytree(source / "engine", package / "engine", ignore=shutil.ignore_patterns("__pycache__"))
print(f"copied the engine to {package}")
"""
"""The engine is all the engine Python needs of this package: ``__init__`` registers nothing at
import, and the engine never imports the add-on side."""

PROBE = r"""
import json, os, platform, sys
report = {"event": "engine", "python": sys.executable, "version": platform.python_version(),
          "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
try:
    import torch
except Exception as error:
    report["torch_error"] = f"{type(error).__name__}: {error}"
else:
    report["torch"] = torch.__version__
    if torch.cuda.is_available():
        device = torch.cuda.get_device_properties(0)
        report["cuda"] = {"name": device.name, "memory": device.total_memory}
try:
    import poseanything.engine.cli as cli
    report["engine"] = os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__)))
except Exception as error:
    report["engine_error"] = f"{type(error).__name__}: {error}"
print(json.dumps(report))
"""
"""What Check Engine and the install's last step ask the engine Python (one JSON line)."""


@dataclass(frozen=True)
class EngineReport:
    """The probe's answer: the engine Python, its torch and the device the engine will use."""

    python: str
    version: str
    cpu: str
    cores: int
    torch: str | None = None
    torch_error: str = ""
    cuda_name: str = ""
    cuda_memory: int = 0
    engine: str = ""
    engine_error: str = ""

    @classmethod
    def from_event(cls, event: dict) -> EngineReport:
        cuda = event.get("cuda") or {}
        return cls(
            python=str(event["python"]),
            version=str(event["version"]),
            cpu=str(event.get("cpu") or "?"),
            cores=int(event.get("cores") or 0),
            torch=event.get("torch"),
            torch_error=str(event.get("torch_error", "")),
            cuda_name=str(cuda.get("name", "")),
            cuda_memory=int(cuda.get("memory", 0)),
            engine=str(event.get("engine", "")),
            engine_error=str(event.get("engine_error", "")),
        )

    def moved(self, old: Path, new: Path) -> EngineReport:
        """The same report for the environment renamed from ``old`` to ``new``."""

        def rename(path: str) -> str:
            return path.replace(str(old), str(new), 1) if path.startswith(str(old)) else path

        return dataclasses.replace(self, python=rename(self.python), engine=rename(self.engine))

    @property
    def problem(self) -> str:
        """Why the engine cannot run in this Python ("" when it can)."""
        if self.torch is None:
            return f"torch does not import in {self.python} ({self.torch_error})"
        if self.engine_error:
            return f"the engine does not import in {self.python} ({self.engine_error})"
        return ""

    @property
    def device(self) -> str:
        if self.cuda_name:
            return f"CUDA GPU: {self.cuda_name}, {format_size(self.cuda_memory)}"
        return f"CPU: {self.cpu}, {self.cores} cores (no CUDA GPU)"

    def lines(self) -> list[str]:
        """What Check Engine shows, one line each."""
        lines = [f"Python {self.version}: {self.python}"]
        lines.append(f"torch {self.torch}" if self.torch else f"torch: {self.torch_error}")
        if self.torch:
            lines.append(f"Device: {self.device}")
        lines.append(f"Engine: {self.engine}" if self.engine else f"Engine: {self.engine_error}")
        return lines


@dataclass(frozen=True)
class Step:
    label: str
    argv: tuple[str, ...]
    weight: float


@dataclass(frozen=True)
class StepRequest:
    """One step as an ``EngineProcess`` runs it."""

    argv_: tuple[str, ...]
    ok_codes: tuple[int, ...] = (0,)
    cancelled_message = "cancelled"

    def argv(self) -> list[str]:
        return list(self.argv_)

    def missing_output(self) -> str | None:
        return None


@dataclass(frozen=True)
class ProbeRequest:
    """Check Engine: the probe in the engine Python, with the environment a Generate gives it."""

    engine: EngineSettings
    ok_codes: tuple[int, ...] = (0,)
    cancelled_message = "check cancelled"

    def argv(self) -> list[str]:
        return [self.engine.python, "-c", PROBE]

    def missing_output(self) -> str | None:
        return None


class _StepProcess(EngineProcess):
    """An engine process that keeps every line its child printed (pip prints plain text)."""

    def __init__(self, *args, **kwargs) -> None:
        self.lines: list[str] = []
        super().__init__(*args, **kwargs)

    def _apply(self, event: dict) -> None:
        super()._apply(event)
        if "line" in event:
            self.lines.append(event["line"])


def _step_environment() -> dict[str, str]:
    """The steps' environment: this one without what would point Python elsewhere (Blender's
    or a venv's paths); pip's own settings (index, proxy, find-links) stay."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONNOUSERSITE="1",
        PIP_NO_INPUT="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


_PIP_ACTIVITY = (
    (re.compile(r"^Collecting (\S+)"), "collecting {0}"),
    (re.compile(r"^\s*Downloading (\S+?\.whl|\S+?\.tar\.gz) \(([^)]+)\)"), "downloading {0} ({1})"),
    (re.compile(r"^Processing (\S+)"), "unpacking {0}"),
    (re.compile(r"^Installing collected packages: (.*)"), "installing {0}"),
    (re.compile(r"^Successfully installed"), "installed"),
)


def _short_name(text: str) -> str:
    """``pillow-13.0.0`` for a wheel's or sdist's path; other text as it is."""
    name = Path(text).name
    if name.endswith((".whl", ".tar.gz", ".zip")):
        return "-".join(name.removesuffix(".tar.gz").split("-")[:2])
    return text


def pip_activity(line: str) -> str | None:
    """What pip is doing, from one line of its output (None: a line that says nothing new)."""
    for pattern, text in _PIP_ACTIVITY:
        match = pattern.match(line)
        if match is not None:
            activity = text.format(*map(_short_name, match.groups()))
            return activity if len(activity) <= 80 else activity[:77] + "..."
    return None


def _lock(folder: Path):
    """Hold the install lock of ``folder``: an open file the OS unlocks when this process dies,
    so a crashed Blender never blocks the next install. None if another install holds it."""
    path = folder / LOCK_NAME
    while True:
        handle = open(path, "a+b")
        try:
            if os.name == "nt":
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        if os.name == "nt" or _same_file(handle, path):
            return handle
        handle.close()  # its holder deleted it while we waited for it: lock the new one


def _same_file(handle, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _unlock(handle, folder: Path) -> None:
    """Delete the lock file while still holding it (Windows cannot), then let it go."""
    if os.name != "nt":
        (folder / LOCK_NAME).unlink(missing_ok=True)
    handle.close()
    if os.name == "nt":
        (folder / LOCK_NAME).unlink(missing_ok=True)


@dataclass
class SetupStatus:
    """What the preferences show of a running install or check."""

    state: str = RUNNING
    step: int = 0
    steps: int = 0
    label: str = ""
    activity: str = ""
    fraction: float = 0.0
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED, CANCELLED)

    @property
    def text(self) -> str:
        """The progress bar's text: the step and what pip is at."""
        head = f"Step {self.step}/{self.steps}: {self.label}" if self.steps > 1 else self.label
        return f"{head}: {self.activity}" if self.activity else head


class StepRun:
    """Steps run one after another as child processes; ``poll()`` moves them on."""

    kind = "check"

    def __init__(self, steps: list[Step], log_path: Path) -> None:
        self.steps = steps
        self.log_path = log_path
        self.status = SetupStatus(steps=len(steps))
        self.report: EngineReport | None = None
        self._index = -1
        self._seen = 0
        self._collected = 0
        self._installing = False
        self._stderr = ""
        self.process: _StepProcess | None = None
        self._log = open(log_path, "w", encoding="utf-8")  # closed in _end
        self._next()

    def _start(self, step: Step) -> _StepProcess:
        return _StepProcess(
            StepRequest(step.argv),
            self.log_path.with_suffix(".step.log"),
            env=_step_environment(),
            process_group=True,
        )

    def _next(self) -> None:
        self._index += 1
        step = self.steps[self._index]
        self.status.step, self.status.label, self.status.activity = self._index + 1, step.label, ""
        self._seen, self._collected, self._installing = 0, 0, False
        command = " ".join("<script>" if "\n" in arg else arg for arg in step.argv)
        self._log.write(f"== {step.label}\n$ {command}\n")
        self._log.flush()
        try:
            self.process = self._start(step)
        except EngineSetupError as error:
            self._end(FAILED, f"{step.label} could not start: {error}")

    def poll(self) -> SetupStatus:
        if self.status.finished:
            return self.status
        process = self.process
        status = process.poll()
        for line in process.lines[self._seen :]:
            self._log.write(line + "\n")
            activity = pip_activity(line)
            if activity is not None:
                self.status.activity = activity
                self._collected += activity.startswith("collecting")
                self._installing |= activity.startswith("installing")
        self._seen = len(process.lines)
        self.status.fraction = self._fraction()
        if not status.finished:
            return self.status
        self._log_stderr(process)
        if "engine" in status.latest:
            self.report = EngineReport.from_event(status.latest["engine"])
        if status.state == CANCELLED:
            self._end(CANCELLED, self.cancelled_message())
        elif status.state != DONE:
            self._end(FAILED, self._failure(process))
        elif self._problem():
            self._end(FAILED, f"{self._problem()} (log: {self.log_path})")
        elif self._index + 1 < len(self.steps):
            self._next()
        else:
            self._succeeded()
        return self.status

    def _fraction(self) -> float:
        weights = [step.weight for step in self.steps]
        done = sum(weights[: self._index])
        within = 0.75 if self._installing else 0.6 * self._collected / (self._collected + 3)
        return min(1.0, (done + weights[self._index] * within) / sum(weights))

    def _log_stderr(self, process: EngineProcess) -> None:
        try:
            text = process.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        self._log.write(text + f"({process.status.state.lower()}) {process.status.message}\n")
        self._log.flush()
        process.log_path.unlink(missing_ok=True)
        self._stderr = text

    def _failure(self, process: _StepProcess) -> str:
        """What went wrong in the step that failed, and what to do about it."""
        step = self.steps[self._index]
        output = self._stderr.splitlines() + process.lines
        lines = [line.strip() for line in self._stderr.splitlines() if line.strip()]
        tail = " | ".join(lines[-LOG_TAIL_LINES:]) or process.log_tail()
        where = f"(log: {self.log_path})"
        if any(sign in line for line in output for sign in OFFLINE_SIGNS):
            return (
                f"{step.label} failed: pip cannot reach the package index (offline?). Connect to "
                f"the internet (or set pip's proxy) and try again {where}"
            )
        if any("No space left on device" in line for line in output):
            return f"{step.label} failed: the disk is full; free some space and try again {where}"
        return f"{step.label} failed: {tail} {where}"

    def _problem(self) -> str:
        """Why the probe says the engine cannot run ("" when it can, or before the probe)."""
        if self.report is None or not self.report.problem:
            return ""
        return f"{self.report.problem}; {INSTALL_HINT}"

    def cancelled_message(self) -> str:
        return "Check Engine cancelled"

    def _succeeded(self) -> None:
        self._end(DONE, "")

    def _end(self, state: str, message: str) -> None:
        self.process = None
        self.status.state, self.status.message = state, message
        self.status.fraction = 1.0 if state == DONE else 0.0
        self._log.write(f"== {state.lower()}: {message}\n")
        self._log.close()

    def cancel(self) -> None:
        if self.process is not None:
            self.process.cancel()
            self.status.activity = "cancelling"

    def wait(self, poll_s: float = 0.1) -> SetupStatus:
        while not self.poll().finished:
            time.sleep(poll_s)
        return self.status


class EngineInstall(StepRun):
    """Install Engine (and Repair): the plan's steps in ``staging``, renamed onto its target."""

    kind = "install"

    def __init__(self, plan: InstallPlan, staging: Path, lock) -> None:
        self.plan, self.staging, self._lock = plan, staging, lock
        super().__init__(plan.steps(staging), plan.log_path)

    def _problem(self) -> str:
        report = self.report
        if report is None:
            return ""
        if report.engine_error:
            return f"the engine does not import in the new environment ({report.engine_error})"
        if self.plan.torch is not None and report.torch is None:
            return f"torch does not import in the new environment ({report.torch_error})"
        return ""

    def cancelled_message(self) -> str:
        kept = " (the engine installed before is unchanged)" if self.plan.target.exists() else ""
        return f"Install Engine cancelled; nothing was installed{kept}"

    def _succeeded(self) -> None:
        target = self.plan.target
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        try:
            if target.exists():
                target.rename(old)
            self.staging.rename(target)
        except OSError as error:
            if old.exists() and not target.exists():
                old.rename(target)
            self._end(FAILED, f"cannot move the new engine into {target}: {error}")
            return
        shutil.rmtree(old, ignore_errors=True)
        if self.report is not None:  # the probe ran in the staging folder
            self.report = self.report.moved(self.staging, target)
        self._end(DONE, f"engine installed in {target}")

    def _end(self, state: str, message: str) -> None:
        super()._end(state, message)
        shutil.rmtree(self.staging, ignore_errors=True)
        if self._lock is not None:
            _unlock(self._lock, self.plan.target.parent)
            self._lock = None

    @property
    def python(self) -> Path:
        """The engine Python once the install is done."""
        return venv_python(self.plan.target)


def python_version(python: str) -> tuple[int, ...]:
    """The version of ``python``, which must be able to make a venv with pip."""
    path = Path(python)
    if not path.is_file():
        raise InstallError(
            f"the Python {python} does not exist; clear 'Install With' to use Blender's own "
            f"Python, or name a Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or later"
        )
    script = "import sys; print(*sys.version_info[:3], flush=True); import venv, ensurepip"
    try:
        done = subprocess.run(
            [python, "-c", script], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InstallError(f"cannot run the Python {python} ({error}); name another one") from error
    version = tuple(int(part) for part in done.stdout.split() if part.isdigit())
    if done.returncode != 0 and not (len(version) == 3 and version[:2] < MIN_PYTHON):
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InstallError(
            f"the Python {python} cannot make an environment ({reason}); name a Python with "
            "venv and ensurepip (on Debian or Ubuntu: apt install python3-venv)"
        )
    return version


def _existing_folder(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


@dataclass
class SetupState:
    """The running install or check, and what the last one said (the preferences draw it)."""

    run: StepRun | None = None
    message: str = ""
    ok: bool = True
    log: str = ""
    report: EngineReport | None = None
    report_python: str = ""


STATE = SetupState()


def online_access_off(plan: InstallPlan) -> str:
    return (
        "Blender's Allow Online Access is off: turn it on in Preferences > System > Network, "
        f"then press Install Engine ({plan.torch.cost if plan.torch else 'a small download'})"
    )


def start_install(plan: InstallPlan, online: bool) -> EngineInstall:
    """Start Install Engine (or Repair, if ``plan.target`` exists) after checking everything that
    can be checked first; raises ``InstallError`` saying what to do, leaving nothing behind."""
    if not online:
        raise InstallError(online_access_off(plan))
    if STATE.run is not None:
        raise InstallError(_busy())
    folder = plan.target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(folder)
    except OSError as error:
        raise InstallError(_unwritable(folder, error)) from error
    if lock is None:
        raise InstallError(
            "another Install Engine is running for this folder (in another Blender?); wait for it "
            "to finish"
        )
    try:
        staging = _prepare(plan)
    except BaseException:
        _unlock(lock, folder)
        raise
    run = EngineInstall(plan, staging, lock)
    _started(run)
    return run


def _prepare(plan: InstallPlan) -> Path:
    """Check the Python and the space, clear what a crashed install left, make the staging
    folder (the lock is held)."""
    version = python_version(plan.python)
    if version[:2] < MIN_PYTHON:
        raise InstallError(
            f"{plan.python} is Python {'.'.join(map(str, version))}; the engine needs Python "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or later: name another Python in 'Install With', "
            "or leave it empty for Blender's own"
        )
    folder = plan.target.parent
    free = shutil.disk_usage(_existing_folder(folder)).free
    if free < plan.needed_bytes:
        raise InstallError(
            f"not enough free space in {folder}: the engine needs about "
            f"{format_size(plan.needed_bytes)}, {format_size(free)} is free; free some space "
            "and try again"
        )
    for leftover in [*folder.glob(f"{plan.target.name}.partial-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in [*folder.glob(f"{plan.target.name}.old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f"{plan.target.name}.partial-", dir=folder))
    except OSError as error:
        raise InstallError(_unwritable(folder, error)) from error


def _unwritable(folder: Path, error: OSError) -> str:
    return (
        f"cannot write to {folder} ({error.strerror or error}): the engine is installed in the "
        "extension's user folder; make it writable (check its permissions and the disk) and "
        "try again"
    )


def _busy() -> str:
    kind = "Install Engine" if STATE.run.kind == "install" else "Check Engine"
    return f"{kind} is running; wait for it or press Cancel"


def _started(run: StepRun) -> None:
    STATE.run, STATE.message, STATE.ok, STATE.log = run, "", True, str(run.log_path)


def check_engine(engine: EngineSettings) -> StepRun:
    """Start Check Engine: the probe in ``engine.python``; ``STATE.report`` has its answer."""
    if STATE.run is not None:
        raise InstallError(_busy())
    folder = Path(tempfile.gettempdir()) / "poseanything-engine"
    folder.mkdir(exist_ok=True)
    run = _ProbeRun(ProbeRequest(engine), folder / "check-engine.log")
    _started(run)
    return run


class _ProbeRun(StepRun):
    """Check Engine's one step, with the environment a Generate gives the engine."""

    def __init__(self, request: ProbeRequest, log_path: Path) -> None:
        self.request = request
        super().__init__([Step("checking the engine", tuple(request.argv()), 1)], log_path)

    def _start(self, step: Step) -> _StepProcess:
        return _StepProcess(self.request, self.log_path.with_suffix(".step.log"))

    def _succeeded(self) -> None:
        if self.report is None:
            self._end(FAILED, f"the engine Python gave no answer (log: {self.log_path})")
        else:
            self._end(DONE, "")


def cancel() -> bool:
    """Cancel the running install or check; whether one ran."""
    if STATE.run is None:
        return False
    STATE.run.cancel()
    return True


def tick() -> StepRun | None:
    """Move the running install or check on; returns it once it has finished (else None)."""
    run = STATE.run
    if run is None:
        return None
    status = run.poll()
    if not status.finished:
        return None
    STATE.run = None
    STATE.message, STATE.ok = status.message, status.state == DONE
    if run.report is not None:
        STATE.report, STATE.report_python = run.report, run.report.python
    if run.kind == "check" and status.state != FAILED:
        run.log_path.unlink(missing_ok=True)
        STATE.log = ""
    return run


def wait(poll_s: float = 0.1) -> StepRun | None:
    """Tick until the running install or check ends (headless, tests); returns it."""
    run = STATE.run
    while STATE.run is not None:
        tick()
        time.sleep(poll_s)
    return run


def stop() -> None:
    """Cancel and wait for the running install or check (unregistering, quitting)."""
    run = STATE.run
    if run is not None:
        run.cancel()
        run.wait(poll_s=0.05)
        STATE.run = None


def remove_engine(target: Path) -> str:
    """Delete the installed environment (and its log); returns what was done."""
    if STATE.run is not None:
        raise InstallError(_busy())
    folder = target.parent
    if not target.exists():
        raise InstallError(f"no engine is installed in {target}")
    lock = _lock(folder)
    if lock is None:
        raise InstallError("Install Engine is running for this folder; wait for it to finish")
    try:
        shutil.rmtree(target)
    except OSError as error:
        raise InstallError(
            f"cannot delete {target} ({error.strerror}); close programs using it and try again"
        ) from error
    finally:
        _unlock(lock, folder)
    (folder / LOG_NAME).unlink(missing_ok=True)
    STATE.message, STATE.ok, STATE.log, STATE.report = f"removed {target}", True, "", None
    return STATE.message
