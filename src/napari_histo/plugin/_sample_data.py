"""Sample data contribution (File > Open Sample > napari-histo), fully offline.

A synthetic pyramidal H&E-like slide with its tumour mask is generated on first use by
``napari_histo.io.synthetic.write_synthetic_slide`` into a cache folder (``$NAPARI_HISTO_CACHE``
or ``~/.cache/napari-histo``) and then opened through the same reader as any slide, so the
sample shows exactly what a user's slide would: a multiscale image in microns plus its
ground-truth Labels layer (stored at 1/4 resolution, aligned by physical extent).

Entry points: :func:`sample_slide_path` (plain path, reused by ``napari-histo demo``) and
:func:`make_sample_slide` (the manifest command).
"""

from __future__ import annotations

from pathlib import Path

from napari_histo.core import settings
from napari_histo.engine import demo as _demo
from napari_histo.plugin._layers import LayerDataTuple

__all__ = ["CACHE_ENV", "SAMPLE_NAME", "cache_dir", "make_sample_slide", "sample_slide_path"]

#: Environment variable naming the cache folder (read by core.settings.cache_dir).
CACHE_ENV = settings.CACHE_ENV
# the sample slide lives in the engine, shared with ``napari-histo demo --headless``
SAMPLE_VERSION = _demo.SAMPLE_VERSION
SAMPLE_NAME = _demo.SAMPLE_NAME
SAMPLE_SHAPE = _demo.SAMPLE_SHAPE


def cache_dir() -> Path:
    """Folder for generated sample files: ``$NAPARI_HISTO_CACHE`` or ``~/.cache/napari-histo``
    (:func:`napari_histo.core.settings.cache_dir`)."""
    return settings.cache_dir()


def sample_slide_path(
    *, shape: tuple[int, int] = SAMPLE_SHAPE, folder: str | Path | None = None
) -> Path:
    """The synthetic sample slide, written on first use
    (:func:`napari_histo.engine.demo.sample_slide_path`; its mask is ``<stem>_mask.tif``)."""
    return _demo.sample_slide_path(shape=shape, folder=folder)


def make_sample_slide() -> list[LayerDataTuple]:
    """Layers of the synthetic sample: multiscale H&E image + tumour ground truth."""
    from napari_histo.plugin._reader import read_slide_layers

    layers = read_slide_layers(sample_slide_path())
    for _, kwargs, _ in layers:
        kwargs.setdefault("metadata", {}).setdefault("napari_histo", {})["sample"] = True
    return layers
