"""Correct & fine-tune dock widget: repaint a prediction, save edits to disk, fine-tune.

napari's brush does not work on multiscale labels, so a whole-slide prediction is corrected
through an *editable window*: "Edit visible region" copies the prediction's labels under the
current view, at the prediction's working resolution, into a plain Labels layer placed with
the right scale/translate over the slide. Every stroke is written through (debounced) to the
prediction's OME-Zarr label pyramid on disk (or a corrections store next to it), so an edit
survives a crash. "Fine-tune on my corrections" samples training patches around the edited
pixels (weighted), continues training from the current checkpoint in a worker with live
curves (loss, and the window's Dice after each epoch), shows the window's Dice/IoU before and
after (against the chosen ground-truth Labels layer, else against the corrections; the widget
says which), then re-runs the visible region with the new model.
Entry point: :class:`CorrectWidget`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

from napari_histo.core.progress import EpochEnd, Message, Progress
from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin._plots import CurvePlot
from napari_histo.plugin._widget_base import DockWidget, StatusLine, raise_dock
from napari_histo.plugin._workers import TaskHandle, preload_torch_training

if TYPE_CHECKING:
    import napari

__all__ = ["CorrectWidget", "EditSession"]

AUTOSAVE_MS = 300
# corrected tumour in cyan: distinct from the prediction's green and the truth's red
CORRECTION_COLORS: dict[int | None, tuple[float, float, float, float]] = {
    None: (1.0, 0.85, 0.0, 1.0), 0: (0.0, 0.0, 0.0, 0.0), 1: (0.1, 0.8, 1.0, 1.0)}


class EditSession:
    """One editable window: the Labels layer, its original labels and the store on disk.

    ``box`` is the window in prediction (working-resolution) pixels; ``store`` a
    :class:`~napari_histo.engine.corrections.LabelEditStore` covering the whole prediction.
    """

    def __init__(self, layer: Any, original: np.ndarray, box: tuple[int, int, int, int],
                 store: Any, prediction: Any, image_layer: Any) -> None:
        self.layer = layer
        self.original = original
        self.box = box
        self.store = store
        self.prediction = prediction
        self.image_layer = image_layer
        self.saves = 0
        self._saved = original.copy()  # what the store holds for this window

    @property
    def edited(self) -> np.ndarray:
        """True where the user changed a label."""
        return np.asarray(self.layer.data) != self.original

    def save(self) -> None:
        """Write what changed since the last save through to the store (level 0 + pyramid).

        Only the bounding box of the changed pixels is written, so a brush stroke costs a few
        chunks whatever the window size.
        """
        data = np.asarray(self.layer.data, dtype=np.uint8)
        changed = data != self._saved
        if not changed.any():
            return
        rows = np.flatnonzero(changed.any(axis=1))
        cols = np.flatnonzero(changed.any(axis=0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        y0, x0, _, _ = self.box
        self.store.write_region(y0 + r0, x0 + c0, data[r0:r1, c0:c1])
        self._saved[r0:r1, c0:c1] = data[r0:r1, c0:c1]
        self.saves += 1


class CorrectWidget(DockWidget):
    """Dock widget: editable correction window, autosave, fine-tune on corrections."""

    progress_unit = "batches"
    cancelled_word = "stopped"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self._prediction_combo = ComboBox(label="prediction", choices=self._prediction_choices,
                                          nullable=True)
        self._image_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self._truth_combo = ComboBox(label="ground truth", choices=self._truth_choices,
                                     nullable=True,
                                     tooltip="score Dice against this Labels layer; none: "
                                             "against your corrections")
        self._edit_button = PushButton(text="Edit visible region")
        self._ckpt_edit = FileEdit(label="model", mode=FileDialogMode.EXISTING_FILE, filter="*.pt", nullable=True)
        self._epochs_spin = SpinBox(label="epochs", min=1, max=200, value=4)
        self._steps_spin = SpinBox(label="steps/epoch", min=1, max=10000, value=8)
        self._lr_spin = FloatSpinBox(label="learning rate", min=1e-6, max=1.0, step=1e-4,
                                     value=5e-4)
        self._weight_spin = FloatSpinBox(label="edit weight", min=1.0, max=100.0, value=5.0)
        self._finetune_button = PushButton(text="Fine-tune on my corrections")
        self._stop_button = PushButton(text="Stop", enabled=False)
        self._progress_bar = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status_label = StatusLine()
        self._scores_label = Label(label="", value="")
        self.curves = CurvePlot()
        self.extend([
            self._prediction_combo, self._image_combo, self._truth_combo, self._edit_button,
            self._ckpt_edit, self._epochs_spin, self._steps_spin, self._lr_spin,
            self._weight_spin, self._finetune_button, self._stop_button, self._progress_bar,
            self._status_label, self._scores_label, self.curves.widget,
        ])
        self.session: EditSession | None = None
        self.result: Any = None
        #: the last run's FinetuneOutcome (scores before/after, per-epoch window Dice)
        self.outcome: Any = None
        self._scope = ""
        self.finetuned_checkpoint: str | None = None
        self.rerun_task: Any = None
        from qtpy.QtCore import QTimer

        self._save_timer = QTimer()
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(AUTOSAVE_MS)
        self._save_timer.timeout.connect(self.save_now)
        self._edit_button.changed.connect(lambda *_: self.edit_visible_region())
        self._finetune_button.changed.connect(lambda *_: self.fine_tune())
        self._stop_button.changed.connect(lambda *_: self.stop())
        self._prediction_combo.changed.connect(self._on_prediction)
        self._dock_ready()
        QTimer.singleShot(0, preload_torch_training)

    # ---------------------------------------------------------------- choices
    def _prediction_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(n, lyr) for n, lyr in rl.layers_of(self._viewer, "labels")
                if (lyr.metadata.get("napari_histo") or {}).get("role") == "labels"]

    def _truth_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(n, lyr) for n, lyr in rl.layers_of(self._viewer, "labels")
                if (lyr.metadata.get("napari_histo") or {}).get("kind")
                not in ("prediction", "corrections")]

    def _on_prediction(self, layer: Any) -> None:
        if layer is None:
            return
        meta = layer.metadata.get("napari_histo") or {}
        name = meta.get("image_layer")
        if name and name in self._viewer.layers:
            self._image_combo.value = self._viewer.layers[name]
        ckpt = meta.get("checkpoint")
        if ckpt and Path(ckpt).is_file() and not self._ckpt_edit.value:
            self._ckpt_edit.value = ckpt

    def set_checkpoint(self, path: str | Path) -> None:
        """The model that "Fine-tune" continues from."""
        self._ckpt_edit.value = Path(path)

    # ---------------------------------------------------------------- editing
    def edit_visible_region(self) -> EditSession | None:
        """Open an editable Labels window over the part of the prediction in view."""
        pred = self._prediction_combo.value
        if pred is None:
            self._show_error("segment something first: pick a prediction labels layer to correct")
            return None
        box = rl.visible_box(self._viewer, pred)
        if box is None:
            self._show_error(f"{pred.name} is not in view; pan to the region you want to correct")
            return None
        self.save_now()
        y0, x0, y1, x1 = box
        data = pred.data[0] if pred.multiscale else pred.data
        original = np.asarray(data[y0:y1, x0:x1]).astype(np.uint8)
        store = self._open_store(pred)
        scale = tuple(float(s) for s in pred.scale[-2:])
        translate = tuple(float(t) + o * s for t, o, s in
                          zip(pred.translate[-2:], (y0, x0), scale, strict=False))
        subject = (pred.metadata.get("napari_histo") or {}).get("source") or pred.name
        # an earlier window nobody painted on goes; a painted or renamed one stays
        rl.drop_previous_results(self._viewer, "correct", str(subject), roles=("corrections",))
        layer = self._viewer.add_labels(
            original.copy(),
            name=rl.unique_name(self._viewer, rl.result_name(str(subject), "corrections")),
            scale=scale, translate=translate, opacity=0.45, units=tuple(pred.units)[-2:],
            colormap=dict(CORRECTION_COLORS),
            metadata={"napari_histo": {"kind": "corrections", "prediction": pred.name,
                                       "box": list(box), "store": str(store.path)}})
        rl.tag_result(layer, "correct", str(subject), "corrections")
        layer.mode = "paint"
        layer.selected_label = 1
        layer.brush_size = 10
        layer.events.paint.connect(self._schedule_save)
        layer.events.data.connect(self._schedule_save)
        self.session = EditSession(layer, original, box, store, pred,
                                   self._image_combo.value)
        self._status_label.value = (f"paint label 1 (tumour) or 0 (erase); edits autosave to "
                                    f"{store.path.name}")
        return self.session

    def _open_store(self, pred: Any) -> Any:
        """The prediction's own label pyramid if it has one on disk, else a new store."""
        from napari_histo.engine.corrections import LabelEditStore
        from napari_histo.plugin._segment_widget import user_dir

        meta = pred.metadata.get("napari_histo") or {}
        store = meta.get("store")
        data = pred.data[0] if pred.multiscale else pred.data
        shape = tuple(int(s) for s in data.shape[-2:])
        if store and (Path(store) / "labels" / "prediction").is_dir():
            try:
                return LabelEditStore.open_or_create(Path(store) / "labels" / "prediction", shape)
            except Exception:  # a store we cannot edit (other layout): keep edits beside it
                pass
        folder = user_dir() / "corrections"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return LabelEditStore.open_or_create(folder / f"{pred.name}-{stamp}.ome.zarr", shape)

    def _schedule_save(self, *_: Any) -> None:
        self._save_timer.start()

    def save_now(self) -> None:
        """Write pending edits to disk now (also called by the autosave timer)."""
        self._save_timer.stop()
        if self.session is not None and self.session.layer in self._viewer.layers:
            self.session.save()

    # ---------------------------------------------------------------- fine-tuning
    def _samples(self) -> list[Any]:
        """Weighted patches around the edited pixels, image resampled to the working grid."""
        return self._window()[0]

    def _window(self) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """(training samples, window image on the working grid, corrected labels)."""
        from napari_histo.engine.corrections import correction_samples, resample_nearest

        s = self.session
        if s is None:
            raise ValueError("click 'Edit visible region' and paint some corrections first")
        edited = s.edited
        if not edited.any():
            raise ValueError("no corrections yet: paint over the prediction where it is wrong")
        image_layer = s.image_layer
        if image_layer is None:
            raise ValueError("choose the image layer the prediction was made from")
        lab = s.layer
        grid_scale = tuple(float(v) for v in lab.scale[-2:])
        grid_t = tuple(float(v) for v in lab.translate[-2:])
        # the finest pyramid level that is not finer than the working grid
        k = 0
        if image_layer.multiscale:
            for i, f in enumerate(image_layer.downsample_factors):
                if float(image_layer.scale[-2]) * float(f[-2]) <= grid_scale[0] * 1.01:
                    k = i
        data = image_layer.data[k] if image_layer.multiscale else image_layer.data
        f = (np.asarray(image_layer.downsample_factors[k][-2:], dtype=float)
             if image_layer.multiscale else np.ones(2))
        s0 = np.asarray(image_layer.scale[-2:], dtype=float)
        src_scale = s0 * f
        src_t = np.asarray(image_layer.translate[-2:], dtype=float) + (f - 1) / 2 * s0
        image = resample_nearest(data, src_scale, src_t, edited.shape, grid_scale, grid_t)
        image = np.ascontiguousarray(np.asarray(image)[..., :3]).astype(np.uint8)
        labels = np.asarray(lab.data).astype(np.uint8)
        samples = correction_samples(image, labels, edited, patch_size=128, max_patches=32,
                                     edit_weight=float(self._weight_spin.value))
        return samples, image, labels

    def _reference(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, str]:
        """What the window is scored against: (reference, valid pixels, its description).

        The chosen ground-truth layer resampled onto the window's grid (only the pixels it
        covers count), else the corrected labels themselves.
        """
        from napari_histo.engine.corrections import resample_inside, resample_nearest
        from napari_histo.plugin._jobs import layer_level0, layer_placement

        truth = self._truth_combo.value
        if truth is None or truth not in self._viewer.layers:
            return labels, None, "corrections"
        lab = self.session.layer if self.session is not None else None
        if lab is None:
            return labels, None, "corrections"
        g_scale = tuple(float(v) for v in lab.scale[-2:])
        g_t = tuple(float(v) for v in lab.translate[-2:])
        data = layer_level0(truth)
        t_scale, t_t = layer_placement(truth)
        ref = resample_nearest(data, t_scale, t_t, labels.shape, g_scale, g_t)
        valid = resample_inside(data.shape[-2:], t_scale, t_t, labels.shape, g_scale, g_t)
        if not valid.any():
            raise ValueError(f"ground truth {truth.name!r} does not cover the edited window; "
                             "choose another or none (then the corrections are the reference)")
        return (np.asarray(ref) > 0).astype(np.uint8), valid, f"ground truth {truth.name!r}"

    def fine_tune(self) -> TaskHandle | None:
        """Continue training the current model on the corrections, in the background."""
        from napari_histo.core.errors import HistoError

        if self._busy("fine-tuning is already running"):
            return None
        self.save_now()
        try:
            arrays, image, labels = self._window()
            reference, valid, ref_name = self._reference(labels)
            cfg = self._to_config()
        except (HistoError, ValueError) as err:
            self._show_error(err)
            return None
        from napari_histo.engine.corrections import finetune_job, window_scores

        assert self.session is not None  # _window checked
        before = self.session.original
        b = window_scores(before, reference, valid)
        preload_torch_training()
        self.curves.clear()
        self.outcome = None
        self._finetune_button.enabled = False
        self._stop_button.enabled = True
        self._scope = self._scope_text(ref_name, valid if valid is not None else labels)
        self._scores_label.value = (f"Dice before {b['dice']:.3f} (IoU {b['iou']:.3f}) "
                                    f"{self._scope}")
        self._status_label.value = f"fine-tuning on {len(arrays)} patches around your edits..."
        # writes RUN/run_card.yaml + RUN/data (the corrections' samples), then fine-tunes
        return self._run_task(finetune_job, cfg, arrays, image, before, reference,
                              reference_name=ref_name, valid=valid, card_origin="gui",
                              on_event=self._on_event,
                              on_returned=self._on_returned, on_finished=self._on_finished,
                              desc="fine-tune")

    def _scope_text(self, ref_name: str, valid: np.ndarray) -> str:
        """``against the corrections, edited window 412 x 380 px at 2.0 um/px``."""
        lab = self.session.layer if self.session is not None else None
        size = " x ".join(str(int(v)) for v in np.shape(valid)[:2])
        res = ""
        if lab is not None:
            unit = str(tuple(lab.units)[-1]) if getattr(lab, "units", None) else "px"
            unit = {"micrometer": "um", "pixel": "px"}.get(unit, unit)
            res = (f" at {float(lab.scale[-1]):.3g} {unit}/px" if unit != "px"
                   else f" at {float(lab.scale[-1]):.3g} image px per px")
        return f"against the {ref_name}, edited window {size} px{res}"

    def _to_config(self) -> Any:
        from napari_histo.core.settings import runs_dir
        from napari_histo.engine.checkpoints import read_checkpoint
        from napari_histo.engine.training import TrainConfig

        ckpt = self._ckpt_edit.value
        if not ckpt or not Path(str(ckpt)).is_file():
            raise ValueError("choose the model checkpoint to fine-tune (the one that predicted)")
        info = read_checkpoint(str(ckpt))
        pre = info.get("preprocessing") or {}
        mpp = pre.get("mpp")
        names = tuple(info.get("class_names") or ("background", "foreground"))
        out = runs_dir() / time.strftime("finetune-%Y%m%d-%H%M%S")
        return TrainConfig(
            task="segment", model=str(info["spec"]["name"]), epochs=int(self._epochs_spin.value),
            lr=float(self._lr_spin.value), batch_size=4, patch_size=128, mpp=mpp, data_mpp=mpp,
            device="cpu", out_dir=str(out), val_fraction=0.0, init_checkpoint=str(ckpt),
            steps_per_epoch=int(self._steps_spin.value), early_stopping_patience=None,
            class_names=names, num_classes=len(names), augment=False, amp=False, preview=False,
            freeze_norm=True)  # augmentation wrecked the model on a few patches (finetune_config)

    def stop(self) -> None:
        """Stop fine-tuning after the current batch."""
        self._cancel()

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, Progress):
            self._show_progress(ev.done, ev.total)
        elif isinstance(ev, EpochEnd):
            self.curves.add_epoch(ev.epoch, ev.metrics)
            loss = ev.metrics.get("train_loss", float("nan"))
            dice = ev.metrics.get("val_dice")
            extra = "" if dice is None else f", window Dice {float(dice):.3f}"
            self._status_label.value = f"epoch {ev.epoch}: train loss {loss:.3f}{extra}"
        elif isinstance(ev, Message):
            self._status_label.value = ev.text

    def _on_returned(self, outcome: Any) -> None:
        self.outcome = outcome
        result = self.result = outcome.train
        b, a = outcome.before, outcome.after
        self._scores_label.value = (
            f"Dice before {b['dice']:.3f} -> after {a['dice']:.3f}   "
            f"IoU {b['iou']:.3f} -> {a['iou']:.3f}\n{self._scope}")
        ckpt = outcome.checkpoint or result.best_checkpoint or result.last_checkpoint
        self.finetuned_checkpoint = str(ckpt)
        self._ckpt_edit.value = Path(ckpt)
        self._status_label.value = f"fine-tuned: {Path(str(ckpt)).name}; re-running the view"
        from napari_histo.plugin._train_widget import find_or_add_segment_widget

        seg = find_or_add_segment_widget(self._viewer)
        seg.set_checkpoint(ckpt)
        if self.session is not None and self.session.image_layer is not None:
            seg._image_combo.value = self.session.image_layer
        self.rerun_task = seg.run("current view")
        raise_dock(self)  # the scores before/after stay in front; Segment re-runs behind

    def _on_finished(self) -> None:
        self._finetune_button.enabled = True
        self._stop_button.enabled = False
