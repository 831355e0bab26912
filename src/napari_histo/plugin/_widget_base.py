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
* layer choices kept current as layers come, go and are renamed (:meth:`_reset`), each
  layer picker pre-set to the obvious layer (the only fitting one, else the most recently
  added one, napari-histo's own outputs last) unless the user chose one, and the usual choice
  lists (:meth:`_image_choices`, :meth:`_shapes_choices`);
* one end state per run (:meth:`_end_run`): the status line ends in "done..." (progress bar
  full), "cancelled after k/n <unit>" (the bar at what was really finished) or
  :data:`FAILED_STATUS`; events of a run that has ended, or of an older run, are dropped;
* :func:`add_tabified` / :func:`raise_dock`: dock a widget as a tab of the right-hand docks;
  a widget opened from the Plugins menu (which napari stacks below the others) joins the
  napari-histo docks already in its area as a tab too (:meth:`_join_tabs`), so the window
  keeps fitting the screen;
* tooltips with the full text where the widget shows a short one: each layer picker's items
  and current choice (layer name and the file it came from), the status line.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, Label

from napari_histo.core.progress import Event
from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin._workers import TaskHandle, start_task

if TYPE_CHECKING:
    import napari

__all__ = ["FAILED_STATUS", "DockWidget", "StatusLine", "layer_description", "add_tabified", "raise_dock"]

#: the status line of a task that failed (the notification says why)
FAILED_STATUS = "failed (see notification)"

#: Qt property that marks the native widget of a napari-histo dock (found by :meth:`_join_tabs`)
DOCK_PROPERTY = "napari_histo_dock"

#: napari-histo layer kinds a picker chooses only when nothing else fits
_OWN_KINDS = ("prediction", "corrections", "stain")
_UNSET = object()


class StatusLine(Label):
    """A widget's status line; a long one is cut in the dock, so its tooltip holds all of it."""

    def __init__(self) -> None:
        super().__init__(label="", value="")

    def set_value(self, value: Any) -> None:
        super().set_value(value)
        try:
            self.native.setToolTip(str(value) if len(str(value)) > 40 else "")
        except RuntimeError:  # deleted with its window
            pass


def layer_description(layer: Any) -> str:
    """A layer's full name and the file it was read from (for tooltips)."""
    path = getattr(getattr(layer, "source", None), "path", None)
    meta = (getattr(layer, "metadata", None) or {}).get("napari_histo") or {}
    path = path or meta.get("path") or meta.get("store") or meta.get("source")
    return f"{layer.name}\n{path}" if path else str(layer.name)


def _layer_tooltips(combo: Any) -> None:
    """Full layer names and files as tooltips of a layer picker's items and current choice."""
    from napari.layers import Layer
    from qtpy.QtCore import Qt

    native = combo.native
    for i in range(native.count()):
        value = native.itemData(i)
        if isinstance(value, Layer):
            native.setItemData(i, layer_description(value), Qt.ItemDataRole.ToolTipRole)
    value = combo.value
    native.setToolTip(layer_description(value) if isinstance(value, Layer) else "")


#: what napari appends to a plugin dock's title
_PLUGIN_SUFFIX = " (napari-histo)"


def _readable_tabs(main: Any) -> None:
    """Dock tabs keep their whole title and scroll when they do not fit (Qt cuts them)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QTabBar

    for bar in main.findChildren(QTabBar):
        bar.setElideMode(Qt.TextElideMode.ElideNone)
        bar.setUsesScrollButtons(True)


def _dock_of(native: Any) -> Any:
    """The QDockWidget holding ``native`` (None when it is not docked)."""
    from qtpy.QtWidgets import QDockWidget

    node = native
    while node is not None and not isinstance(node, QDockWidget):
        node = node.parent()
    return node


def raise_dock(widget: Any) -> None:
    """Show ``widget``'s dock and bring its tab to the front."""
    node = _dock_of(getattr(widget, "native", widget))
    if node is not None:
        node.show()
        node.raise_()


def add_tabified(viewer: Any, widget: Any, name: str) -> Any:
    """Dock ``widget`` on the right as a tab next to the docks already there, in front.

    Stacking docks one below the other pushes the window past the screen; tabs keep it
    the size it was.
    """
    dock = viewer.window.add_dock_widget(widget, name=name, area="right", tabify=True)
    raise_dock(widget)
    return dock


class DockWidget(Container):
    """Base of the dock widgets: a labelled column of widgets over one viewer."""

    #: what the progress bar counts (the cancelled status says how many were finished)
    progress_unit = "steps"
    #: the status word of a cancelled run, and what follows the counts
    cancelled_word = "cancelled"
    cancelled_hint = ""
    #: attribute names of layer pickers left empty until the user picks (optional inputs)
    manual_pickers: tuple[str, ...] = ()

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.handle: TaskHandle | None = None
        self._run_no = 0
        self._run_open = False
        self._progress: tuple[int, int] = (0, 0)
        self._event_text: str | None = None
        self._cancel_text: str | None = None
        self._auto_picking = False
        self._explicit: dict[int, Any] = {}
        self._added: dict[int, int] = {}
        self._n_added = 0

    def _dock_ready(self) -> None:
        """End of a subclass's ``__init__``: cap the width, keep the layer choices current."""
        self.native.setMaximumWidth(rl.DOCK_MAX_WIDTH)
        self.native.setProperty(DOCK_PROPERTY, True)
        from qtpy.QtCore import QTimer

        from napari_histo.plugin._units import install_units_guard

        QTimer.singleShot(0, self._join_tabs)  # once napari has put the widget in its dock

        install_units_guard(self._viewer)  # drawn Shapes/Points in the slide's units
        for layer in self._viewer.layers:
            self._note_added(layer)
        self._viewer.layers.events.inserted.connect(self._on_inserted)
        self._viewer.layers.events.removed.connect(self._reset)
        for combo in self._combos():
            combo.changed.connect(lambda value, c=combo: self._on_pick(c, value))
        self._reset()

    def _join_tabs(self) -> None:
        """Tabify this widget's dock with the napari-histo docks already in its area.

        napari stacks a widget opened from the Plugins menu below the docks already there,
        which soon pushes the window past the screen. Docks the user moved elsewhere (another
        area, floating) are left where they are.
        """
        from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

        try:
            dock = _dock_of(self.native)
            main = None if dock is None else dock.parent()
            if dock is None or not isinstance(main, QMainWindow) or dock.isFloating():
                return
            title = dock.windowTitle()
            if title.endswith(_PLUGIN_SUFFIX):  # tabs say "Segment", the title bar says all
                dock.setWindowTitle(title[: -len(_PLUGIN_SUFFIX)])
            if main.tabifiedDockWidgets(dock):
                _readable_tabs(main)
                return  # already a tab (add_tabified)
            area = main.dockWidgetArea(dock)
            ours = [dw for dw in main.findChildren(QDockWidget)
                    if dw is not dock and not dw.isFloating() and not dw.isHidden()
                    and main.dockWidgetArea(dw) == area
                    and any(w.property(DOCK_PROPERTY)
                            for w in dw.findChildren(QWidget))]
            if ours:
                main.tabifyDockWidget(ours[-1], dock)
                dock.show()
                dock.raise_()
            _readable_tabs(main)
        except RuntimeError:  # the widget or window went before the timer fired
            pass

    # ---------------------------------------------------------------- layer choices
    def _note_added(self, layer: Any) -> None:
        self._added[id(layer)] = self._n_added
        self._n_added += 1
        layer.events.name.connect(self._reset)  # a renamed layer is offered by its new name

    def _on_inserted(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            self._note_added(layer)
        self._reset()

    def _combos(self, container: Any = None) -> list[Any]:
        from magicgui.widgets import ComboBox

        out: list[Any] = []
        for w in container if container is not None else self:
            if isinstance(w, ComboBox):
                out.append(w)
            elif isinstance(w, Container):
                out += self._combos(w)
        return out

    def _on_pick(self, combo: Any, value: Any) -> None:
        try:
            _layer_tooltips(combo)
        except RuntimeError:  # deleted with its window
            return
        if not self._auto_picking:  # the user's (or a caller's) choice: keep it
            self._explicit[id(combo)] = value

    def _reset(self, *_: Any) -> None:
        self._auto_picking = True
        try:
            self.reset_choices()
            manual = [getattr(self, n, None) for n in self.manual_pickers]
            for combo in self._combos():
                if not any(combo is m for m in manual):
                    self._pick(combo)
                _layer_tooltips(combo)
        except RuntimeError:  # widget already deleted
            pass
        finally:
            self._auto_picking = False

    def _pick(self, combo: Any) -> None:
        """Keep the user's layer if it is still offered, else pre-select the obvious one."""
        from napari.layers import Layer

        fitting = [v for v in combo.choices if v is not None]
        if not fitting or not all(isinstance(v, Layer) for v in fitting):
            return  # not a layer picker, or nothing to pick
        chosen = self._explicit.get(id(combo), _UNSET)
        if chosen is not _UNSET:
            if chosen is None or any(chosen is v for v in fitting):
                if combo.value is not chosen:
                    combo.value = chosen
                return
            del self._explicit[id(combo)]  # the user's layer is gone
        plain = [v for v in fitting
                 if (v.metadata.get("napari_histo") or {}).get("kind") not in _OWN_KINDS]
        best = max(plain or fitting, key=lambda v: self._added.get(id(v), -1))
        if combo.value is not best:
            combo.value = best

    def _image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        """Image layers that are not predictions (slides, images)."""
        return [(n, lyr) for n, lyr in rl.layers_of(self._viewer, "image")
                if (lyr.metadata.get("napari_histo") or {}).get("kind") != "prediction"]

    def _shapes_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return rl.layers_of(self._viewer, "shapes")

    # ---------------------------------------------------------------- the task
    @property
    def running(self) -> bool:
        """True while the widget's task runs (until its end has reached the widget)."""
        return self._run_open and self.handle is not None

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
        ``on_returned``, ``on_error``, ``on_finished``, ``progress_bar``, and the task's own
        keywords). The callbacks only see this run while it is the widget's current one and
        has not ended; after ``on_finished`` the base sets the end state (:meth:`_end_run`).
        """
        self._run_no += 1
        run = self._run_no
        self._run_open = True
        self._progress = (0, 0)
        self._cancel_text = None
        status = self._status_widget()
        self._event_text = None if status is None else str(status.value)
        on_event = kwargs.pop("on_event", None)
        on_returned = kwargs.pop("on_returned", None)
        on_error = kwargs.pop("on_error", None)
        on_finished = kwargs.pop("on_finished", None)

        def current() -> bool:
            return run == self._run_no and self._run_open

        def _event(ev: Event) -> None:
            if not current():
                return  # late event of an ended (or older) run
            if on_event is not None:
                on_event(ev)
            status = self._status_widget()
            if status is not None:
                if self._cancel_text is not None:  # stopping: say so, whatever comes in
                    status.value = self._cancel_text
                self._event_text = str(status.value)

        def _returned(value: Any) -> None:
            if current() and on_returned is not None:
                on_returned(value)

        def _error(exc: BaseException) -> None:
            if current() and on_error is not None:
                on_error(exc)

        def _finished() -> None:
            if not current():
                return
            try:
                if on_finished is not None:
                    on_finished()
            finally:
                self._run_open = False
                self._end_run()

        self.handle = start_task(task_fn, *args, desc=desc, watch=self, on_event=_event,
                                 on_returned=_returned, on_error=_error,
                                 on_finished=_finished, **kwargs)
        return self.handle

    def _cancel(self, status: str | None = None) -> None:
        """Stop the task after its current step; ``status`` goes to the status line."""
        if self.running and self.handle is not None and not self.handle.cancelled:
            self.handle.cancel()
            widget = self._status_widget()
            if status is not None and widget is not None:
                self._cancel_text = status
                widget.value = status

    def _status_widget(self) -> Any:
        """The status line (``_status_label``; the Evaluate widget's metrics line)."""
        return getattr(self, "_status_label", None) or getattr(self, "_metrics_label", None)

    def _end_run(self) -> None:
        """The one end state of the run that just finished: done, cancelled or failed."""
        outcome = self._outcome()
        status = self._status_widget()
        bar = getattr(self, "_progress_bar", None)
        done, total = self._progress
        try:
            if outcome == "done":
                if bar is not None:
                    bar.max = max(int(total), 1)
                    bar.value = bar.max
                label: Any = getattr(self, "_status_label", None)
                if label is not None:  # (the Evaluate widget's line shows the metrics)
                    text = str(label.value)
                    if text == self._event_text or not text:  # still the running text
                        label.value = "done"
                    elif not text.startswith("done"):
                        label.value = f"done: {text}"
            elif outcome == "cancelled":
                if bar is not None and total:
                    bar.max = int(total)
                    bar.value = min(int(done), int(total))
                counts = f" after {done}/{total} {self.progress_unit}" if total else ""
                if status is not None:
                    status.value = f"{self.cancelled_word}{counts}{self.cancelled_hint}"
            elif status is not None:
                status.value = FAILED_STATUS
        except RuntimeError:  # the widget went with its window
            pass

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
            self._progress = (min(int(done), int(total)), int(total))
            self._progress_bar.max = int(total)
            self._progress_bar.value = min(int(done), int(total))

    @staticmethod
    def _show_error(err: BaseException | str) -> None:
        """One error notification (a request the user has to fix)."""
        from napari.utils.notifications import show_error

        show_error(str(err))
