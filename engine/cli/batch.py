"""``poseanything batch``: render many shot folders, once each, in this process or on a Ray cluster.

The command line of ``engine.batch`` (planning, the resume key, workers and runners live there).
Every ``render`` option is a batch option. The summary table (shot, status, seconds, output) is
printed and written as JSON to ``--summary`` (default ``batch.json`` in ``--out-dir``, else in the
current folder). With ``--progress json`` each line on stdout is one batch event (see
``engine.batch.runners``), and the last is ``summary`` (the JSON written to ``--summary``).
Exit codes: 0 every shot done or skipped; 1 some shot failed; 2 the batch cannot run (bad
options, no model, Ray missing); 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..batch.plan import STATUSES, BatchSettings
from ..contract.files import write_json_atomic
from ..errors import EXIT_BAD_INPUT, BadInput
from .options import add_render_options, cancel_on_signals, model_from_args, settings_from_args
from .output import ProgressOutput, print_line

SUMMARY_NAME = "batch.json"


class BatchProgress:
    """A bar over shots on stderr with the latest shot's step, or JSON lines on stdout."""

    def __init__(self, mode: str, total: int, on_reader_gone: Callable[[], None]) -> None:
        self.mode = mode
        self.total = total
        self.output = ProgressOutput(on_reader_gone)
        self.finished = 0
        self.line = ""

    def __call__(self, event: dict) -> None:
        if self.mode == "json":
            self.output.print(json.dumps(event))
            return
        if event["event"] in STATUSES:
            self.finished += 1
        if self.mode != "bar":
            return
        name = Path(event["shot"]).name
        if event["event"] == "progress":
            self.line = f"{name} step {event['step']}/{event['total']} eta {event['eta_s']:.0f}s"
        elif event["event"] == "start" and event.get("attempt", 1) > 1:
            self.line = f"{name} attempt {event['attempt']}"
        elif event["event"] in ("failed", "cancelled"):
            self.line = f"{name} {event['event']}"
        width = 24
        filled = round(width * self.finished / max(1, self.total))
        self.output.print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.finished}/{self.total} shots  "
            f"{self.line:<50}",
            sys.stderr,
            end="",
        )


def add_batch_command(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``batch`` to the ``poseanything`` command's subparsers, with every render option."""
    batch = commands.add_parser(
        "batch",
        help="render many shot folders, here or on a Ray cluster",
        description="Render each shot folder once, in this process or as Ray tasks; finished "
        "shots are skipped on a re-run, failing ones retried, then reported.",
    )
    batch.add_argument("shot_dirs", type=Path, nargs="+", metavar="SHOT_DIR")
    batch.add_argument(
        "--ray",
        metavar="auto|local|ADDRESS",
        help="render as Ray tasks: auto = the running cluster (after `ray start`), local = a "
        "throwaway cluster of this machine alone, or an address like ray://head:10001 "
        "(default: in this process, one shot after another)",
    )
    batch.add_argument(
        "--gpus-per-shot", type=float, default=0.0, metavar="N", help="Ray GPUs a task holds"
    )
    batch.add_argument(
        "--cpus-per-shot", type=float, default=1.0, metavar="N", help="Ray CPUs a task holds"
    )
    batch.add_argument(
        "--retries", type=int, default=2, metavar="N", help="re-runs of a failing shot (default 2)"
    )
    batch.add_argument(
        "--out-dir",
        type=Path,
        help="write OUT_DIR/<shot folder name>/video.mp4 instead of into the shot folders",
    )
    batch.add_argument(
        "--summary", type=Path, help="summary JSON (default: batch.json in --out-dir, else here)"
    )
    batch.add_argument(
        "--no-shared-fs",
        action="store_true",
        help="Ray workers cannot see the shot folders: send them, and get the videos back, "
        "through Ray's object store (default: shared storage, paths)",
    )
    batch.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    add_render_options(batch)
    batch.set_defaults(handler=batch_command)
    return batch


def batch_settings_from_args(args: argparse.Namespace) -> BatchSettings:
    return BatchSettings(
        render=settings_from_args(args),
        model=model_from_args(args),
        overwrite=args.overwrite,
        out_dir=args.out_dir,
        retries=args.retries,
        ray=args.ray,
        gpus_per_shot=args.gpus_per_shot,
        cpus_per_shot=args.cpus_per_shot,
        shared_fs=not args.no_shared_fs,
    )


def summary_path(args: argparse.Namespace) -> Path:
    if args.summary is not None:
        return args.summary
    return (args.out_dir or Path.cwd()) / SUMMARY_NAME


def batch_command(args: argparse.Namespace) -> int:
    """Run ``poseanything batch``; Ctrl-C or SIGTERM cancel; returns the exit code."""
    from ..batch.runners import run_batch
    from ..inference.cancel import CancelToken

    cancel = CancelToken()
    progress = BatchProgress(args.progress, len(args.shot_dirs), on_reader_gone=cancel.cancel)
    with cancel_on_signals(cancel):
        try:
            summary = run_batch(args.shot_dirs, batch_settings_from_args(args), progress, cancel)
        except BadInput as error:
            print(f"poseanything batch: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    path = summary_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, summary.to_dict())
    output = progress.output
    if output.reader_gone:
        print_line(
            f"poseanything batch: the program reading the progress closed it (broken pipe), so "
            f"the batch was cancelled; the summary is in {path}",
            sys.stderr,
        )
    if args.progress == "json":
        output.print(json.dumps({"event": "summary", "path": str(path), **summary.to_dict()}))
    else:
        if args.progress == "bar":
            output.print("", sys.stderr)
        output.print(summary.table())
        output.print(f"summary: {path}")
    return summary.exit_code
