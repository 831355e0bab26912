"""Past predictions dock widget: the whole-slide predictions cached in the predictions folder.

Lists each store the Segment widget wrote to ``settings.predictions_dir()`` as
"name — size — date — complete/unfinished" with the total size, and reopens (through
napari-histo's reader) or deletes the selected ones. Deleting asks first (a Qt question by
default; ``confirm`` replaces it, e.g. in tests) and only ever removes napari-histo prediction
stores (:func:`napari_histo.engine.prediction_list.delete_prediction`).

Entry point: :class:`ResultsWidget`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, Label, PushButton, Select

from napari_histo.core.errors import HistoError
from napari_histo.plugin._widget_base import DockWidget

if TYPE_CHECKING:
    import napari

    from napari_histo.engine.prediction_list import PredictionEntry

__all__ = ["ResultsWidget", "entry_text"]


def entry_text(entry: PredictionEntry) -> str:
    """One line of the list: ``name — size — date — complete/unfinished``."""
    from napari_histo.engine.prediction_list import format_size

    date = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.modified))
    state = "complete" if entry.complete else "unfinished"
    return f"{entry.name} — {format_size(entry.size_bytes)} — {date} — {state}"


def _ask(paths: list[Path]) -> bool:
    """Qt question: delete these stores?"""
    from qtpy.QtWidgets import QMessageBox

    names = "\n".join(p.name for p in paths[:10]) + ("\n..." if len(paths) > 10 else "")
    answer = QMessageBox.question(None, "Delete predictions",
                                  f"Delete {len(paths)} prediction(s) from disk?\n{names}")
    return bool(answer == QMessageBox.StandardButton.Yes)


class ResultsWidget(DockWidget):
    """List, reopen and delete the predictions cached in the predictions folder."""

    def __init__(self, viewer: napari.viewer.Viewer,
                 confirm: Callable[[list[Path]], bool] | None = None) -> None:
        super().__init__(viewer)
        self.confirm: Callable[[list[Path]], bool] = confirm or _ask
        self.entries: list[PredictionEntry] = []
        self._select = Select(label="Predictions", choices=self._choices)
        self._total = Label(label="Total", value="")
        self._refresh_btn = PushButton(text="Refresh")
        self._open_btn = PushButton(text="Open")
        self._delete_btn = PushButton(text="Delete")
        self._refresh_btn.changed.connect(self.refresh)
        self._open_btn.changed.connect(self.open_selected)
        self._delete_btn.changed.connect(self.delete_selected)
        buttons = Container(widgets=[self._refresh_btn, self._open_btn, self._delete_btn],
                            layout="horizontal", labels=False)
        self._status = Label(value="")
        self.extend([self._select, self._total, buttons, self._status])
        self._dock_ready()
        self.refresh()

    def _choices(self, *_: Any) -> list[tuple[str, str]]:
        return [(entry_text(e), str(e.path)) for e in self.entries]

    def refresh(self, *_: Any) -> None:
        """Read the predictions folder again."""
        from napari_histo.engine.prediction_list import format_size, list_predictions, total_size

        self.entries = list_predictions()
        self._select.reset_choices()
        n = len(self.entries)
        self._total.value = f"{n} prediction(s), {format_size(total_size(self.entries))}"

    def selected(self) -> list[Path]:
        """Paths of the selected stores."""
        return [Path(v) for v in (self._select.value or [])]

    def select(self, paths: list[Path]) -> None:
        """Select these stores in the list."""
        self._select.value = [str(p) for p in paths]

    def open_selected(self, *_: Any) -> list[Any]:
        """Open the selected stores as layers (napari-histo's reader); the new layers."""
        paths = self.selected()
        if not paths:
            self._status.value = "select a prediction to open"
            return []
        layers: list[Any] = []
        for p in paths:
            try:
                layers += list(self._viewer.open(str(p), plugin="napari-histo"))
            except Exception as err:  # noqa: BLE001 - any reader failure is shown, not raised
                self._show_error(f"cannot open {p.name}: {err}")
        self._status.value = f"opened {len(paths)} prediction(s)"
        return layers

    def delete_selected(self, *_: Any) -> int:
        """Delete the selected stores after confirmation; how many were deleted."""
        from napari_histo.engine.prediction_list import delete_prediction

        paths = self.selected()
        if not paths:
            self._status.value = "select a prediction to delete"
            return 0
        if not self.confirm(paths):
            self._status.value = "nothing deleted"
            return 0
        done = 0
        for p in paths:
            try:
                delete_prediction(p)
                done += 1
            except HistoError as err:
                self._show_error(err)
        self.refresh()
        self._status.value = f"deleted {done} prediction(s)"
        return done
