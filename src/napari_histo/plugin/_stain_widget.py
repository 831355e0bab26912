"""Stain normalization dock widget: fit Macenko/Reinhard on a drawn region, show it lazily.

The user draws a rectangle (Shapes layer) on a well-stained area; the widget reads that region
at full resolution, fits ``engine.stain.fit_stain`` in a worker, and adds a *lazily computed*
normalised copy of the image (a dask ``map_blocks`` over every pyramid level, so only what
napari displays is ever normalised). "Use for training" saves the reference region as a PNG
and hands it to the Train widget, whose runs store the fitted stain in the checkpoint so
inference applies the same normalisation. Entry point: :class:`StainWidget`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, PushButton

from napari_histo.plugin import _result_layers as rl
from napari_histo.plugin._jobs import rgb_crop
from napari_histo.plugin._widget_base import DockWidget, StatusLine
from napari_histo.plugin._workers import TaskHandle

if TYPE_CHECKING:
    import napari

__all__ = ["StainWidget", "fit_job", "normalized_levels"]

MAX_REFERENCE_PX = 2048 * 2048


def fit_job(region: np.ndarray, method: str) -> Any:
    """Fit stain parameters on an RGB region (a task, so it runs in a worker)."""
    from napari_histo.core.progress import Message
    from napari_histo.engine.stain import fit_stain

    yield Message(f"fitting {method} on a {region.shape[1]} x {region.shape[0]} px region")
    return fit_stain(region, method)


def _normalize_block(block: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    from napari_histo.engine.stain import normalize_image

    if block.size == 0:
        return block
    return normalize_image(np.ascontiguousarray(block[..., :3]), params)


def normalized_levels(levels: list[Any], params: dict[str, Any], chunk: int = 512) -> list[Any]:
    """Lazy normalised copies of RGB levels (dask; nothing is computed until displayed)."""
    import dask.array as da

    out = []
    for lv in levels:
        arr = lv if isinstance(lv, da.Array) else da.from_array(lv, chunks=(chunk, chunk, -1))
        arr = arr[..., :3].rechunk({2: -1})
        out.append(arr.map_blocks(_normalize_block, params=params, dtype=np.uint8))
    return out


class StainWidget(DockWidget):
    """Dock widget: reference region -> fitted stain -> lazily normalised image layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self._image_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self._ref_combo = ComboBox(label="reference image", choices=self._image_choices,
                                   nullable=True)
        self._shapes_combo = ComboBox(label="reference region", choices=self._shapes_choices,
                                      nullable=True)
        self._method_combo = ComboBox(label="method", choices=("macenko", "reinhard"),
                                      value="macenko")
        self._fit_button = PushButton(text="Fit and show normalised image")
        self._use_button = PushButton(text="Use for training", enabled=False)
        self._status_label = StatusLine()
        self.extend([self._image_combo, self._ref_combo, self._shapes_combo, self._method_combo,
                     self._fit_button, self._use_button, self._status_label])
        self.params: dict[str, Any] | None = None
        self.layer: Any = None
        self.reference_path: str | None = None
        self._region: np.ndarray | None = None
        self._fit_button.changed.connect(lambda *_: self.fit())
        self._use_button.changed.connect(lambda *_: self.use_for_training())
        self._dock_ready()

    def _image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        """RGB image layers that are not predictions (stain needs colour)."""
        return [(n, lyr) for n, lyr in super()._image_choices() if getattr(lyr, "rgb", False)]

    def fit(self) -> TaskHandle | None:
        """Fit on the drawn region of the reference image (default: the image itself)."""
        image = self._image_combo.value
        if image is None:
            self._show_error("choose an RGB image layer to normalise")
            return None
        ref = self._ref_combo.value or image  # fit on another slide, or on this one
        box = rl.shapes_box(self._shapes_combo.value, ref) if self._shapes_combo.value \
            else rl.visible_box(self._viewer, ref)
        if box is None:
            self._show_error("draw a rectangle on well-stained tissue (Shapes layer) as the reference")
            return None
        y0, x0, y1, x1 = box
        if (y1 - y0) * (x1 - x0) > MAX_REFERENCE_PX:
            self._show_error("the reference region is too large; draw a smaller rectangle "
                       f"(at most {MAX_REFERENCE_PX:,} pixels)")
            return None
        region = rgb_crop(ref, box)
        self._region = region
        method = str(self._method_combo.value)
        self._status_label.value = "fitting..."
        return self._run_task(fit_job, region, method, on_returned=self._show,
                              desc="stain fit", progress_bar=False)

    def _show(self, params: dict[str, Any]) -> None:
        self.params = params
        image = self._image_combo.value
        if image is None or image not in self._viewer.layers:
            return
        levels = list(image.data) if image.multiscale else [image.data]
        lazy = normalized_levels(levels, params)
        name = rl.unique_name(self._viewer, f"{image.name} {params['method']}-normalised")
        self.layer = self._viewer.add_image(
            lazy if image.multiscale else lazy[0], name=name, rgb=True,
            multiscale=image.multiscale, contrast_limits=(0, 255), scale=image.scale,
            translate=image.translate, units=tuple(image.units),
            metadata={"napari_histo": {"kind": "stain", "params": params,
                                       "source_layer": image.name}})
        self._use_button.enabled = True
        self._status_label.value = f"{params['method']} fitted; normalised view added"

    def use_for_training(self) -> str | None:
        """Save the reference region and set it as the Train widget's stain normalisation."""
        if self._region is None or self.params is None:
            return None
        from skimage.io import imsave

        from napari_histo.plugin._segment_widget import user_dir
        from napari_histo.plugin._train_widget import TrainWidget

        folder = user_dir() / "stain"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"reference-{time.strftime('%Y%m%d-%H%M%S')}.png"
        imsave(str(path), self._region, check_contrast=False)
        self.reference_path = str(path)
        for w in list(self._viewer.window.dock_widgets.values()):
            if isinstance(w, TrainWidget):
                w.set_stain(self.params["method"], str(path))
        self._status_label.value = f"reference saved to {path.name}; Train uses it"
        return self.reference_path
