"""start_task: events reach the GUI thread, cancel closes the engine generator in its thread,
closing the viewer mid-run leaves no running task, user mistakes become one notification."""

from __future__ import annotations

import threading
import time

import pytest

from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import Progress
from napari_histo.plugin._workers import active_handles, start_task


def _slow_task(n: int, log: dict, delay: float = 0.02):
    log["thread"] = threading.get_ident()
    try:
        for i in range(n):
            time.sleep(delay)
            yield Progress(i + 1, n, "step")
        return "done"
    finally:
        log["closed_in"] = threading.get_ident()


def test_events_and_result(make_napari_viewer, qtbot):
    make_napari_viewer()
    log: dict = {}
    seen: list[int] = []
    got: list[str] = []
    h = start_task(_slow_task, 5, log, on_event=lambda e: seen.append(e.done),
                   on_returned=got.append, desc="test")
    qtbot.waitUntil(lambda: bool(h.done and got), timeout=10000)
    assert got == ["done"]
    assert seen == [1, 2, 3, 4, 5]
    assert log["thread"] != threading.get_ident()
    assert log["closed_in"] == log["thread"]


def test_cancel_closes_generator_in_worker(make_napari_viewer, qtbot):
    make_napari_viewer()
    log: dict = {}
    got: list = []
    h = start_task(_slow_task, 10_000, log, on_returned=got.append)
    qtbot.waitUntil(lambda: "thread" in log, timeout=5000)
    assert h.cancel(wait=True, timeout=10)
    assert log["closed_in"] == log["thread"]
    qtbot.wait(50)
    assert got == []  # a cancelled task delivers no result
    assert not active_handles()


def test_close_viewer_mid_run_leaves_no_thread(make_napari_viewer, qtbot):
    from magicgui.widgets import Container

    viewer = make_napari_viewer()
    w = Container()
    viewer.window.add_dock_widget(w, name="t")
    log: dict = {}
    h = start_task(_slow_task, 10_000, log, watch=w)
    qtbot.waitUntil(lambda: "thread" in log, timeout=5000)
    viewer.close()
    assert h.done
    assert "closed_in" in log
    assert not active_handles()


def test_user_error_is_one_notification(make_napari_viewer, qtbot):
    from napari.utils.notifications import notification_manager

    make_napari_viewer()

    def bad():
        yield Progress(0, 1)
        raise ConfigError("tile size must be positive")

    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        errs: list = []
        h = start_task(bad, on_error=errs.append)
        qtbot.waitUntil(lambda: bool(h.done and errs), timeout=5000)
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    assert isinstance(errs[0], ConfigError)
    assert any("tile size must be positive" in str(n.message) for n in seen)


def test_full_disk_is_one_notification_without_traceback(make_napari_viewer, qtbot):
    """An OSError the user can fix (disk full) is a plain message, like a HistoError."""
    import errno

    from napari.utils.notifications import notification_manager

    make_napari_viewer()

    def full():
        yield Progress(0, 1)
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.ome.zarr")

    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        errs: list = []
        h = start_task(full, on_error=errs.append)
        qtbot.waitUntil(lambda: bool(h.done and errs), timeout=5000)
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    msgs = [str(n.message) for n in seen]
    assert any("disk full while writing /data/out.ome.zarr" in m for m in msgs), msgs
    assert not any(getattr(n, "exception", None) for n in seen)  # no traceback offered


def test_nothreads_mode(make_napari_viewer, monkeypatch):
    make_napari_viewer()
    monkeypatch.setenv("NAPARI_HISTO_NOTHREADS", "1")
    log: dict = {}
    got: list = []
    h = start_task(_slow_task, 3, log, on_returned=got.append, delay=0)
    assert h.done and got == ["done"]
    assert log["thread"] == threading.get_ident()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
