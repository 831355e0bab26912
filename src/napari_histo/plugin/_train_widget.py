"""Train dock widget: train a model from viewer layers or data folders with live curves.

Training data come from image + Labels layer pairs in the viewer (optionally restricted to
Shapes regions), and/or from folders (GlaS-style ``images/`` + ``labels/``, class folders,
slides with masks). The widget builds a :class:`~napari_histo.engine.training.TrainConfig`,
turns layer pairs into ``ArraySample`` s (:func:`napari_histo.plugin._jobs.layer_pair_samples`),
and runs ``engine.training.train`` in a thread
worker: per-batch progress, loss/metric curves redrawn at every epoch, a preview prediction
layer per epoch, Start / Stop / Resume, and "Use this model" hands the best checkpoint to the
Segment widget. Entry point: :class:`TrainWidget`.
"""

from __future__ import annotations

import re
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
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)

from napari_histo.core.model_registry import TIMM_ENTRY, TIMM_PREFIX, default_model, model_choices
from napari_histo.core.progress import EpochEnd, Message, Progress
from napari_histo.engine.live import preview_job
from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin._jobs import layer_pair_samples, layer_pair_source, rgb_crop
from napari_histo.plugin._plots import CurvePlot
from napari_histo.plugin._widget_base import DockWidget, StatusLine, add_tabified, raise_dock
from napari_histo.plugin._workers import TaskHandle, preload_torch_training, start_task

if TYPE_CHECKING:
    import napari

__all__ = ["TrainWidget"]

# menus from the model registry; "timm:<name>" (classify) enables the "timm backbone" field
SEG_MODELS = model_choices("segment")
CLS_MODELS = model_choices("classify")


class TrainWidget(DockWidget):
    """Dock widget: data + options -> training run with live curves."""

    progress_unit = "batches"
    cancelled_word = "stopped"
    cancelled_hint = "; Resume continues from the last checkpoint"
    manual_pickers = ("_shapes_combo",)  # regions restrict training: only when asked for

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        from napari_histo.core.settings import runs_dir

        self._image_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self._labels_combo = ComboBox(label="labels", choices=self._labels_choices,
                                      nullable=True)
        self._shapes_combo = ComboBox(label="regions", choices=self._shapes_choices,
                                      nullable=True)
        self._add_pair_button = PushButton(text="Add image + labels pair")
        self._pairs_label = Label(label="pairs", value="(uses the pair above)")
        self._folder_edit = FileEdit(label="data folder", mode=FileDialogMode.EXISTING_DIRECTORY, nullable=True)
        self._task_combo = ComboBox(label="task", choices=("segment", "classify"),
                                    value="segment")
        self._model_combo = ComboBox(label="model", choices=SEG_MODELS,
                                     value=default_model("segment"))
        self._timm_edit = LineEdit(label="timm backbone", value="", visible=False,
                                   tooltip="a timm model name, e.g. efficientnet_b0 (needs the "
                                           "timm extra); used as timm:<name>")
        self._model_combo.changed.connect(
            lambda v: setattr(self._timm_edit, "visible", v == TIMM_ENTRY))
        self._epochs_spin = SpinBox(label="epochs", min=1, max=1000, value=10)
        self._lr_spin = FloatSpinBox(label="learning rate", min=1e-6, max=1.0, step=1e-4,
                                     value=2e-3)
        self._batch_spin = SpinBox(label="batch size", min=1, max=512, value=8)
        self._patch_spin = SpinBox(label="patch size", min=16, max=2048, step=16, value=256)
        self._steps_spin = SpinBox(label="steps/epoch", min=0, max=100000, value=0)
        self._device_combo = ComboBox(label="device", choices=("auto", "cpu", "cuda"),
                                      value="auto")
        self._procs_spin = SpinBox(
            label="processes", min=1, max=64, value=1,
            tooltip="1: train here. N >= 2: train data-parallel in N processes (one GPU each "
                    "with CUDA, else CPU processes), started as 'napari-histo train --nproc N' "
                    "and followed here; the batch size stays the global batch.")
        self._augment_check = CheckBox(label="augmentation", value=True)
        self._stain_combo = ComboBox(label="stain norm", choices=("none", "macenko", "reinhard"),
                                     value="none")
        self._stain_ref_edit = FileEdit(label="stain reference", mode=FileDialogMode.EXISTING_FILE, nullable=True)
        self._val_spin = FloatSpinBox(label="validation fraction", min=0.0, max=0.9, step=0.05,
                                      value=0.25)
        self._group_edit = LineEdit(label="split by", value="auto")
        self._folds_spin = SpinBox(
            label="cross-validation folds", min=0, max=20, value=0,
            tooltip="0: one train/validation split. K >= 2: group K-fold cross-validation; "
                    "the metrics shown are out-of-fold (every group scored by a model that "
                    "never saw it), with 95 % intervals; the model for use is fold 1's.")
        self._init_edit = FileEdit(label="start from", mode=FileDialogMode.EXISTING_FILE,
                                   filter="*.pt", nullable=True)
        self._out_edit = FileEdit(label="runs folder", mode=FileDialogMode.EXISTING_DIRECTORY,
                                  value=runs_dir())
        self._preview_check = CheckBox(label="preview each epoch", value=True)
        self._start_button = PushButton(text="Start")
        self._stop_button = PushButton(text="Stop", enabled=False)
        self._resume_button = PushButton(text="Resume", enabled=False)
        self._use_button = PushButton(text="Use this model", enabled=False)
        self._progress_bar = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status_label = StatusLine()
        self.curves = CurvePlot()
        # rarely changed options live in a collapsible section so the dock stays compact
        self._advanced_check = CheckBox(label="more options", value=False)
        self._advanced = Container(labels=True, widgets=[
            self._shapes_combo, self._add_pair_button, self._pairs_label, self._folder_edit,
            self._task_combo, self._lr_spin, self._patch_spin, self._steps_spin,
            self._augment_check, self._stain_combo, self._stain_ref_edit, self._val_spin,
            self._group_edit, self._folds_spin, self._init_edit, self._out_edit, self._preview_check])
        self._advanced.visible = False
        self._advanced.margins = (0, 0, 0, 0)
        self._advanced_check.changed.connect(self._toggle_advanced)
        self._buttons = Container(layout="horizontal", labels=False, widgets=[
            self._start_button, self._stop_button, self._resume_button])
        self._buttons.margins = (0, 0, 0, 0)
        self.extend([
            self._image_combo, self._labels_combo, self._model_combo, self._timm_edit,
            self._epochs_spin,
            self._batch_spin, self._device_combo, self._procs_spin, self._advanced_check,
            self._advanced,
            self._buttons, self._use_button, self._progress_bar, self._status_label,
            self.curves.widget,
        ])
        self._pairs: list[tuple[Any, Any, Any]] = []
        #: the launcher of the current multi-process run (None for an in-process run)
        self.process: Any = None
        self._preview_handle: TaskHandle | None = None
        self._preview_crop: tuple[Any, tuple[int, int, int, int]] | None = None
        self.preview_layer: Any = None
        self.result: Any = None
        #: warnings of the current run (validation too small to trust, ...)
        self.warnings: list[str] = []
        self.last_checkpoint: str | None = None
        self._cfg: Any = None
        self._arrays: list[Any] | None = None
        self._sources: list[dict[str, Any]] = []  # per array: its layers + placement (card)
        self._epoch_t0 = 0.0
        #: "fold 2/3 " while a cross-validation runs (prefixes the status line)
        self._fold_prefix = ""
        self._task_combo.changed.connect(self._on_task)
        self._add_pair_button.changed.connect(self._on_add_pair)
        self._start_button.changed.connect(lambda *_: self.start())
        self._stop_button.changed.connect(lambda *_: self.stop())
        self._resume_button.changed.connect(lambda *_: self.start(resume=True))
        self._use_button.changed.connect(lambda *_: self.use_model())
        self._dock_ready()
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, preload_torch_training)  # once the dock is shown

    # ---------------------------------------------------------------- choices
    def _labels_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return rl.layers_of(self._viewer, "labels")

    def _toggle_advanced(self, show: bool) -> None:
        self._advanced.visible = bool(show)

    def _on_task(self, task: str) -> None:
        models = SEG_MODELS if task == "segment" else CLS_MODELS
        self._model_combo.choices = models
        self._model_combo.value = default_model(task)

    def _model_name(self) -> str:
        """The combo's model, ``timm:<backbone>`` when its timm entry is chosen."""
        name = str(self._model_combo.value)
        if name == TIMM_ENTRY:
            backbone = str(self._timm_edit.value or "").strip()
            if not backbone:
                raise ValueError("type a timm backbone name (e.g. efficientnet_b0) for "
                                 f"model {TIMM_ENTRY}")
            return TIMM_PREFIX + backbone
        return name

    def _on_add_pair(self, *_: Any) -> None:
        img, lab = self._image_combo.value, self._labels_combo.value
        if img is None or lab is None:
            self._show_error("choose an image layer and a Labels layer to add as a training pair")
            return
        self._pairs.append((img, lab, self._shapes_combo.value))
        self._pairs_label.value = "; ".join(f"{i.name} + {lb.name}" for i, lb, _ in self._pairs)

    # ---------------------------------------------------------------- config
    def _layer_pairs(self) -> list[tuple[Any, Any, Any]]:
        if self._pairs:
            return [p for p in self._pairs if p[0] in self._viewer.layers
                    and p[1] in self._viewer.layers]
        img, lab = self._image_combo.value, self._labels_combo.value
        if img is not None and lab is not None:
            return [(img, lab, self._shapes_combo.value)]
        return []

    def _to_config(self, *, resume: bool = False) -> Any:
        """Build the TrainConfig (raises HistoError/ValueError with a clear message)."""
        from napari_histo.engine.training.config import TrainConfig

        folder = self._folder_edit.value
        data = (str(folder),) if folder not in (None, "", Path(".")) and str(folder) else ()
        stain = None if self._stain_combo.value == "none" else self._stain_combo.value
        ref = self._stain_ref_edit.value
        stain_ref = str(ref) if ref is not None and str(ref) != "" and Path(str(ref)).is_file() else None
        init = self._init_edit.value
        init_ckpt = str(init) if init is not None and str(init) != "" and Path(str(init)).is_file() else None
        if resume and self._cfg is not None:
            return self._cfg.replace(resume=True, epochs=int(self._epochs_spin.value))
        folds = int(self._folds_spin.value)
        if folds == 1:
            raise ValueError("cross-validation needs at least 2 folds (0 turns it off)")
        runs = Path(str(self._out_edit.value))
        out_dir = runs / time.strftime("run-%Y%m%d-%H%M%S")
        return TrainConfig(
            task=self._task_combo.value, data=data, out_dir=str(out_dir),
            model=self._model_name(), epochs=int(self._epochs_spin.value),
            lr=float(self._lr_spin.value), batch_size=int(self._batch_spin.value),
            patch_size=int(self._patch_spin.value), device=self._device_combo.value,
            group_by=str(self._group_edit.value or "auto"),
            val_fraction=float(self._val_spin.value), augment=bool(self._augment_check.value),
            stain_norm=stain, stain_reference=stain_ref if stain else None,
            init_checkpoint=init_ckpt,
            steps_per_epoch=int(self._steps_spin.value) or None, resume=resume,
            folds=folds or None)

    def _to_arrays(self) -> list[Any]:
        arrays: list[Any] = []
        self._sources = []
        for img, lab, shapes in self._layer_pairs():
            boxes = None
            if shapes is not None and len(shapes.data):
                boxes = [b for b in (rl.shapes_box(_single(shapes, i), img)
                                     for i in range(len(shapes.data))) if b is not None]
            elif img.multiscale:
                vb = rl.visible_box(self._viewer, img)
                boxes = [vb] if vb is not None else None
            n = len(arrays)
            arrays += layer_pair_samples(img, lab, boxes=boxes,
                                         split_single=float(self._val_spin.value) > 0)
            self._sources[n:] = [layer_pair_source(img, lab, boxes)] * (len(arrays) - n)
            if self._preview_crop is None:
                b = (boxes or [(0, 0, *rl.level0_shape(img))])[0]
                self._preview_crop = (img, _center_crop(b, 256))
        return arrays

    def set_stain(self, method: str, reference: str) -> None:
        """Normalise training images with ``method`` fitted on ``reference`` (Stain widget)."""
        self._stain_combo.value = method
        self._stain_ref_edit.value = reference  # type: ignore[assignment]  # magicgui takes str

    # ---------------------------------------------------------------- actions
    def start(self, *, resume: bool = False) -> TaskHandle | None:
        """Start (or resume) training; returns the task handle."""
        from napari_histo.core.errors import HistoError

        if self._busy("training is already running; stop it first"):
            return None
        try:
            if not resume:
                self._preview_crop = None
                self._arrays = self._to_arrays()
            cfg = self._to_config(resume=resume)
            if not cfg.data and not self._arrays:
                raise ValueError("no training data: pick an image layer and its Labels layer, "
                                 "or a data folder")
            nproc = int(self._procs_spin.value)
            if nproc > 1 and cfg.folds:
                raise ValueError("cross-validation runs in one process: set processes to 1 "
                                 "or cross-validation folds to 0")
        except (HistoError, ValueError) as err:
            self._show_error(err)
            return None
        from napari_histo.engine.run_card import train_with_card

        preload_torch_training()
        self._cfg = cfg
        if not resume:
            self.curves.clear()
        self._set_running(True)
        self._status_label.value = "preparing data..."
        self.warnings = []
        self._epoch_t0 = time.perf_counter()
        self._fold_prefix = ""
        self.process = None
        if nproc > 1:  # same card, then `napari-histo train --nproc N` followed here
            from napari_histo.engine.training.processes import train_in_processes

            return self._run_task(train_in_processes, cfg, nproc, arrays=self._arrays or None,
                                  sources=self._sources or None, on_start=self._on_process,
                                  on_event=self._on_event, on_returned=self._on_returned,
                                  on_finished=self._on_finished, desc=f"train x{nproc}")
        # writes RUN/run_card.yaml + RUN/data (the layers' samples), then trains/cross-validates
        return self._run_task(train_with_card, cfg, arrays=self._arrays or None,
                              sources=self._sources or None,
                              on_event=self._on_event, on_returned=self._on_returned,
                              on_finished=self._on_finished, desc="train")

    def stop(self) -> None:
        """Stop after the current batch; the last checkpoint stays loadable."""
        self._cancel("stopping after this batch...")

    def use_model(self) -> Any:
        """Hand the best (else last) checkpoint to the Segment widget; return that widget."""
        ckpt = self.best_checkpoint
        if ckpt is None:
            self._show_error("no checkpoint yet: train at least one epoch")
            return None
        from napari_histo.engine.checkpoint_meta import checkpoint_task

        task = checkpoint_task(ckpt) or getattr(self._cfg, "task", None) or "segment"
        seg = find_or_add_segment_widget(self._viewer, task=task)
        seg.set_checkpoint(ckpt)
        return seg

    @property
    def best_checkpoint(self) -> str | None:
        """Best checkpoint of the last run (or the newest epoch checkpoint while running)."""
        best = getattr(self.result, "best_checkpoint", None)
        if best:
            return str(best)
        return self.last_checkpoint

    # ---------------------------------------------------------------- events
    def _set_running(self, running: bool) -> None:
        self._start_button.enabled = not running
        self._stop_button.enabled = running
        self._resume_button.enabled = not running and self._cfg is not None
        self._use_button.enabled = not running and self.best_checkpoint is not None

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, Progress):
            self._show_progress(ev.done, ev.total)
            self._status_label.value = (f"{self._fold_prefix}{ev.desc or 'train'} "
                                        f"batch {ev.done}/{ev.total}")
        elif isinstance(ev, EpochEnd):
            self.curves.add_epoch(ev.epoch, ev.metrics)
            if ev.checkpoint:
                self.last_checkpoint = str(ev.checkpoint)
                self._use_button.enabled = True
                self._start_preview(str(ev.checkpoint), ev.epoch)
            self._status_label.value = (f"{self._fold_prefix}epoch {ev.epoch}: "
                                        f"{_metrics_text(ev.metrics)}")
        elif isinstance(ev, Message):
            fold = _FOLD_START.match(ev.text)
            if fold:  # each fold is its own training run: its own curves
                self._fold_prefix = f"fold {fold.group(1)} "
                self.curves.clear()
            if ev.level == "warning":
                self.warnings.append(ev.text)
            self._status_label.value = ev.text

    def _on_process(self, proc: Any) -> None:
        """The launcher of a multi-process run started (worker thread: only store it)."""
        self.process = proc

    def _on_returned(self, result: Any) -> None:
        self.result = result

    def _on_finished(self) -> None:
        """Buttons back, the result line; the base then sets the end state."""
        self._set_running(False)
        if self._outcome() == "done" and self.result is not None:
            best = getattr(self.result, "best_metrics", {}) or {}
            note = f" ({len(self.warnings)} warning(s): small validation)" if self.warnings else ""
            folds = getattr(self.result, "folds", None)
            scope = f" {len(folds)}-fold out-of-fold:" if isinstance(folds, list) else ""
            self._status_label.value = (f"done: {Path(str(self.best_checkpoint)).name}{scope} "
                                        f"{_metrics_text(best)}{note}")

    def _start_preview(self, checkpoint: str, epoch: int) -> None:
        if not self._preview_check.value or self._preview_crop is None:
            return
        if self._preview_handle is not None and not self._preview_handle.done:
            return  # previous preview still running: skip this epoch
        img_layer, (y0, x0, y1, x1) = self._preview_crop
        if img_layer not in self._viewer.layers:
            return
        crop = rgb_crop(img_layer, (y0, x0, y1, x1))

        def _show(prob: np.ndarray, img_layer: Any = img_layer, y0: int = y0,
                  x0: int = x0) -> None:
            scale, translate = rl.placement_on(img_layer, offset_px=(y0, x0))
            where = {"image": img_layer.name, "translate": list(translate),
                     "shape": list(np.shape(prob))}
            prev = self.preview_layer
            if (prev is not None and prev in self._viewer.layers
                    and prev.metadata["napari_histo"].get("where") == where):
                prev.data = prob
                prev.metadata["napari_histo"]["epoch"] = epoch
                return
            # another image or crop: the old preview would sit over the wrong tissue
            rl.drop_previous_results(self._viewer, "train", None, roles=("preview",))
            self.preview_layer = self._viewer.add_image(
                prob, name=rl.unique_name(self._viewer, rl.result_name(
                    rl.subject_of(img_layer), "preview")),
                colormap=rl.heatmap_colormap(), contrast_limits=(0.0, 1.0), opacity=0.6,
                scale=scale, translate=translate, units=tuple(img_layer.units)[-2:],
                metadata={"napari_histo": {"kind": "prediction", "role": "preview",
                                           "epoch": epoch, "where": where}})
            rl.tag_result(self.preview_layer, "train", None, "preview")

        self._preview_handle = start_task(preview_job, checkpoint, crop, on_returned=_show,
                                          desc="preview", watch=self, progress_bar=False)


_FOLD_START = re.compile(r"^fold (\d+/\d+): training")


def _metrics_text(metrics: dict[str, Any]) -> str:
    """``val_loss=0.231 val_auc=0.910 [0.80, 0.97]``: the key metrics with their 95 % CIs."""
    from napari_histo.engine.uncertainty import format_metric

    keys = ("train_loss", "val_loss", "val_dice", "val_auc")
    return " ".join(t for t in (format_metric(metrics, k, 3) for k in keys) if t)


def _single(shapes: Any, i: int) -> Any:
    """A view of one shape of a Shapes layer for :func:`rl.shapes_box`."""

    class _One:
        data = [shapes.data[i]]
        selected_data: set[int] = set()

        def data_to_world(self, v: Any) -> Any:
            return shapes.data_to_world(v)

    return _One()


def _center_crop(box: tuple[int, int, int, int], size: int) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = box
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    h, w = min(size, y1 - y0), min(size, x1 - x0)
    return (cy - h // 2, cx - w // 2, cy - h // 2 + h, cx - w // 2 + w)


def find_or_add_segment_widget(viewer: Any, task: str = "segment") -> Any:
    """The widget that runs ``task`` checkpoints in ``viewer``, brought to the front.

    ``"segment"``: the Segment widget; ``"classify"``: the Patch heatmap widget. The one
    already docked is reused (exact type: a Patch heatmap is not a Segment widget); else a
    new one is docked as a tab beside the right-hand docks, so the window keeps its size.
    """
    from napari_histo.plugin._heatmap_widget import HeatmapWidget
    from napari_histo.plugin._segment_widget import SegmentWidget

    cls: type[SegmentWidget] = HeatmapWidget if task == "classify" else SegmentWidget
    for w in list(viewer.window.dock_widgets.values()):
        if type(w) is cls:
            raise_dock(w)
            return w
    seg = cls(viewer)
    name = "Patch heatmap" if cls is HeatmapWidget else "Segment"
    add_tabified(viewer, seg, f"{name} (napari-histo)")
    return seg
