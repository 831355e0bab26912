"""Patch heatmap dock widget: a patch classifier over a slide, one output pixel per stride.

Same behaviour as the Segment widget (view / region / whole slide, tiles appear as they
finish, a heatmap Image + thresholded Labels pair at the slide's position, Cancel) with the
classifier's options: ``stride`` (output cell size in working pixels), ``context`` (the patch
the model sees around each cell, e.g. 128 / 299 for CAMELYON) and tissue-only. The engine's
``predict_slide`` picks the patch-heatmap plan for classification checkpoints.
Entry point: :class:`HeatmapWidget`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, SpinBox

from napari_histo.plugin._segment_widget import SegmentWidget

if TYPE_CHECKING:
    import napari

__all__ = ["HeatmapWidget"]


class HeatmapWidget(SegmentWidget):
    """Dock widget: classifier checkpoint + stride/context -> probability heatmap layers."""

    task = "classify"
    result_owner = "heatmap"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self._stride_spin = SpinBox(label="stride (0 = model's)", min=0, max=4096, value=0)
        self._context_spin = SpinBox(label="context (0 = model's)", min=0, max=4096, value=0)
        self._tissue_check = CheckBox(label="tissue only", value=True)
        at = list(self).index(self._threshold_slider)
        for k, w in enumerate((self._stride_spin, self._context_spin, self._tissue_check)):
            self.insert(at + k, w)
        self._run_button.text = "Compute heatmap"

    def _extra_cfg(self, whole: bool) -> dict[str, Any]:
        # patches are small: large batches keep the model busy
        extra: dict[str, Any] = {"tissue_only": bool(self._tissue_check.value),
                                 "batch_size": 64}
        if int(self._stride_spin.value):
            extra["stride"] = int(self._stride_spin.value)
        if int(self._context_spin.value):
            extra["context"] = int(self._context_spin.value)
        return extra
