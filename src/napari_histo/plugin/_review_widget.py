"""Review queue dock widget: look first where the model is unsure, mark, correct, fine-tune.

On a gigapixel slide the user does not know where to look. "Rank" scores the prediction's
regions by uncertainty (:meth:`napari_histo.engine.review.ReviewStore.rank`, in a worker)
and lists them best first with a thumbnail of the slide; the uncertainty map is shown as a
layer that is transparent where the model is sure. Selecting a row (or ``n``/``Shift-N``)
moves the camera onto the region and outlines it; ``a`` accepts, ``Shift-F`` flags,
``Shift-E`` opens a Labels layer over the region to paint a correction (saved when moving
on or accepting). Every mark and correction is written into the prediction's store at once
(the engine's :class:`~napari_histo.engine.review.ReviewStore`), so closing napari loses
nothing and reopening the store resumes at the saved cursor. "Fine-tune on reviewed" trains
on the accepted and corrected regions in a worker, shows Dice before/after, re-predicts and
re-ranks what is left.

Entry point: :class:`ReviewWidget`; keys in :mod:`._review_keys`, geometry in
:mod:`._review_view`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

from napari_histo.core.errors import HistoError
from napari_histo.core.progress import EpochEnd, Message, Progress
from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin import _review_view as rv
from napari_histo.plugin._review_keys import KEYS, KeyBindings
from napari_histo.plugin._widget_base import DockWidget, StatusLine
from napari_histo.plugin._workers import TaskHandle

if TYPE_CHECKING:
    import napari

    from napari_histo.engine.review import Region, ReviewStore

__all__ = ["STATUS_TEXT", "ReviewWidget", "store_of"]

#: how a mark reads in the list
STATUS_TEXT: dict[str | None, str] = {None: "—", "accepted": "accepted",
                                      "corrected": "corrected", "flagged": "flagged"}
#: thumbnails drawn at most (each reads a few slide chunks; the rest stay blank)
THUMB_MAX = 300
#: metadata kind of the uncertainty layer
UNCERTAINTY_KIND = "review_uncertainty"
#: metadata kind of the correction layer of the current region
EDIT_KIND = "review_edit"
COLUMNS = ("", "#", "score", "uncert.", "status")


def store_of(layer: Any) -> Path | None:
    """The prediction store a layer shows (Segment widget's or reader-opened), or None."""
    meta = getattr(layer, "metadata", None) or {}
    histo = meta.get("napari_histo") or {}
    if not isinstance(histo, dict) or histo.get("kind") in (UNCERTAINTY_KIND, EDIT_KIND):
        return None  # the review's own layers point at the store but are not predictions
    if histo.get("store"):
        return Path(str(histo["store"]))
    if "prediction" in histo and meta.get("source"):
        path = Path(str(meta["source"]))
        if path.parent.name == "labels":  # the store's labels/prediction group
            path = path.parent.parent
        return path
    return None


def uncertainty_colormap() -> Any:
    """Viridis, fully transparent for sure pixels (u < 0.15), opaque from u = 0.3."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    x = np.linspace(0.0, 1.0, 256)
    colors = np.asarray(ensure_colormap("viridis").map(x), dtype=np.float32).copy()
    colors[:, 3] = np.clip((x - 0.15) / 0.15, 0.0, 1.0)
    return Colormap(colors=colors, controls=x, name="napari-histo uncertainty")


class _EditSession:
    """The correction layer of one region and the labels it started from."""

    def __init__(self, region_id: str, layer: Any, original: np.ndarray) -> None:
        self.region_id = region_id
        self.layer = layer
        self.original = original

    @property
    def changed(self) -> bool:
        return bool(np.any(np.asarray(self.layer.data) != self.original))


class ReviewWidget(DockWidget):
    """Dock widget: ranked review regions, camera jumps, marks, corrections, fine-tune."""

    progress_unit = "steps"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self.store: ReviewStore | None = None
        self.regions: list[Region] = []
        self.current_row = -1
        self.edit_session: _EditSession | None = None
        #: the last fine-tune outcome (ReviewFinetuneOutcome)
        self.outcome: Any = None
        self._thumb_rows: set[int] = set()
        self._thumb_queue: list[int] = []
        self._table_updating = False
        self._pred_combo = ComboBox(label="prediction", choices=self._prediction_choices,
                                    nullable=True)
        self._store_edit = FileEdit(label="or store", mode=FileDialogMode.EXISTING_DIRECTORY,
                                    nullable=True,
                                    tooltip="a prediction store (.ome.zarr), e.g. from Past "
                                            "predictions; it opens with its slide")
        self._slide_combo = ComboBox(label="slide", choices=self._slide_choices, nullable=True,
                                     tooltip="thumbnails and fine-tuning read this slide")
        self._unit_combo = ComboBox(label="regions", choices=["tile", "component"],
                                    value="tile",
                                    tooltip="square tiles, or connected uncertain areas")
        self._size_spin = FloatSpinBox(label="size (um)", min=0.0, max=100000.0, value=0.0,
                                       step=32.0, tooltip="region side; 0 = automatic")
        self._top_spin = SpinBox(label="top", min=0, max=100000, value=0,
                                 tooltip="keep the best K regions; 0 = all")
        self._tta_check = CheckBox(
            text="test-time augmentation", value=False,
            tooltip="re-predict the best regions near the threshold with flips and rotations "
                    "(the model below, else the one that predicted) and add their "
                    "disagreement to the score")
        self._rank_button = PushButton(text="Rank")
        self._stop_button = PushButton(text="Stop", enabled=False)
        self._progress_bar = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status_label = StatusLine()
        self._status_label.value = "pick a prediction, then Rank"
        self._region_label = Label(label="", value="")
        nav = [PushButton(text=t) for t in ("◀ prev", "next ▶", "accept", "flag", "edit")]
        self._prev_btn, self._next_btn, self._accept_btn, self._flag_btn, self._edit_btn = nav
        for btn, key in zip(nav, ("previous", "next", "accept", "flag", "edit"), strict=True):
            btn.tooltip = f"key: {KEYS[key]}"
        nav_row = Container(widgets=nav, layout="horizontal", labels=False)
        self._ckpt_edit = FileEdit(label="model", mode=FileDialogMode.EXISTING_FILE,
                                   filter="*.pt", nullable=True)
        self._epochs_spin = SpinBox(label="epochs", min=1, max=200, value=3)
        self._steps_spin = SpinBox(label="steps/epoch", min=1, max=10000, value=8)
        self._finetune_button = PushButton(text="Fine-tune on reviewed")
        self._scores_label = Label(label="", value="")
        self.table = self._make_table()
        table_box: Container[Any] = Container(labels=False)
        table_box.native.layout().addWidget(self.table)
        self.extend([
            self._pred_combo, self._store_edit, self._slide_combo, self._unit_combo,
            self._size_spin, self._top_spin, self._tta_check, self._rank_button, self._stop_button,
            self._progress_bar, self._status_label, table_box, self._region_label, nav_row,
            self._ckpt_edit, self._epochs_spin, self._steps_spin, self._finetune_button,
            self._scores_label,
        ])
        from qtpy.QtCore import QTimer

        self._thumb_timer = QTimer(self.native)  # goes with the widget
        self._thumb_timer.setInterval(0)
        self._thumb_timer.timeout.connect(self._next_thumbnail)
        self._rank_button.changed.connect(lambda *_: self.rank())
        self._stop_button.changed.connect(lambda *_: self._cancel("stopping..."))
        self._prev_btn.changed.connect(lambda *_: self.previous())
        self._next_btn.changed.connect(lambda *_: self.next())
        self._accept_btn.changed.connect(lambda *_: self.accept())
        self._flag_btn.changed.connect(lambda *_: self.flag())
        self._edit_btn.changed.connect(lambda *_: self.edit())
        self._finetune_button.changed.connect(lambda *_: self.fine_tune())
        self._pred_combo.changed.connect(self._on_prediction)
        self._store_edit.changed.connect(self._on_store_path)
        self.keys = KeyBindings(viewer, {"next": self.next, "previous": self.previous,
                                         "accept": self.accept, "flag": self.flag,
                                         "edit": self.edit})
        self._watch_close()
        self._dock_ready()

    # ---------------------------------------------------------------- building
    def _make_table(self) -> Any:
        from qtpy.QtCore import QSize
        from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget

        table: Any = QTableWidget(0, len(COLUMNS))
        table.setHorizontalHeaderLabels(list(COLUMNS))
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setIconSize(QSize(rv.THUMB_PX, rv.THUMB_PX))
        table.verticalHeader().setVisible(False)
        table.verticalHeader().setDefaultSectionSize(rv.THUMB_PX + 4)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        table.setMinimumHeight(220)
        from qtpy.QtCore import Qt

        table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        table.currentCellChanged.connect(self._on_row)
        table.verticalScrollBar().valueChanged.connect(lambda *_: self._queue_thumbnails())
        return table

    def _watch_close(self) -> None:
        """Give the keys back when the widget closes, leaves its dock or is deleted."""
        from qtpy.QtCore import QEvent, QObject

        widget = self

        class _Watcher(QObject):
            def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt API)
                kind = event.type() if event is not None else None
                if kind == QEvent.Type.Close or (
                        kind == QEvent.Type.ParentChange and obj.parent() is None):
                    widget.close_review()
                return False

        self._close_watcher = _Watcher()
        self.native.installEventFilter(self._close_watcher)
        keys = self.keys
        self.native.destroyed.connect(lambda *_: keys.release())

    def close_review(self) -> None:
        """Save a pending correction, stop the thumbnails and release the keys."""
        try:
            self._finish_edit()
        except (HistoError, OSError, RuntimeError) as err:
            self._show_error(f"correction not saved: {err}")
        self._thumb_timer.stop()
        self.keys.release()

    # ---------------------------------------------------------------- choices
    def _prediction_choices(self, *_: Any) -> list[tuple[str, Any]]:
        """Prediction heatmaps with a store on disk (Segment's or opened from a store)."""
        return [(n, lyr) for n, lyr in rl.layers_of(self._viewer, "image")
                if store_of(lyr) is not None
                and (lyr.metadata.get("napari_histo") or {}).get("role") != "labels"]

    def _slide_choices(self, *_: Any) -> list[tuple[str, Any]]:
        own = (UNCERTAINTY_KIND,)
        return [(n, lyr) for n, lyr in self._image_choices()
                if store_of(lyr) is None
                and (lyr.metadata.get("napari_histo") or {}).get("kind") not in own]

    def _prediction_layer(self) -> Any:
        layer = self._pred_combo.value
        return layer if layer is not None and layer in self._viewer.layers else None

    def _slide_layer(self) -> Any:
        layer = self._slide_combo.value
        return layer if layer is not None and layer in self._viewer.layers else None

    # ---------------------------------------------------------------- opening a store
    def _on_store_path(self, value: Any) -> None:
        if value in (None, "", Path(".")):
            return
        self.open_store(Path(str(value)))

    def open_store(self, path: str | Path) -> bool:
        """Show a prediction store (and its slide when not open) and resume its review."""
        path = Path(path).resolve()
        for _, layer in self._prediction_choices():
            shown = store_of(layer)
            if shown is not None and shown.resolve() == path:
                self._pred_combo.value = layer
                return self.store is not None
        from napari_histo.engine.review import ReviewStore

        try:
            store = ReviewStore.open(path)
        except (HistoError, OSError) as err:
            self._show_error(err)
            return False
        source = str(store.meta.get("source") or "")
        slides = [lyr for _, lyr in self._slide_choices()
                  if rl.image_layer_source(lyr) == source]
        try:
            if not slides and source and Path(source).is_file():
                self._viewer.open(source, plugin="napari-histo")
            layers = list(self._viewer.open(str(path), plugin="napari-histo"))
        except Exception as err:  # noqa: BLE001 - any reader failure is shown, not raised
            self._show_error(f"cannot open {path.name}: {err}")
            return False
        self.reset_choices()
        heat = next((lyr for lyr in layers if store_of(lyr) is not None
                     and type(lyr).__name__ == "Image"), None)
        if heat is not None:
            self._pred_combo.value = heat
        return self.store is not None

    def _on_prediction(self, layer: Any) -> None:
        if layer is None or self.running:
            return
        path = store_of(layer)
        if path is None or (self.store is not None
                            and Path(self.store.path).resolve() == path.resolve()):
            return
        from napari_histo.engine.review import ReviewStore

        self._finish_edit()
        try:
            self.store = ReviewStore.open(path)
        except (HistoError, OSError) as err:
            self.store = None
            self._set_regions([])
            self._status_label.value = str(err)
            return
        meta = self.store.meta
        source = str(meta.get("source") or "")
        for _, slide in self._slide_choices():
            if source and rl.image_layer_source(slide) == source:
                self._slide_combo.value = slide
        histo = layer.metadata.get("napari_histo") or {}
        name = histo.get("image_layer")
        if name and name in self._viewer.layers and self._slide_combo.value is None:
            self._slide_combo.value = self._viewer.layers[name]
        ckpt = histo.get("checkpoint") or meta.get("checkpoint")
        if ckpt and Path(str(ckpt)).is_file():
            self._ckpt_edit.value = Path(str(ckpt))
        regions = self._shown(self.store.regions())
        self._set_regions(regions)
        if regions:
            self._show_uncertainty()
            done = sum(self.store.status(r.id) is not None for r in regions)
            self._status_label.value = (f"resumed: {done} of {len(regions)} regions reviewed")
            self.go_to(min(max(int(self.store.cursor), 0), len(regions) - 1))
        else:
            self._status_label.value = f"{path.name}: click Rank to list where to look"

    # ---------------------------------------------------------------- ranking
    def rank(self) -> TaskHandle | None:
        """Rank the prediction's regions in a worker (progress, Stop)."""
        if self._busy("ranking or fine-tuning is already running"):
            return None
        if self.store is None:
            self._on_prediction(self._prediction_layer())
        if self.store is None:
            self._show_error("pick a prediction (a Segment result or a store) to review")
            return None
        self._finish_edit()
        size = float(self._size_spin.value) or None
        top = int(self._top_spin.value) or None
        self._set_buttons(running=True)
        self._status_label.value = "ranking regions by uncertainty..."
        tta = bool(self._tta_check.value)
        ckpt = self._ckpt_edit.value
        model = str(ckpt) if tta and ckpt and Path(str(ckpt)).is_file() else None
        return self._run_task(self.store.rank, unit=str(self._unit_combo.value), size_um=size,
                              top=top, tta=tta, model=model, desc="rank regions", on_event=self._on_event,
                              on_returned=self._on_ranked, on_finished=self._on_finished)

    def _shown(self, regions: list[Region]) -> list[Region]:
        """The regions the list shows: the best ``top`` (all when top is 0)."""
        top = int(self._top_spin.value)
        return list(regions[:top]) if top > 0 else list(regions)

    def _on_ranked(self, returned: list[Region]) -> None:
        # the store's whole ranking (its cursor indexes it), marks and all
        regions = self._shown(self.store.regions() if self.store is not None else returned)
        self._set_regions(regions)
        self._show_uncertainty()
        self._status_label.value = f"{len(regions)} regions ranked, best first"
        if regions and self.store is not None:
            self.go_to(min(max(int(self.store.cursor), 0), len(regions) - 1))

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, Progress):
            self._show_progress(ev.done, ev.total)
        elif isinstance(ev, EpochEnd):
            loss = ev.metrics.get("train_loss", float("nan"))
            self._status_label.value = f"epoch {ev.epoch}: train loss {loss:.3f}"
        elif isinstance(ev, Message):
            self._status_label.value = ev.text

    def _on_finished(self) -> None:
        self._set_buttons(running=False)

    def _set_buttons(self, running: bool) -> None:
        self._rank_button.enabled = not running
        self._finetune_button.enabled = not running
        self._stop_button.enabled = running

    def _show_uncertainty(self) -> Any:
        """The uncertainty map as an Image layer over the prediction (one per store)."""
        if self.store is None:
            return None
        import dask.array as da

        levels = [da.from_zarr(z) for z in self.store.uncertainty_levels()]
        pred = self._prediction_layer()
        if not levels or pred is None:
            return None
        data: Any = levels if len(levels) > 1 else levels[0]
        for layer in self._viewer.layers:
            histo = layer.metadata.get("napari_histo") or {}
            if histo.get("kind") == UNCERTAINTY_KIND and histo.get("store") == str(
                    self.store.path):
                layer.data = data
                layer.refresh()
                return layer
        kwargs: dict[str, Any] = {}
        if getattr(pred, "units", None) is not None:
            kwargs["units"] = tuple(pred.units)[-2:]
        subject = str(self.store.meta.get("slide_name") or Path(self.store.path).name)
        active = self._viewer.layers.selection.active
        layer = self._viewer.add_image(
            data, multiscale=len(levels) > 1, name=rl.unique_name(
                self._viewer, rl.result_name(subject, "uncertainty")),
            scale=tuple(pred.scale[-2:]), translate=tuple(pred.translate[-2:]),
            colormap=uncertainty_colormap(), contrast_limits=(0.0, 255.0), opacity=0.5,
            blending="translucent",
            metadata={"napari_histo": {"kind": UNCERTAINTY_KIND, "store": str(self.store.path)}},
            **kwargs)
        if active is not None and active in self._viewer.layers:  # keys keep their target
            self._viewer.layers.selection.active = active
        return layer

    # ---------------------------------------------------------------- the list
    def _set_regions(self, regions: list[Region]) -> None:
        from qtpy.QtWidgets import QTableWidgetItem

        self.regions = regions
        self.current_row = -1
        self._thumb_rows.clear()
        self._thumb_queue.clear()
        self._table_updating = True
        try:
            self.table.clearContents()
            self.table.setRowCount(len(regions))
            for row, r in enumerate(regions):
                cells = ("", str(r.rank), f"{r.score:.3f}", f"{r.uncertainty:.3f}",
                         self._status_text(r.id))
                for col, text in enumerate(cells):
                    self.table.setItem(row, col, QTableWidgetItem(text))
        finally:
            self._table_updating = False
        self._queue_thumbnails()

    def _status_text(self, region_id: str) -> str:
        return STATUS_TEXT.get(self.store.status(region_id) if self.store else None, "?")

    def _update_row(self, row: int) -> None:
        item = self.table.item(row, 4)
        if item is not None and 0 <= row < len(self.regions):
            item.setText(self._status_text(self.regions[row].id))

    def row_status(self, row: int) -> str:
        """The status shown in the list for ``row``."""
        item = self.table.item(row, 4)
        return "" if item is None else str(item.text())

    def _on_row(self, row: int, *_: Any) -> None:
        if not self._table_updating and row >= 0 and row != self.current_row:
            self.go_to(row)

    def _queue_thumbnails(self) -> None:
        """Thumbnails of the rows in sight first, one per event-loop turn (GUI stays live)."""
        if not self.regions or self._slide_layer() is None:
            return
        first = max(self.table.rowAt(0), 0)
        last = self.table.rowAt(self.table.viewport().height())
        last = len(self.regions) - 1 if last < 0 else last
        want = [r for r in range(first, min(last + 2, len(self.regions)))
                if r not in self._thumb_rows and r < THUMB_MAX]
        self._thumb_queue = want + [r for r in self._thumb_queue if r not in want]
        if self._thumb_queue:
            self._thumb_timer.start()

    def _next_thumbnail(self) -> None:
        if not self._thumb_queue:
            self._thumb_timer.stop()
            return
        row = self._thumb_queue.pop(0)
        try:
            self.thumbnail(row)
        except RuntimeError:  # the widget went with its window
            self._thumb_queue.clear()

    def thumbnail(self, row: int) -> bool:
        """Draw the slide under ``row``'s region into the list; True if one was drawn."""
        slide = self._slide_layer()
        if slide is None or not 0 <= row < len(self.regions) or row in self._thumb_rows:
            return False
        self._thumb_rows.add(row)
        box = rv.world_box(self.regions[row], self._prediction_layer(), slide)
        try:
            pic = rv.region_thumbnail(slide, box)
        except Exception:  # noqa: BLE001 - an unreadable tile leaves the thumbnail blank
            return False
        if pic is None:
            return False
        from qtpy.QtGui import QIcon, QImage, QPixmap

        pic = np.ascontiguousarray(pic)
        h, w = pic.shape[:2]
        image = QImage(pic.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        item = self.table.item(row, 0)
        if item is not None:
            item.setIcon(QIcon(QPixmap.fromImage(image)))
        return True

    # ---------------------------------------------------------------- navigation
    @property
    def current(self) -> Region | None:
        """The region on screen."""
        return self.regions[self.current_row] if 0 <= self.current_row < len(self.regions) else None

    def region_world_box(self, region: Region) -> rv.WorldBox:
        """World box of a region in this viewer."""
        return rv.world_box(region, self._prediction_layer(), self._slide_layer())

    def go_to(self, index: int) -> Region | None:
        """Move the camera onto region ``index`` (0-based), outline it, remember the cursor."""
        if not self.regions:
            return None
        self._finish_edit()
        index = int(np.clip(index, 0, len(self.regions) - 1))
        self.current_row = index
        region = self.regions[index]
        if self.store is not None and int(self.store.cursor) != index:
            self.store.cursor = index
        box = self.region_world_box(region)
        rv.jump_to(self._viewer, box)
        pred = self._prediction_layer()
        units = tuple(pred.units) if pred is not None and getattr(pred, "units", None) else None
        rv.show_outline(self._viewer, box, units)
        self._table_updating = True
        try:
            self.table.selectRow(index)
            self.table.setCurrentCell(index, 1)
        finally:
            self._table_updating = False
        self._region_label.value = (
            f"{index + 1}/{len(self.regions)}  {region.id}  score {region.score:.3f}  "
            f"uncertainty {region.uncertainty:.3f}"
            + ("" if region.tta is None else f"  TTA {region.tta:.3f}")
            + f"  {self._status_text(region.id)}")
        self.thumbnail(index)
        return region

    def next(self) -> Region | None:
        """The next region (key ``n``)."""
        return self.go_to(self.current_row + 1) if self.regions else None

    def previous(self) -> Region | None:
        """The previous region (key ``Shift-N``)."""
        return self.go_to(self.current_row - 1) if self.regions else None

    # ---------------------------------------------------------------- marks
    def _can_mark(self) -> Region | None:
        if self._busy("wait until ranking / fine-tuning has finished"):
            return None
        if self.store is None or self.current is None:
            self._show_error("rank a prediction first")
            return None
        return self.current

    def accept(self) -> str | None:
        """Accept the region (a painted correction is saved as such), then go on (key ``a``)."""
        region = self._can_mark()
        if region is None or self.store is None:
            return None
        try:
            saved = self._finish_edit()
            if not saved and self.store.status(region.id) != "corrected":
                self.store.mark(region.id, "accepted")
        except (HistoError, OSError) as err:
            self._show_error(err)
            return None
        return self._marked(region)

    def flag(self) -> str | None:
        """Flag the region for someone else to look at, then go on (key ``Shift-F``)."""
        region = self._can_mark()
        if region is None or self.store is None:
            return None
        try:
            self._finish_edit()
            self.store.mark(region.id, "flagged")
        except (HistoError, OSError) as err:
            self._show_error(err)
            return None
        return self._marked(region)

    def _marked(self, region: Region) -> str | None:
        assert self.store is not None
        status = self.store.status(region.id)
        self._update_row(self.current_row)
        if self.current_row < len(self.regions) - 1:
            self.next()
        else:
            self.go_to(self.current_row)
            self._status_label.value = "last region reviewed"
        return status

    # ---------------------------------------------------------------- corrections
    def edit(self) -> Any:
        """A Labels layer over the region to paint its correction (key ``Shift-E``)."""
        region = self._can_mark()
        if region is None or self.store is None:
            return None
        if self.edit_session is not None and self.edit_session.region_id == region.id \
                and self.edit_session.layer in self._viewer.layers:
            return self.edit_session.layer
        self._finish_edit()
        pred = self._prediction_layer()
        if pred is None:
            self._show_error("the prediction layer is not open")
            return None
        y0, x0, y1, x1 = region.bbox_store
        saved = self.store.correction(region.id)
        if saved is not None:
            original = np.asarray(saved, dtype=np.uint8)
        else:
            original = np.asarray(self.store.labels()[y0:y1, x0:x1], dtype=np.uint8)
        from napari_histo.plugin._correct_widget import CORRECTION_COLORS

        scale = tuple(float(s) for s in pred.scale[-2:])
        translate = tuple(float(t) + o * s for t, o, s in
                          zip(pred.translate[-2:], (y0, x0), scale, strict=True))
        kwargs: dict[str, Any] = {}
        if getattr(pred, "units", None) is not None:
            kwargs["units"] = tuple(pred.units)[-2:]
        layer = self._viewer.add_labels(
            original.copy(), name=rl.unique_name(self._viewer, f"review {region.id}"),
            scale=scale, translate=translate, opacity=0.5, colormap=dict(CORRECTION_COLORS),
            metadata={"napari_histo": {"kind": EDIT_KIND, "region": region.id,
                                       "store": str(self.store.path)}}, **kwargs)
        layer.mode = "paint"
        layer.selected_label = 1
        layer.brush_size = max(2, int(min(original.shape) // 20))
        self._viewer.layers.selection.active = layer
        self.edit_session = _EditSession(region.id, layer, original)
        self._status_label.value = ("paint 1 (tumour) or 0 (background); n / a save it, "
                                    "Shift-F flags")
        return layer

    def _finish_edit(self) -> bool:
        """Save the open correction if it changed (marks it corrected); close its layer."""
        s = self.edit_session
        if s is None:
            return False
        self.edit_session = None
        if s.layer not in self._viewer.layers:
            return False  # the user threw the layer away: nothing to save
        saved = False
        if s.changed and self.store is not None:
            self.store.save_correction(s.region_id, np.asarray(s.layer.data, dtype=np.uint8))
            saved = True
            row = next((i for i, r in enumerate(self.regions) if r.id == s.region_id), -1)
            if row >= 0:
                self._update_row(row)
        self._viewer.layers.remove(s.layer)
        return saved

    # ---------------------------------------------------------------- fine-tuning
    def set_checkpoint(self, path: str | Path) -> None:
        """The model that "Fine-tune on reviewed" continues from."""
        self._ckpt_edit.value = Path(path)

    def _to_config(self) -> Any:
        """The engine's fine-tune settings (as the Correct widget's) with this widget's budget."""
        from napari_histo.core.settings import runs_dir
        from napari_histo.engine.review.finetune import finetune_config

        ckpt = self._ckpt_edit.value
        if not ckpt or not Path(str(ckpt)).is_file():
            raise ValueError("choose the model checkpoint to fine-tune (the one that predicted)")
        out = runs_dir() / time.strftime("review-finetune-%Y%m%d-%H%M%S")
        return finetune_config(str(ckpt), out, epochs=int(self._epochs_spin.value),
                               steps_per_epoch=int(self._steps_spin.value))

    def fine_tune(self) -> TaskHandle | None:
        """Train on the accepted and corrected regions, re-predict and re-rank (a worker)."""
        if self._busy("ranking or fine-tuning is already running"):
            return None
        if self.store is None or not self.regions:
            self._show_error("rank a prediction and review some regions first")
            return None
        try:
            self._finish_edit()
            reviewed = [r for r in self.regions
                        if self.store.status(r.id) in ("accepted", "corrected")]
            if not reviewed:
                raise ValueError("accept or correct some regions first (a / Shift-E)")
            cfg = self._to_config()
        except (HistoError, ValueError, OSError) as err:
            self._show_error(err)
            return None
        from napari_histo.engine.review.finetune import finetune_reviewed_job
        from napari_histo.plugin._workers import preload_torch_training

        preload_torch_training()
        self.outcome = None
        self._set_buttons(running=True)
        self._scores_label.value = ""
        self._status_label.value = f"fine-tuning on {len(reviewed)} reviewed regions..."
        return self._run_task(finetune_reviewed_job, self.store, str(self._ckpt_edit.value), cfg,
                              desc="fine-tune on reviewed", on_event=self._on_event,
                              on_returned=self._on_finetuned, on_finished=self._on_finished)

    def _on_finetuned(self, outcome: Any) -> None:
        self.outcome = outcome
        b, a = outcome.before, outcome.after
        against = getattr(outcome, "reference", "") or "reviewed labels"
        self._scores_label.value = (
            f"Dice on {outcome.samples} reviewed regions, against the {against}:\n"
            f"{_score(b, 'dice')} -> {_score(a, 'dice')} (95 % CI over regions)")
        self.set_checkpoint(outcome.checkpoint)
        for layer in self._viewer.layers:  # the store's prediction changed on disk
            shown = store_of(layer)
            if shown is not None and self.store is not None \
                    and shown.resolve() == Path(self.store.path).resolve():
                layer.refresh()
        self._on_ranked(list(outcome.regions))  # re-ranked; the cursor is on the first left
        self._status_label.value = (f"fine-tuned: {Path(str(outcome.checkpoint)).name}; "
                                    f"{len(outcome.repredicted)} regions re-predicted, "
                                    f"{len(outcome.regions)} left to review")


def _score(scores: dict[str, Any], key: str) -> str:
    """``0.812`` or, with its bootstrap interval (``<key>_ci``), ``0.812 [0.750, 0.860]``."""
    value = scores.get(key)
    if value is None:
        return "n/a"
    ci = scores.get(f"{key}_ci")
    if not ci or len(ci) != 2 or any(v is None or v != v for v in ci):
        return f"{float(value):.3f}"
    return f"{float(value):.3f} [{float(ci[0]):.3f}, {float(ci[1]):.3f}]"
