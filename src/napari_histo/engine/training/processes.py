"""Train in N processes (``napari-histo train --nproc N``) from a GUI, as a followed task.

The Train widget cannot run data-parallel ranks in its own process, so
:func:`train_in_processes` writes the run card (config + the layers' samples, exactly as an
in-process GUI run does) and starts ``python -m napari_histo.cli train --config CARD --nproc N
--events FILE --json --quiet`` as a subprocess (no shell). :func:`follow_process` reads the
events rank 0 appends to FILE and yields them as :mod:`core.progress` events, so the widget runs
it like any engine task. Closing the generator (Stop, the widget or viewer closing) sends the
launcher one SIGINT (it stops every rank; rank 0 saves ``last.pt``; exit 130), then SIGTERM and
SIGKILL after grace periods: no process outlives the task.

A thread worker can only stop a task between two events, so while the processes are quiet
(imports, data loading, validation) the latest status event is repeated every
:data:`HEARTBEAT_S` seconds; consumers treat it as unchanged state.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from napari_histo.core import settings
from napari_histo.core.errors import CancelledError, one_line
from napari_histo.core.progress import Event, Message, Progress, Task
from napari_histo.core.progress_stream import EventLineReader
from napari_histo.engine.training.launch import CANCEL_GRACE_S
from napari_histo.engine.training.loop import TrainingError

__all__ = ["EXIT_INTERRUPTED", "HEARTBEAT_S", "ProcessOutcome", "ProcessTrainResult",
           "follow_process", "train_command_line", "train_in_processes"]

#: exit code of an interrupted CLI run (``napari_histo.cli.EXIT_INTERRUPTED``)
EXIT_INTERRUPTED = 130
#: s between repeats of the latest status event while the processes say nothing
HEARTBEAT_S = 0.3
#: s between reads of the event file
POLL_S = 0.05
#: s the launcher gets after its SIGINT (it gives the ranks CANCEL_GRACE_S) before SIGTERM
STOP_GRACE_S = CANCEL_GRACE_S + 15.0
#: s after SIGTERM before SIGKILL
TERM_GRACE_S = 10.0


@dataclass(frozen=True)
class ProcessOutcome:
    """How a followed process ended: exit code, its stdout and the tail of its stderr."""

    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class ProcessTrainResult:
    """What a multi-process run returned (``train --json``), shaped like a TrainResult."""

    run_dir: Path
    best_checkpoint: str | None
    last_checkpoint: str | None
    best_metrics: dict[str, Any]
    stopped: str
    nproc: int
    warnings: list[str] = field(default_factory=list)


def train_command_line(card: str | Path, nproc: int, events: str | Path, *, out: str | Path,
                       resume: bool = False, epochs: int | None = None) -> list[str]:
    """argv of the launcher: ``python -m napari_histo.cli train --config CARD --nproc N ...``."""
    argv = [sys.executable, "-m", "napari_histo.cli", "train", "--config", str(card),
            "--out", str(out), "--nproc", str(int(nproc)), "--events", str(events),
            "--json", "--quiet"]
    if resume:
        argv.append("--resume")
    if epochs is not None:
        argv += ["--epochs", str(int(epochs))]
    return argv


def _stop(proc: subprocess.Popen[bytes], grace_s: float, term_grace_s: float) -> None:
    """SIGINT, then SIGTERM after ``grace_s``, then SIGKILL after ``term_grace_s``."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, term_grace_s)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _tail(f: IO[bytes], limit: int = 20000) -> str:
    f.seek(0, 2)
    size = f.tell()
    f.seek(max(0, size - limit))
    return f.read().decode("utf-8", "replace")


def follow_process(argv: Sequence[str], events: str | Path, *,
                   on_start: Callable[[subprocess.Popen[bytes]], Any] | None = None,
                   stop_grace_s: float = STOP_GRACE_S, term_grace_s: float = TERM_GRACE_S,
                   heartbeat_s: float = HEARTBEAT_S) -> Generator[Event, None, ProcessOutcome]:
    """Run ``argv`` (no shell) and yield the events it appends to the file ``events``.

    Returns the :class:`ProcessOutcome` once the process has exited and every event was
    read. Closing the generator stops the process (SIGINT, SIGTERM, SIGKILL, each after a
    grace period) before it returns. ``on_start`` gets the started process (tests, pids).
    """
    path = Path(events)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    reader = EventLineReader()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            open(path, "rb") as stream:
        stream.seek(0, 2)  # only what this process appends
        # own session: a Ctrl-C in napari's terminal does not hit it a second time
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=settings.child_environment({}), start_new_session=True)
        try:
            if on_start is not None:
                on_start(proc)
            status: Event = Message(f"started {Path(argv[0]).name} (pid {proc.pid})")
            yield status
            last = time.monotonic()
            while True:
                exited = proc.poll() is not None
                chunk = stream.read()
                new = reader.feed(chunk) if chunk else []
                if exited:
                    new += reader.close()
                for ev in new:
                    if isinstance(ev, Progress) or (isinstance(ev, Message)
                                                    and ev.level == "info"):
                        status = ev
                    yield ev
                    last = time.monotonic()
                if exited:
                    break
                if time.monotonic() - last >= heartbeat_s:
                    yield status  # lets a worker notice a cancel while the run is quiet
                    last = time.monotonic()
                if not new:
                    time.sleep(POLL_S)
        finally:
            _stop(proc, stop_grace_s, term_grace_s)
        out.seek(0)
        return ProcessOutcome(int(proc.returncode), out.read().decode("utf-8", "replace"),
                              _tail(err))


def _last_json(stdout: str) -> dict[str, Any] | None:
    """The last JSON object printed (with ``--nproc`` rank 0 and the launcher may both print)."""
    for line in reversed(stdout.splitlines()):
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                return obj
    return None


def _error_line(outcome: ProcessOutcome, obj: dict[str, Any] | None) -> str:
    """The process's own one-line error, else its last stderr line, else its exit code."""
    if obj is not None and obj.get("error"):
        return one_line(obj["error"])
    lines = [ln.strip() for ln in outcome.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    if errors or lines:
        text = (errors or lines)[-1]
        return one_line(text.split("error:", 1)[-1].strip() if "error:" in text else text)
    return f"training processes exited with code {outcome.returncode}"


def train_in_processes(cfg: Any, nproc: int, *, arrays: list[Any] | None = None,
                       sources: list[dict[str, Any]] | None = None, origin: str = "gui",
                       on_start: Callable[[subprocess.Popen[bytes]], Any] | None = None,
                       ) -> Task[ProcessTrainResult]:
    """Write ``cfg``'s run card, train it in ``nproc`` processes, follow them; a Task.

    ``cfg.resume`` continues the run in ``cfg.out_dir``. Raises TrainingError (or the
    subclass the CLI reported) with the processes' one-line error when they fail, and
    CancelledError when they were interrupted from outside.
    """
    from napari_histo.engine.run_card import write_train_card
    from napari_histo.engine.training import ddp

    ddp.check_batch(ddp.DistContext(world_size=int(nproc)), cfg.batch)  # before any file
    card = write_train_card(cfg, arrays, origin=origin, sources=sources)
    yield Message(f"run card: {card}")
    run_dir = Path(cfg.out_dir).resolve()
    with tempfile.TemporaryDirectory(prefix="napari-histo-events-") as tmp:
        events = Path(tmp) / "events.jsonl"
        argv = train_command_line(card, nproc, events, out=run_dir, resume=bool(cfg.resume),
                                  epochs=cfg.epochs if cfg.resume else None)
        yield Message(f"starting {nproc} training processes...")
        outcome = yield from follow_process(argv, events, on_start=on_start)
    obj = _last_json(outcome.stdout)
    if outcome.returncode == EXIT_INTERRUPTED:
        raise CancelledError(f"training processes were interrupted; resume with: "
                             f"napari-histo train --resume --out {run_dir} --nproc {nproc}")
    if outcome.returncode != 0 or obj is None or not obj.get("ok"):
        raise TrainingError(_error_line(outcome, obj))
    return ProcessTrainResult(
        run_dir=Path(str(obj.get("run_dir") or run_dir)),
        best_checkpoint=obj.get("best_checkpoint"), last_checkpoint=obj.get("last_checkpoint"),
        best_metrics={"epoch": obj.get("best_epoch"),
                      **{k: math.nan if v is None else v  # JSON null: NaN
                         for k, v in (obj.get("metrics") or {}).items()}},
        stopped=str(obj.get("stopped") or ""), nproc=int(nproc),
        warnings=[str(w) for w in obj.get("warnings") or []])
