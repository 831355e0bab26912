"""Run engine task generators in napari thread workers (the only place widgets start threads).

Entry point: :func:`start_task`. An engine task is a generator yielding small
``core.progress`` events and returning its result (Qt-free: the CLI runs it too). It runs in a
``napari.qt.threading`` worker:

* ``yielded`` events go to the widget's ``on_event`` and to a napari progress bar;
* ``returned`` goes to ``on_returned``; a foreseen failure (a HistoError, a file that cannot
  be written, a full disk, too little memory: ``core.errors.describe_failure``) becomes one
  notification without a traceback, anything else (a bug) is relayed to napari's
  notification manager (which offers the traceback);
* cancel = ``worker.quit()``; the worker then closes the engine generator *in the worker
  thread* so its ``finally`` (release slides, write the last checkpoint) runs off the GUI;
* closing the widget or its viewer window cancels the task and waits for the thread to end, so
  nothing keeps running after the window is gone;
* ``NAPARI_HISTO_NOTHREADS=1`` runs the task synchronously in the caller (debugging).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtCore import QEvent, QObject
from superqt.utils import GeneratorWorker

from napari_histo.core import settings
from napari_histo.core.errors import describe_failure
from napari_histo.core.progress import Event, Progress

__all__ = ["NOTHREADS_ENV", "TaskHandle", "active_handles", "start_task", "threads_disabled"]

NOTHREADS_ENV = settings.NOTHREADS_ENV

# Every handle not yet finished, so tests and benchmarks can assert no task outlives its viewer.
_ACTIVE: set[TaskHandle] = set()


def threads_disabled() -> bool:
    """True when ``NAPARI_HISTO_NOTHREADS`` asks for synchronous tasks (debugging)."""
    return settings.threads_disabled()


def active_handles() -> list[TaskHandle]:
    """Tasks started by :func:`start_task` whose generator has not been closed yet."""
    return [h for h in list(_ACTIVE) if not h.done]


def _delegate(gen: Generator[Event, None, Any]) -> Generator[Event, None, Any]:
    """A generator function standing for an already created generator (see below)."""
    return (yield from gen)


class _ClosingGeneratorWorker(GeneratorWorker):
    """A generator worker that always closes its generator in the worker thread.

    The stock loop (``GeneratorWorker.work``) leaves an aborted generator suspended (its
    ``finally`` would run later, on whatever thread garbage-collects it) and turns any
    ``RuntimeError`` (e.g. a torch shape error) into a warning; this loop does neither.

    Only public API: superqt's ``superqt.utils.GeneratorWorker`` (not napari's subclass of
    it, whose mixin would relay every error and warning to the notification manager a
    second time: :func:`start_task` notifies itself), whose documented extension point is
    ``work()``. The task's generator is created here and kept in our own attribute
    (the base class is handed :func:`_delegate` over it, a generator it never starts), so
    nothing reads the base class's private state. Pause/resume are not offered.
    """

    _napari_histo_handle: TaskHandle | None = None

    def __init__(self, func: Callable[..., Generator[Event, None, Any]], *args: Any,
                 **kwargs: Any) -> None:
        gen = func(*args, **kwargs)
        super().__init__(_delegate, gen)
        self._task_gen = gen

    def work(self) -> Any:
        gen = self._task_gen
        _lower_thread_priority()
        try:
            while True:
                if self.abort_requested:
                    self.aborted.emit()
                    return None
                try:
                    out = gen.send(None)
                except StopIteration as stop:
                    return stop.value
                self.yielded.emit(out)
        finally:
            try:
                gen.close()
            finally:
                handle = self._napari_histo_handle
                if handle is not None:
                    handle._mark_done()


WORKER_NICE = 10


def _lower_thread_priority() -> None:
    """Give this worker thread (and the torch threads it starts) a lower CPU priority.

    Linux schedules threads individually and threads inherit their creator's nice value, so
    the GUI thread wins the CPU when a heavy task runs on a small machine; elsewhere this is
    a no-op. Raising one's own niceness needs no privileges.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except (AttributeError, OSError):
        pass


class _CloseWatcher(QObject):
    """Event filter cancelling a task when its widget or the widget's window closes."""

    def __init__(self, handle: TaskHandle) -> None:
        super().__init__()
        self._handle = handle

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:  # noqa: N802 (Qt API)
        if event is not None and event.type() == QEvent.Type.Close:
            self._handle.detach()
        return False


class TaskHandle:
    """One started task: ``cancel()``, ``wait()``, and what it ended with.

    Attributes
    ----------
    name
        Short description, shown on the progress bar.
    worker
        The napari/superqt worker (None in synchronous mode).
    result, error
        The generator's return value, or the exception it raised.
    cancelled
        True when :meth:`cancel` was called before the task finished.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.worker: Any = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.detached = False  # widget gone: deliver no more callbacks
        self.ended = False  # the end has been delivered on the GUI thread: nothing after it
        self._done = threading.Event()
        self._finished_cb: list[Callable[[], Any]] = []
        self._watchers: list[tuple[QObject, _CloseWatcher]] = []
        self._pbar: Any = None

    @property
    def done(self) -> bool:
        """True once the generator is closed (finished, failed or cancelled)."""
        return self._done.is_set()

    @property
    def is_running(self) -> bool:
        """True while the task's generator is still open."""
        return not self._done.is_set()

    def _mark_done(self) -> None:
        self._done.set()
        _ACTIVE.discard(self)

    def cancel(self, *, wait: bool = False, timeout: float = 60.0) -> bool:
        """Ask the task to stop after its current step; optionally block until it has.

        Returns True when the task is finished (always True without ``wait`` if it was).
        """
        if self.done:
            return True
        self.cancelled = True
        if self.worker is not None:
            self.worker.quit()
        if wait:
            self.detached = True
            return self.wait(timeout)
        return self.done

    def detach(self, timeout: float = 60.0) -> bool:
        """The widget is going: deliver no more callbacks, stop the task and wait for it.

        Also when the generator has already ended in the worker thread but its last events
        are still queued for the GUI thread (they would reach deleted Qt widgets).
        """
        self.detached = True
        if self.done:
            return True
        return self.cancel(wait=True, timeout=timeout)

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until the generator is closed; True if it was within ``timeout`` seconds."""
        return self._done.wait(timeout)

    def watch(self, widget: Any) -> None:
        """Cancel (and wait) when ``widget`` or its top-level window closes or is destroyed."""
        native = getattr(widget, "native", widget)
        if native is None:
            return
        targets = {id(native): native}
        try:
            top = native.window()
            targets[id(top)] = top
        except RuntimeError:  # C++ object already gone
            return
        for target in targets.values():
            watcher = _CloseWatcher(self)
            target.installEventFilter(watcher)
            self._watchers.append((target, watcher))
        handle = self
        native.destroyed.connect(lambda *_: handle.detach())

    def _unwatch(self) -> None:
        for target, watcher in self._watchers:
            try:
                target.removeEventFilter(watcher)
            except RuntimeError:
                pass
        self._watchers.clear()


def _make_pbar(desc: str) -> Any:
    """A napari progress bar (shown in the activity dock), or None when napari is absent."""
    try:
        from napari.utils import progress
    except ImportError:  # pragma: no cover - plugin always has napari
        return None
    return progress(total=0, desc=desc)


#: s; napari's progress bar is updated at most this often (the last value always shows)
PBAR_MIN_INTERVAL_S = 0.1


def _update_pbar(pbar: Any, event: Event) -> None:
    """Show ``event`` on the napari progress bar.

    napari's Qt progress bar runs ``QApplication.processEvents()`` on every value and
    description change, which re-enters the event loop (timers, redraws, further worker
    events) from inside this call; so the description is only set when it changes and
    :func:`start_task` calls this at most every ``PBAR_MIN_INTERVAL_S``, never re-entrantly.
    """
    if pbar is None or not isinstance(event, Progress):
        return
    total = max(int(event.total), 0)
    if pbar.total != total:
        pbar.total = total
    pbar.n = min(int(event.done), total) if total else int(event.done)
    if event.desc and event.desc != getattr(pbar, "_napari_histo_desc", None):
        pbar._napari_histo_desc = event.desc
        pbar.set_description(event.desc)
    pbar.refresh()


def _notify_error(exc: BaseException) -> None:
    """One clear message for a user mistake, napari's traceback-capable relay otherwise."""
    from napari.utils.notifications import notification_manager, show_error

    message, foreseen = describe_failure(exc)
    if foreseen:  # bad input, unwritable/full disk, memory: the user's to fix, no traceback
        show_error(message)
    else:
        notification_manager.receive_error(type(exc), exc, exc.__traceback__)


def start_task(
    task_fn: Callable[..., Generator[Event, None, Any]],
    *args: Any,
    on_event: Callable[[Event], Any] | None = None,
    on_returned: Callable[[Any], Any] | None = None,
    on_error: Callable[[BaseException], Any] | None = None,
    on_finished: Callable[[], Any] | None = None,
    desc: str = "napari-histo",
    watch: Any = None,
    progress_bar: bool = True,
    **kwargs: Any,
) -> TaskHandle:
    """Run ``task_fn(*args, **kwargs)`` (an engine generator) in a napari thread worker.

    Parameters
    ----------
    task_fn
        Generator function yielding ``core.progress`` events and returning the result.
    on_event, on_returned, on_finished
        Called on the GUI thread for each event, with the result, and at the very end
        (after success, failure or cancel). Not called once the watched widget is gone.
    on_error
        Called with the exception after it was shown to the user (notification).
    desc
        Progress bar label.
    watch
        A widget (magicgui or Qt): closing it, or its window, cancels the task and waits.
    progress_bar
        Show a napari progress bar fed by ``Progress`` events.

    Returns
    -------
    TaskHandle
        ``cancel()`` stops the task between steps; ``wait()`` blocks until it ended.
    """
    handle = TaskHandle(desc)
    _ACTIVE.add(handle)
    pbar = _make_pbar(desc) if progress_bar else None
    handle._pbar = pbar
    # progress bar throttle: time of the last update, and whether one is running (re-entry)
    pbar_state: dict[str, Any] = {"last": 0.0, "busy": False}

    def _event(ev: Event) -> None:
        if handle.detached or handle.ended:
            return
        if on_event is not None:  # first: the widget sees events in order even if re-entered
            on_event(ev)
        if pbar is None or not isinstance(ev, Progress) or pbar_state["busy"]:
            return
        now = time.monotonic()
        last_one = bool(ev.total) and ev.done >= ev.total
        if now - pbar_state["last"] < PBAR_MIN_INTERVAL_S and not last_one:
            return
        pbar_state["last"] = now
        pbar_state["busy"] = True
        try:
            _update_pbar(pbar, ev)
        finally:
            pbar_state["busy"] = False

    def _returned(value: Any) -> None:
        if handle.ended:
            return
        handle.result = value
        if handle.detached or handle.cancelled:
            return
        if on_returned is not None:
            on_returned(value)

    def _errored(exc: BaseException) -> None:
        handle.error = exc
        if isinstance(exc, GeneratorExit):
            return
        _notify_error(exc)
        if on_error is not None and not handle.detached:
            on_error(exc)

    def _finished() -> None:
        if handle.ended:
            return
        handle.ended = True
        handle._unwatch()
        if pbar is not None:
            try:
                pbar.close()
            except RuntimeError:  # its Qt bar went with the window
                pass
        handle._mark_done()
        if on_finished is not None and not handle.detached:
            on_finished()

    if threads_disabled():
        _run_sync(handle, task_fn, args, kwargs, _event, _returned, _errored, _finished)
        return handle

    from napari.qt.threading import create_worker

    # create_worker also shows the task in the viewer's activity/status (napari's own API)
    worker = create_worker(
        task_fn,
        *args,
        _start_thread=False,
        _worker_class=_ClosingGeneratorWorker,
        _ignore_errors=True,
        **kwargs,
    )
    worker._napari_histo_handle = handle
    handle.worker = worker
    worker.yielded.connect(_event)
    worker.returned.connect(_returned)
    worker.errored.connect(_errored)
    worker.warned.connect(_relay_warning)
    worker.finished.connect(_finished)
    if watch is not None:
        handle.watch(watch)
    worker.start()
    return handle


def _relay_warning(args: tuple[Any, ...]) -> None:
    from napari.utils.notifications import show_warning

    show_warning(str(args[0]) if args else "warning")


def _run_sync(
    handle: TaskHandle,
    task_fn: Callable[..., Generator[Event, None, Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    on_event: Callable[[Event], Any],
    on_returned: Callable[[Any], Any],
    on_errored: Callable[[BaseException], Any],
    on_finished: Callable[[], Any],
) -> None:
    """``NAPARI_HISTO_NOTHREADS=1``: drain the generator right here, same callbacks."""
    gen = task_fn(*args, **kwargs)
    try:
        while True:
            if handle.cancelled:
                break
            try:
                ev = next(gen)
            except StopIteration as stop:
                on_returned(stop.value)
                break
            on_event(ev)
    except Exception as exc:  # relayed exactly like the threaded path
        on_errored(exc)
    finally:
        gen.close()
        handle._mark_done()
        on_finished()


def wait_until_idle(timeout: float = 60.0) -> bool:
    """Block until every task started here has closed its generator (tests, shutdown)."""
    deadline = time.monotonic() + timeout
    for h in active_handles():
        if not h.wait(max(0.0, deadline - time.monotonic())):
            return False
    return True


_TORCH_PRELOADED = False


def preload_torch_training() -> None:
    """Import what torch's optimizers pull in lazily (dynamo, sympy), on the GUI thread.

    Widgets that train call this once per process (~1-3 s) before starting a training task,
    so the worker does not spend its first seconds importing ~900 modules.
    """
    global _TORCH_PRELOADED
    if _TORCH_PRELOADED:
        return
    from napari_histo.engine.devices import avoid_triton_llvm_clash

    avoid_triton_llvm_clash()
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    torch.optim.AdamW([param], lr=1e-3)
    torch.optim.SGD([param], lr=1e-3)
    _TORCH_PRELOADED = True
