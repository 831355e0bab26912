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
from napari_histo.plugin._layers import LayerDataTuple

__all__ = ["CACHE_ENV", "SAMPLE_NAME", "cache_dir", "make_sample_slide", "sample_slide_path"]

#: Environment variable naming the cache folder (read by core.settings.cache_dir).
CACHE_ENV = settings.CACHE_ENV
#: Bump when the generator's output changes so old caches are not reused.
SAMPLE_VERSION = 1
SAMPLE_NAME = "synthetic_he"
SAMPLE_SHAPE = (4096, 6144)
SAMPLE_MPP = 0.5
SAMPLE_LEVELS = 4
MASK_DOWNSAMPLE = 4


def cache_dir() -> Path:
    """Folder for generated sample files: ``$NAPARI_HISTO_CACHE`` or ``~/.cache/napari-histo``
    (:func:`napari_histo.core.settings.cache_dir`)."""
    return settings.cache_dir()


def sample_slide_path(
    *, shape: tuple[int, int] = SAMPLE_SHAPE, folder: str | Path | None = None
) -> Path:
    """Return the synthetic sample slide (``<name>.tif`` + ``<name>_mask.tif``), writing it
    on first use.

    Parameters
    ----------
    shape
        Level-0 (height, width); the default is what File > Open Sample shows.
    folder
        Where to keep it (default :func:`cache_dir` / ``sample-v<version>``).

    Returns
    -------
    Path
        The slide; its ground-truth mask sits next to it as ``<stem>_mask.tif``.
    """
    from napari_histo.io.synthetic import write_synthetic_slide

    root = Path(folder) if folder is not None else cache_dir() / f"sample-v{SAMPLE_VERSION}"
    default = tuple(shape) == SAMPLE_SHAPE
    stem = SAMPLE_NAME if default else f"{SAMPLE_NAME}_{shape[0]}x{shape[1]}"
    slide = root / f"{stem}.tif"
    mask = root / f"{stem}_mask.tif"
    # The mask is written after the slide (both atomically), so it marks a complete sample.
    if slide.is_file() and mask.is_file():
        return slide
    root.mkdir(parents=True, exist_ok=True)
    write_synthetic_slide(
        slide,
        shape=(int(shape[0]), int(shape[1])),
        levels=SAMPLE_LEVELS,
        mpp=SAMPLE_MPP,
        compression="jpeg",
        seed=0,
        with_mask=True,
        mask_downsample=MASK_DOWNSAMPLE,
    )
    return slide


def make_sample_slide() -> list[LayerDataTuple]:
    """Layers of the synthetic sample: multiscale H&E image + tumour ground truth."""
    from napari_histo.plugin._reader import read_slide_layers

    layers = read_slide_layers(sample_slide_path())
    for _, kwargs, _ in layers:
        kwargs.setdefault("metadata", {}).setdefault("napari_histo", {})["sample"] = True
    return layers
