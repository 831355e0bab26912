"""What every napari-histo dock widget shares: one viewer, one background task at a time.

:class:`DockWidget` is the base of the Segment (and Patch heatmap), Train, Evaluate, Correct
and Stain widgets. A subclass calls ``super().__init__(viewer)``, builds and adds its widgets,
then calls :meth:`DockWidget._dock_ready`. It gets:

* ``_viewer`` and ``handle`` (the :class:`~napari_histo.plugin._workers.TaskHandle` of the
  task it started last), :attr:`running`;
* :meth:`_run_task`: start an engine task in a worker, tied to this widget (closing the
  widget or its window cancels it), stored in ``handle``;
* :meth:`_busy`: True (with an info notification) while a task runs;
* :meth:`_cancel`: stop the task after its current step, optionally saying so in the status
  line;
* :meth:`_show_progress`: the widget's progress bar from ``done``/``total``;
* :meth:`_outcome`: how the last task ended ("cancelled", "failed" or "done");
* :meth:`_show_error`: one error notification;
* layer choices kept current as layers come and go (:meth:`_reset`), and the usual choice
  lists (:meth:`_image_choices`, :meth:`_shapes_choices`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container

from napari_histo.core.progress import Event
from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin._workers import TaskHandle, start_task

if TYPE_CHECKING:
    import napari

__all__ = ["FAILED_STATUS", "DockWidget"]

#: the status line of a task that failed (the notification says why)
FAILED_STATUS = "failed (see notification)"


class DockWidget(Container):
    """Base of the dock widgets: a labelled column of widgets over one viewer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.handle: TaskHandle | None = None

    def _dock_ready(self) -> None:
        """End of a subclass's ``__init__``: cap the width, keep the layer choices current."""
        self.native.setMaximumWidth(rl.DOCK_MAX_WIDTH)
        from napari_histo.plugin._units import install_units_guard

        install_units_guard(self._viewer)  # drawn Shapes/Points in the slide's units
        for ev in (self._viewer.layers.events.inserted, self._viewer.layers.events.removed):
            ev.connect(self._reset)
        self._reset()

    # ---------------------------------------------------------------- layer choices
    def _reset(self, *_: Any) -> None:
        try:
            self.reset_choices()
        except RuntimeError:  # widget already deleted
            pass

    def _image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        """Image layers that are not predictions (slides, images)."""
        return [(n, lyr) for n, lyr in rl.layers_of(self._viewer, "image")
                if (lyr.metadata.get("napari_histo") or {}).get("kind") != "prediction"]

    def _shapes_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return rl.layers_of(self._viewer, "shapes")

    # ---------------------------------------------------------------- the task
    @property
    def running(self) -> bool:
        """True while the widget's task runs."""
        return self.handle is not None and not self.handle.done

    def _busy(self, message: str) -> bool:
        """True, with ``message`` as an info notification, while a task runs."""
        if self.running:
            from napari.utils.notifications import show_info

            show_info(message)
            return True
        return False

    def _run_task(self, task_fn: Callable[..., Generator[Event, None, Any]], *args: Any,
                  desc: str, **kwargs: Any) -> TaskHandle:
        """Start ``task_fn(*args)`` in a worker watched by this widget; it becomes ``handle``.

        ``kwargs`` go to :func:`~napari_histo.plugin._workers.start_task` (``on_event``,
        ``on_returned``, ``on_finished``, ``progress_bar``, and the task's own keywords).
        """
        self.handle = start_task(task_fn, *args, desc=desc, watch=self, **kwargs)
        return self.handle

    def _cancel(self, status: str | None = None) -> None:
        """Stop the task after its current step; ``status`` goes to the status line."""
        if self.handle is not None and not self.handle.done:
            self.handle.cancel()
            if status is not None:
                self._status_label.value = status

    def _outcome(self) -> str:
        """How the last task ended: "cancelled", "failed" or "done"."""
        if self.handle is not None and self.handle.cancelled:
            return "cancelled"
        if self.handle is not None and self.handle.error is not None:
            return "failed"
        return "done"

    # ---------------------------------------------------------------- feedback
    def _show_progress(self, done: int, total: int) -> None:
        """The progress bar at ``done`` of ``total`` (left alone while ``total`` is 0)."""
        if total:
            self._progress_bar.max = int(total)
            self._progress_bar.value = min(int(done), int(total))

    @staticmethod
    def _show_error(err: BaseException | str) -> None:
        """One error notification (a request the user has to fix)."""
        from napari.utils.notifications import show_error

        show_error(str(err))
