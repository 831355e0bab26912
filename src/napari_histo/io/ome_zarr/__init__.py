"""OME-Zarr (NGFF 0.4 and 0.5): napari-histo's one home for writing, streaming, opening and
completeness of every OME-Zarr store it reads or writes.

Modules
-------
* :mod:`._ngff`: the metadata: building ``multiscales`` (per-level transforms as the spec
  says), ``image-label``, the 0.4/0.5 layout (top level vs ``attrs["ome"]``), parsing it
  back, and reading group attributes from JSON alone (sniffing, ``info``, the reader).
* :mod:`._pyramid`: 2x downsampling and the chunk-wise filling of lower levels.
* :mod:`._store`: :class:`OmeZarrStore`, :func:`create_ome_zarr` (an empty pyramid a producer
  streams into), :func:`open_ome_zarr` and :func:`is_complete` (one rule, documented there).
* :mod:`._write`: :func:`write_ome_zarr`, an array or multiscale list -> a complete store.

The inference writer (``engine.inference.writer``) keeps what is specific to predictions
(locks, resume checks, block markers) and calls this package for the rest.

Layout (NGFF 0.4 on zarr v2 by default, which napari-ome-zarr and most viewers read; pass
``ngff_version="0.5"`` for zarr v3 with the metadata under ``attrs["ome"]``):

* arrays ``0, 1, ...`` (largest first), each level half the previous (ceil), blosc-zstd;
* 2D data has axes ``y, x``; channel data (RGB ``(Y, X, 3)`` or ``(Y, X, C)`` heatmaps) is stored
  channel-first ``(c, y, x)`` as NGFF requires (``write_block`` and :meth:`OmeZarrStore.read`
  take and give channel-last arrays);
* ``coordinateTransformations`` of level k: ``scale = s0 * 2**k`` and
  ``translation = t0 + (2**k - 1) * s0 / 2`` (the centre of the level's first pixel), with
  ``s0`` = mpp in micrometres (pixels when mpp is unknown);
* ``kind="labels"`` adds NGFF ``image-label`` metadata (napari-ome-zarr opens it as a Labels
  layer) and downsamples by striding (``[::2, ::2]``, never inventing a class); ``kind="image"``
  (RGB, grayscale or float heatmaps) downsamples by 2x2 means (integers rounded half up);
* ``attrs["napari_histo"]``: ``{"complete": bool, "kind", "mpp", ...your attrs}``. ``complete`` is
  False until :meth:`~OmeZarrStore.mark_complete`, so a crashed run is never mistaken for a
  finished one (:func:`is_complete`, ``open_ome_zarr(..., require_complete=True)``).

Streaming (the intended use)::

    store = create_ome_zarr(out, (H, W), "float16", chunks=512, mpp=(0.5, 0.5),
                            kind="image", name="tumor-prob", resume=args.resume)
    todo = ~store.written_chunks()          # (n_chunk_rows, n_chunk_cols) bool; all True fresh
    for iy, ix in zip(*np.nonzero(todo)):   # any order, any process (chunks are disjoint)
        y0, x0 = iy * 512, ix * 512
        block = predict(y0, x0)             # (h, w) or (h, w, C); edge chunks may be smaller
        store.write_block(y0, x0, block)    # == store.level0[y0:y1, x0:x1] = block for 2D
        store.build_pyramid(region=(y0, x0, y0 + 512, x0 + 512))  # optional: live display
    store.build_pyramid()                   # all lower levels, chunk-wise
    store.mark_complete()

Chunks are written atomically by zarr's local store and empty chunks are written too
(``write_empty_chunks``), so :meth:`~OmeZarrStore.written_chunks` is a reliable resume map:
a chunk is there only when the producer finished writing it. Write blocks aligned to
``store.chunks``: a block covering part of a chunk creates that chunk, which then reads as
done. Several processes (dask workers) may write disjoint level-0 chunks of one store, each
after ``open_ome_zarr(out, mode="r+")``; build the pyramid once at the end (or per region
with regions aligned to ``chunks * 2**(n_levels-1)`` so that levels don't race).
A finished store converts to OME-TIFF with
``write_ome_tiff(tif, open_ome_zarr(out).as_dask()[0], mpp=..., kind=...)``.
"""

from napari_histo.io.ome_zarr._ngff import (
    ATTR,
    VERSIONS,
    image_label,
    is_ngff_image,
    level0_placement,
    multiscales,
    ngff_multiscales,
    ngff_root,
    read_attrs,
    wrap,
)
from napari_histo.io.ome_zarr._pyramid import (
    add_levels,
    downsample2,
    downsample2_dask,
    grow_pyramid,
    n_levels_for,
    pyramid_depth,
    update_levels,
)
from napari_histo.io.ome_zarr._store import (
    Kind,
    OmeZarrStore,
    array_options,
    create_ome_zarr,
    is_complete,
    open_ome_zarr,
)
from napari_histo.io.ome_zarr._write import write_ome_zarr

__all__ = [
    "ATTR",
    "VERSIONS",
    "Kind",
    "OmeZarrStore",
    "array_options",
    "create_ome_zarr",
    "downsample2",
    "downsample2_dask",
    "grow_pyramid",
    "add_levels",
    "pyramid_depth",
    "update_levels",
    "image_label",
    "is_complete",
    "is_ngff_image",
    "level0_placement",
    "multiscales",
    "n_levels_for",
    "ngff_multiscales",
    "ngff_root",
    "open_ome_zarr",
    "read_attrs",
    "wrap",
    "write_ome_zarr",
]
