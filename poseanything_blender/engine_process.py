"""The engine as a child process: started here, heard through JSON lines, polled by ``poll()``.

Blender's UI must not freeze for the minutes a video takes, and the engine needs torch, which
Blender's own Python may not have, so the engine runs as ``python -m poseanything.engine.cli
render ... --progress json`` (or ``batch ... --ray ADDRESS`` for many shots on a Ray cluster, or
``models --json`` to check or download the full model's weights) in the Python chosen in the
preferences. Unless Blender allows online access, the child runs with ``HF_HUB_OFFLINE=1``.
A reader thread turns its stdout into events on a queue and never touches bpy; the main thread
drains the queue in ``EngineProcess.poll()`` (called from a timer in Blender, directly in tests).
stderr goes to a log file, whose path every failure message names.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.errors import EXIT_BAD_INPUT, BadInput

EXTENSION_ROOT = Path(__file__).resolve().parent.parent
ENGINE_MODULE = "poseanything.engine.cli"
CANCEL_GRACE_S = 10.0
"""After a cancel the engine gets this long to stop between two steps before it is killed."""
LOG_TAIL_LINES = 3

RUNNING, CANCELLING, DONE, FAILED, CANCELLED = (
    "RUNNING",
    "CANCELLING",
    "DONE",
    "FAILED",
    "CANCELLED",
)


class EngineSetupError(BadInput):
    """The engine cannot start (no Python with torch); the message says what to set."""


ENGINE_PYTHON_VARIABLE = "POSEANYTHING_ENGINE_PYTHON"
INSTALL_HINT = (
    "press Install Engine (Repair if one is installed) in the PoseAnything preferences, or set "
    "'Engine Python' there to a Python with `pip install 'poseanything[engine]'`"
)
"""What to do about an engine Python that is missing or lacks what the engine imports."""
MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")


def default_engine_python() -> str | None:
    """$POSEANYTHING_ENGINE_PYTHON, else the Python running this code if it can import torch,
    else None (the user must choose). The variable lets headless runs and the tests under
    other Blender versions keep the engine in its own environment, as Blender users do."""
    if os.environ.get(ENGINE_PYTHON_VARIABLE):
        return os.environ[ENGINE_PYTHON_VARIABLE]
    return sys.executable if importlib.util.find_spec("torch") is not None else None


def resolve_engine_python(chosen: str) -> str:
    """The Python to run the engine in: ``chosen`` from the preferences, else the default."""
    if chosen:
        python = Path(chosen).expanduser()
        if not python.is_file():
            raise EngineSetupError(f"the engine Python {python} does not exist; {INSTALL_HINT}")
        return str(python)
    default = default_engine_python()
    if default is None:
        raise EngineSetupError(
            f"Blender's Python cannot import torch, which the engine needs; {INSTALL_HINT}"
        )
    return default


@dataclass(frozen=True)
class EngineSettings:
    """How the engine renders; None values mean "the shot's" or "the model's".

    ``full`` renders with the official model, whose halves come from ``poseanything_weights`` /
    ``wan_weights`` folders (None: the Hugging Face cache); ``online`` lets the engine fetch
    missing weights (only ever set from Blender's "Allow Online Access").
    """

    python: str
    model: str | None = None
    device: str = "auto"
    steps: int | None = None
    full: bool = False
    poseanything_weights: str | None = None
    wan_weights: str | None = None
    cpu_offload: bool = False
    backend: str = "torch"
    online: bool = False

    def weights_options(self) -> list[str]:
        """Where the full model's weights are, for ``render --full`` and ``models``."""
        argv = []
        for option, value in (
            ("--poseanything-weights", self.poseanything_weights),
            ("--wan-weights", self.wan_weights),
        ):
            if value:
                argv += [option, value]
        return argv

    def options(self) -> list[str]:
        argv = ["--progress", "json", "--device", self.device]
        for option, value in (("--model", self.model), ("--steps", self.steps)):
            if value is not None:
                argv += [option, str(value)]
        if self.full:
            argv += ["--full", *self.weights_options()]
            argv += ["--cpu-offload"] if self.cpu_offload else []
        if self.backend != "torch":
            argv += ["--backend", self.backend]
        return argv + (["--online"] if self.online else [])


@dataclass(frozen=True)
class RenderRequest:
    """One ``poseanything render``: a shot folder into one video."""

    shot_dir: Path
    video: Path
    engine: EngineSettings
    ok_codes: tuple[int, ...] = (0,)
    cancelled_message = "cancelled; no video was written"

    def argv(self) -> list[str]:
        command = ["render", str(self.shot_dir), "--out", str(self.video)]
        return [self.engine.python, "-m", ENGINE_MODULE, *command, *self.engine.options()]

    def missing_output(self) -> str | None:
        if self.video.is_file():
            return None
        return (
            f"the engine finished but {self.video} is not there (moved or deleted while the job "
            "ran?); generate again"
        )


@dataclass(frozen=True)
class BatchRequest:
    """One ``poseanything batch`` on a Ray cluster: videos go to ``out_dir/<shot>/video.mp4``.

    Exit code 1 means some shots failed; their errors arrive as events, so it is no crash.
    """

    shot_dirs: tuple[Path, ...]
    out_dir: Path
    ray: str
    engine: EngineSettings
    ok_codes: tuple[int, ...] = (0, 1)
    cancelled_message = "cancelled; no video was written"

    def argv(self) -> list[str]:
        command = ["batch", *map(str, self.shot_dirs), "--ray", self.ray]
        command += ["--out-dir", str(self.out_dir), "--summary", str(self.out_dir / "batch.json")]
        return [self.engine.python, "-m", ENGINE_MODULE, *command, *self.engine.options()]

    def missing_output(self) -> str | None:
        return None


MODELS_MODES = {"check": [], "plan": ["--plan"], "download": ["--download"]}


@dataclass(frozen=True)
class ModelsRequest:
    """One ``poseanything models --json``: ``check`` lists the full model's files here (no
    network), ``plan`` adds every file's size on the hub, ``download`` fetches the missing ones.

    Exit code 1 means "incomplete", which is an answer, not a failure.
    """

    mode: str
    engine: EngineSettings
    ok_codes: tuple[int, ...] = (0, 1)

    @property
    def cancelled_message(self) -> str:
        if self.mode == "download":
            return "download cancelled; the files fetched so far stay in the cache"
        return "cancelled"

    def argv(self) -> list[str]:
        command = ["models", "--json", *self.engine.weights_options(), *MODELS_MODES[self.mode]]
        return [self.engine.python, "-m", ENGINE_MODULE, *command]

    def missing_output(self) -> str | None:
        return None


def _environment(online: bool) -> dict[str, str]:
    """The child's environment: when this extension's folder is named ``poseanything`` (as
    Blender installs it), its parent goes on PYTHONPATH, so the engine Python imports this very
    copy; a pip install is found as usual. Without online access the Hugging Face hub is off."""
    env = dict(os.environ)
    if not online:
        env["HF_HUB_OFFLINE"] = "1"
    if EXTENSION_ROOT.name == "poseanything":
        paths = [str(EXTENSION_ROOT.parent), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class EngineStatus:
    """What the engine process said so far: its state, progress, latest preview and message."""

    state: str = RUNNING
    step: int = 0
    total: int = 0
    eta_s: float = 0.0
    window: int = 0
    windows: int = 0
    preview: str | None = None
    message: str = ""
    started: bool = False
    """The engine loaded the model and began sampling (its ``start`` event)."""
    shots: dict[str, dict] = field(default_factory=dict)
    """Batch runs: the latest event of each shot folder (resolved path)."""
    latest: dict[str, dict] = field(default_factory=dict)
    """The latest event of each kind (``models`` runs read ``plan``, ``file`` and ``models``)."""
    seconds: float = 0.0
    """From the start of the process to its end (set when it finished)."""
    returncode: int | None = None
    """The process's exit code once it ended (2: it refused bad input)."""

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED, CANCELLED)


def _kill_process_group(process: subprocess.Popen) -> None:
    """Kill ``process`` and every process it started (it leads its own group or session)."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True)
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone


class EngineProcess:
    """A running engine command (``render``, ``batch`` or ``models``); ``poll()`` applies what it
    said so far.

    ``env`` replaces the engine's environment; ``process_group`` starts the child in a group of
    its own that Cancel kills at once, children and all (pip, whose work is all or nothing).
    """

    def __init__(
        self,
        request: RenderRequest | BatchRequest | ModelsRequest,
        log_path: Path,
        env: dict[str, str] | None = None,
        process_group: bool = False,
    ) -> None:
        self.request = request
        self.log_path = Path(log_path)
        self.status = EngineStatus()
        self._events: queue.Queue = queue.Queue()
        self._cancel_at: float | None = None
        self._process_group = process_group
        self._started_at = time.monotonic()
        self._log = open(self.log_path, "w", encoding="utf-8")  # closed in _finish
        argv = request.argv()
        group = {}
        if process_group:
            group = (
                {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
                if os.name == "nt"
                else {"start_new_session": True}
            )
        try:
            self._process = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=self._log,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env if env is not None else _environment(request.engine.online),
                **group,
            )
        except OSError as error:
            self._log.close()
            raise EngineSetupError(
                f"cannot start the engine Python {argv[0]} ({error.strerror}); {INSTALL_HINT}"
            ) from error
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._reader.start()

    def _read_events(self) -> None:
        """Reader thread: stdout lines to the queue; no bpy, no shared state but the queue."""
        for line in self._process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "output", "line": line.rstrip("\n")}
            self._events.put(event if isinstance(event, dict) else {"event": "output"})
        self._process.stdout.close()

    def cancel(self) -> None:
        """Ask the engine to stop (it stops between two steps and writes nothing); a process
        group is killed at once."""
        if self.status.finished or self._cancel_at is not None:
            return
        self.status.state = CANCELLING
        self._cancel_at = time.monotonic()
        if self._process_group:
            _kill_process_group(self._process)
        else:
            self._process.terminate()

    def poll(self) -> EngineStatus:
        """Apply the events that arrived; finish when the engine has exited."""
        while True:
            try:
                self._apply(self._events.get_nowait())
            except queue.Empty:
                break
        if self.status.finished:
            return self.status
        if self._cancel_at is not None and time.monotonic() - self._cancel_at > CANCEL_GRACE_S:
            self._process.kill()
        if self._process.poll() is not None and not self._reader.is_alive():
            while not self._events.empty():
                self._apply(self._events.get_nowait())
            self._finish(self._process.returncode)
        return self.status

    def wait(self, poll_s: float = 0.1, on_poll=None) -> EngineStatus:
        """Poll until the engine ends (headless runs); ``on_poll(status)`` after every poll."""
        while not self.poll().finished:
            if on_poll is not None:
                on_poll(self.status)
            time.sleep(poll_s)
        return self.status

    def _apply(self, event: dict) -> None:
        kind = event.get("event")
        status = self.status
        status.latest[str(kind)] = event
        if "shot" in event:
            status.shots[str(event["shot"])] = event
        if kind == "start":
            status.started = True
        elif kind == "progress":
            status.step = int(event.get("step", status.step))
            status.total = int(event.get("total", status.total))
            status.eta_s = float(event.get("eta_s", 0.0))
            status.window = int(event.get("window", 0))
            status.windows = int(event.get("windows", 0))
            status.preview = event.get("preview") or status.preview
        elif kind == "error":
            status.message = self._error_message(event)

    def _error_message(self, event: dict) -> str:
        message = str(event.get("message", "the engine failed"))
        if event.get("kind") == "crash":
            stage = "" if self.status.started else " while loading the model or the shot"
            hint = "" if self.status.started else "; if the model folder is damaged, reinstall it"
            return f"{message}{stage}{hint} (log: {self.log_path})"
        return message

    def _finish(self, returncode: int) -> None:
        self._log.close()
        status = self.status
        status.seconds = time.monotonic() - self._started_at
        status.returncode = returncode
        if self._cancel_at is not None:
            status.state, status.message = CANCELLED, self.request.cancelled_message
        elif returncode in self.request.ok_codes:
            missing = self.request.missing_output()
            status.state = FAILED if missing else DONE
            status.message = missing or ""
        else:
            status.state = FAILED
            if not status.message:
                status.message = self._unexplained_exit_message(returncode)
            elif returncode != EXIT_BAD_INPUT and str(self.log_path) not in status.message:
                status.message += f" (log: {self.log_path})"

    def _unexplained_exit_message(self, returncode: int) -> str:
        """An exit the engine did not explain; a module its Python lacks (an engine Python
        without torch, or without the engine) says how to install one."""
        tail = self.log_tail()
        missing = MISSING_MODULE.search(tail)
        if missing:
            return (
                f"the engine Python {self.request.argv()[0]} has no module "
                f"'{missing.group(1)}'; {INSTALL_HINT} (log: {self.log_path})"
            )
        return f"the engine exited with code {returncode}: {tail} (log: {self.log_path})"

    def log_tail(self) -> str:
        """The last lines of the engine's stderr, for a failure it did not explain itself."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "no output"
        tail = [line.strip() for line in lines if line.strip()][-LOG_TAIL_LINES:]
        return " | ".join(tail) or "no output"
