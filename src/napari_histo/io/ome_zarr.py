"""OME-Zarr (NGFF) output: one-shot writes and a streaming store for whole-slide inference.

Entry points
------------
* :func:`write_ome_zarr` (in :mod:`napari_histo.io.writers` too): an array (numpy or dask) or a
  list of arrays (a ready multiscale) -> a complete NGFF pyramid, written under a temporary
  name and renamed when complete.
* :func:`create_ome_zarr` -> :class:`OmeZarrStore`: an empty pyramid that a producer fills
  chunk by chunk (streamed inference), then :meth:`OmeZarrStore.build_pyramid` and
  :meth:`OmeZarrStore.mark_complete`.
* :func:`open_ome_zarr`, :func:`is_complete`.

Layout (NGFF 0.4 on zarr v2 by default, which napari-ome-zarr and most viewers read; pass
``ngff_version="0.5"`` for zarr v3 with the metadata under ``attrs["ome"]``):

* arrays ``0, 1, ...`` (largest first), each level half the previous (ceil), blosc-zstd;
* 2D data has axes ``y, x``; channel data (RGB ``(Y, X, 3)`` or ``(Y, X, C)`` heatmaps) is stored
  channel-first ``(c, y, x)`` as NGFF requires (``write_block`` and :meth:`OmeZarrStore.read`
  take and give channel-last arrays);
* ``coordinateTransformations``: ``scale = mpp * 2**level`` in micrometres (pixels when mpp is
  unknown);
* ``kind="labels"`` adds NGFF ``image-label`` metadata (napari-ome-zarr opens it as a Labels
  layer) and downsamples by striding (``[::2, ::2]``, never inventing a class); ``kind="image"``
  (RGB, grayscale or float heatmaps) downsamples by 2x2 means (integers rounded half up);
* ``attrs["napari_histo"]``: ``{"complete": bool, "kind", "mpp", ...your attrs}``. ``complete`` is
  False until :meth:`~OmeZarrStore.mark_complete`, so a crashed run is never mistaken for a
  finished one (:func:`is_complete`, ``open_ome_zarr(..., require_complete=True)``).

Streaming inference (the intended use)::

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

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError, DataError, HistoError, OutputExistsError
from napari_histo.core.limits import MPP_RANGE, check_image_size, one_line

__all__ = [
    "OmeZarrStore",
    "create_ome_zarr",
    "downsample2",
    "downsample2_dask",
    "is_complete",
    "n_levels_for",
    "open_ome_zarr",
    "write_ome_zarr",
]

Kind = Literal["labels", "image"]
_ATTR = "napari_histo"
#: napari-ome-zarr / ome-zarr-py understand these label colours (RGBA 0-255).
_LABEL_COLORS = [
    [0, 0, 0, 0], [255, 0, 0, 255], [0, 170, 0, 255], [0, 0, 255, 255], [255, 170, 0, 255],
    [170, 0, 255, 255], [0, 200, 200, 255], [128, 128, 128, 255],
]  # fmt: skip


# ----------------------------------------------------------------------------- downsampling


def downsample2(block: np.ndarray, kind: str) -> np.ndarray:
    """Halve the last two axes: labels by striding, images by 2x2 means (edge replicated).

    Blocks cut at even offsets give the same result as the whole array, which is what makes
    chunk-wise and region-wise pyramids identical to one-shot ones.
    """
    if kind == "labels":
        return np.ascontiguousarray(block[..., ::2, ::2])
    h, w = block.shape[-2:]
    pad = [(0, 0)] * (block.ndim - 2) + [(0, h % 2), (0, w % 2)]
    if h % 2 or w % 2:
        block = np.pad(block, pad, mode="edge")
    # four strided adds: several times faster than a reduction over a reshaped 5-D view
    q = (block[..., ::2, ::2], block[..., 1::2, ::2], block[..., ::2, 1::2], block[..., 1::2, 1::2])
    if np.issubdtype(block.dtype, np.integer) or block.dtype == bool:
        # narrowest exact accumulator: 4 x uint8 fits uint16 (a quarter of int64's memory)
        acc: type = {1: np.uint16, 2: np.uint32}.get(block.dtype.itemsize, np.int64)
        if block.dtype.kind == "i" or block.dtype == bool:
            acc = np.int64 if block.dtype.itemsize > 2 else np.int32
        s: np.ndarray = q[0].astype(acc)
        for part in q[1:]:
            s += part
        s += 2
        s //= 4
        return s.astype(block.dtype)
    f = q[0].astype(np.float32)
    for part in q[1:]:
        f += part
    f *= 0.25
    return f.astype(block.dtype)


def downsample2_dask(arr: da.Array, kind: str) -> da.Array:
    """Lazy :func:`downsample2` over the last two axes of a dask array (chunk-wise)."""
    chunks = list(arr.chunks)
    for ax in (-2, -1):
        c = chunks[ax]
        if any(x % 2 for x in c[:-1]):
            size = max(2, (max(c) + 1) // 2 * 2)
            chunks[ax] = (size,)
    if chunks != list(arr.chunks):
        arr = arr.rechunk(tuple(x if len(x) != 1 else x[0] for x in chunks))
    out_chunks = tuple(arr.chunks[:-2]) + tuple(
        tuple((x + 1) // 2 for x in c) for c in arr.chunks[-2:]
    )
    return da.map_blocks(downsample2, arr, kind, chunks=out_chunks, dtype=arr.dtype)


def n_levels_for(shape: Sequence[int], chunk: int, min_size: int = 256) -> int:
    """Levels needed until the largest side fits one chunk (or ``min_size``)."""
    n, side = 1, max(shape)
    while side > max(chunk, min_size):
        side = (side + 1) // 2
        n += 1
    return n


# ----------------------------------------------------------------------------- metadata


def _level_shapes(shape: tuple[int, int], n_levels: int) -> list[tuple[int, int]]:
    out = [shape]
    for _ in range(n_levels - 1):
        h, w = out[-1]
        out.append(((h + 1) // 2, (w + 1) // 2))
    return out


def _multiscales(
    n_levels: int,
    channels: int | None,
    mpp: tuple[float, float] | None,
    kind: str,
    name: str,
    version: str,
) -> dict[str, Any]:
    unit = {"unit": "micrometer"} if mpp is not None else {}
    axes: list[dict[str, Any]] = [{"name": "c", "type": "channel"}] if channels else []
    axes += [{"name": "y", "type": "space", **unit}, {"name": "x", "type": "space", **unit}]
    my, mx = mpp if mpp is not None else (1.0, 1.0)
    datasets = []
    for k in range(n_levels):
        f = float(2**k)
        scale = ([1.0] if channels else []) + [my * f, mx * f]
        datasets.append(
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    ms: dict[str, Any] = {
        "version": version,
        "name": name,
        "axes": axes,
        "datasets": datasets,
        "type": "nearest" if kind == "labels" else "mean",
        "metadata": {"method": "napari_histo.io.ome_zarr.downsample2", "kind": kind},
    }
    if version == "0.5":
        ms.pop("version")
    return ms


def _omero(channels: int, dtype: np.dtype, name: str) -> dict[str, Any]:
    hi = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
    colors = ["FF0000", "00FF00", "0000FF"] if channels == 3 else ["FFFFFF"] * channels
    names = ["red", "green", "blue"] if channels == 3 else [f"c{i}" for i in range(channels)]
    return {
        "name": name,
        "rdefs": {"model": "color"},
        "channels": [
            {
                "label": n,
                "color": c,
                "active": True,
                "window": {"start": 0.0, "end": hi, "min": 0.0, "max": hi},
            }
            for n, c in zip(names, colors, strict=True)
        ],
    }


def _norm_mpp(mpp: float | Sequence[float] | None) -> tuple[float, float] | None:
    if mpp is None:
        return None
    if np.isscalar(mpp):
        return (float(mpp), float(mpp))  # type: ignore[arg-type]
    my, mx = mpp  # type: ignore[misc]
    return (float(my), float(mx))


def _plausible_mpp(mpp: Any) -> tuple[float, float] | None:
    """``mpp`` read from a store: (y, x) um/px in ``MPP_RANGE``, else None (unknown)."""
    try:
        out = _norm_mpp(mpp)
    except (TypeError, ValueError, OverflowError):
        return None
    if out is None or not all(math.isfinite(v) and MPP_RANGE[0] <= v <= MPP_RANGE[1]
                              for v in out):
        return None
    return out


def _norm_chunks(chunks: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(chunks, int):
        return (chunks, chunks)
    cy, cx = chunks[-2:]
    return (int(cy), int(cx))


# ----------------------------------------------------------------------------- the store


class OmeZarrStore:
    """An NGFF multiscale group opened for reading or writing (see the module docstring).

    Attributes
    ----------
    path : the ``.ome.zarr`` directory.
    group : the zarr group.
    levels : zarr arrays, largest first (channel-first on disk for channel data).
    kind : "labels" or "image".
    mpp : level-0 (y, x) um/px or None.
    channels : number of channels, or None for 2D data.
    """

    def __init__(self, path: Path, group: Any) -> None:
        try:
            self._init(path, group)
        except HistoError:
            raise
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            msg = f"{path.name}: NGFF metadata is malformed ({type(exc).__name__}: {one_line(exc, 200)})"
            raise DataError(msg) from None

    def _init(self, path: Path, group: Any) -> None:
        self.path = path
        self.group = group
        attrs = group.attrs.asdict()
        ome = attrs.get("ome", attrs)
        ms = ome.get("multiscales")
        if not ms:
            msg = f"{path} is a zarr group without NGFF 'multiscales' metadata"
            raise DataError(msg)
        self.multiscales: dict[str, Any] = ms[0]
        # write_empty_chunks is a runtime setting, lost on reopening: every chunk the producer
        # writes must exist on disk, or written_chunks() could not drive a resume
        try:
            self.levels = [
                group[d["path"]].with_config({"write_empty_chunks": True})
                for d in self.multiscales["datasets"]
            ]
        except (KeyError, TypeError) as exc:
            msg = f"{path}: NGFF multiscales lists a dataset that is missing or invalid ({exc})"
            raise DataError(msg) from None
        mine = attrs.get(_ATTR, {})
        axes = [a["name"] if isinstance(a, dict) else a for a in self.multiscales.get("axes", [])]
        self.channels: int | None = (
            int(self.levels[0].shape[0]) if "c" in axes and self.levels[0].ndim == 3 else None
        )
        self.kind: str = mine.get("kind") or ("labels" if "image-label" in ome else "image")
        mpp = mine.get("mpp")
        if mpp is None:
            sc = self.multiscales["datasets"][0]["coordinateTransformations"][0].get("scale")
            units = [a.get("unit") for a in self.multiscales.get("axes", []) if isinstance(a, dict)]
            if sc and "micrometer" in units:
                mpp = sc[-2:]
        self.mpp: tuple[float, float] | None = _plausible_mpp(mpp)

    # -- shape helpers
    @property
    def level0(self) -> Any:
        """Level-0 zarr array; for 2D data write blocks with ``level0[y0:y1, x0:x1] = block``."""
        return self.levels[0]

    @property
    def n_levels(self) -> int:
        """Number of pyramid levels."""
        return len(self.levels)

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 (height, width)."""
        return tuple(self.levels[0].shape[-2:])

    @property
    def chunks(self) -> tuple[int, int]:
        """Level-0 spatial chunk shape (height, width)."""
        return tuple(self.levels[0].chunks[-2:])

    @property
    def attrs(self) -> dict[str, Any]:
        """Our ``napari_histo`` attributes (complete flag, kind, mpp, user attrs)."""
        return dict(self.group.attrs.asdict().get(_ATTR, {}))

    @property
    def is_complete(self) -> bool:
        """True once :meth:`mark_complete` ran."""
        return bool(self.attrs.get("complete", False))

    def as_dask(self, channel_last: bool = True) -> list[da.Array]:
        """Levels as dask arrays, largest first (channel-last ``(Y, X, C)`` for channel data)."""
        out = []
        for z in self.levels:
            a = da.from_zarr(z)
            if self.channels and channel_last:
                a = a.transpose(1, 2, 0)
            out.append(a)
        return out

    def read(self, level: int = 0, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Read ``(y0, x0, y1, x1)`` of a level (whole level if None), channel-last."""
        z = self.levels[level]
        y0, x0, y1, x1 = region if region is not None else (0, 0, *z.shape[-2:])
        a = np.asarray(z[..., y0:y1, x0:x1])
        return np.moveaxis(a, 0, -1) if self.channels else a

    # -- writing
    def write_block(self, y0: int, x0: int, block: npt.ArrayLike) -> None:
        """Write a level-0 block at ``(y0, x0)``; ``(h, w)`` or channel-last ``(h, w, C)``.

        Blocks aligned to :attr:`chunks` are what makes resume and multi-process writes safe.
        """
        b = np.asarray(block)
        h, w = b.shape[:2]
        if self.channels:
            self.levels[0][:, y0 : y0 + h, x0 : x0 + w] = np.moveaxis(b, -1, 0)
        else:
            self.levels[0][y0 : y0 + h, x0 : x0 + w] = b

    def written_chunks(self, level: int = 0) -> npt.NDArray[np.bool_]:
        """Boolean grid (n_chunk_rows, n_chunk_cols): which chunks of a level exist on disk."""
        z = self.levels[level]
        cy, cx = z.chunks[-2:]
        ny, nx = math.ceil(z.shape[-2] / cy), math.ceil(z.shape[-1] / cx)
        done = np.zeros((ny, nx), dtype=bool)
        base = self.path / self.multiscales["datasets"][level]["path"]
        if z.metadata.zarr_format == 3:
            base = base / "c"
        if self.channels:
            base = base / "0"
        if not base.is_dir():
            return done
        for row in os.scandir(base):
            if not row.name.isdigit() or not row.is_dir():
                continue
            iy = int(row.name)
            for col in os.scandir(row.path):
                if col.name.isdigit() and iy < ny and int(col.name) < nx:
                    done[iy, int(col.name)] = True
        return done

    def build_pyramid(
        self, region: tuple[int, int, int, int] | None = None, *, workers: int | None = None
    ) -> None:
        """Compute lower levels from level 0, chunk-wise (bounded memory, threaded).

        Parameters
        ----------
        region : level-0 ``(y0, x0, y1, x1)`` that changed; only the lower-level chunks it
            touches are recomputed (for incremental display). None rebuilds everything.
        workers : threads (default: CPU count).
        """
        H, W = self.shape
        y0, x0, y1, x1 = region if region is not None else (0, 0, H, W)
        for k in range(1, self.n_levels):
            src, dst = self.levels[k - 1], self.levels[k]
            hk, wk = dst.shape[-2:]
            cy, cx = dst.chunks[-2:]
            f = 2**k
            ry0 = max(0, (y0 // f) // cy * cy)
            rx0 = max(0, (x0 // f) // cx * cx)
            ry1 = min(hk, math.ceil(math.ceil(y1 / f) / cy) * cy)
            rx1 = min(wk, math.ceil(math.ceil(x1 / f) / cx) * cx)
            if ry1 <= ry0 or rx1 <= rx0:
                continue
            # blocks of 2x2 destination chunks: few zarr calls, small memory per thread
            by, bx = cy * 2, cx * 2
            boxes = [
                (a, b, min(a + by, ry1), min(b + bx, rx1))
                for a in range(ry0, ry1, by)
                for b in range(rx0, rx1, bx)
            ]

            def _one(box: tuple[int, int, int, int], src: Any = src, dst: Any = dst) -> None:
                a0, b0, a1, b1 = box
                block = np.asarray(src[..., 2 * a0 : 2 * a1, 2 * b0 : 2 * b1])
                dst[..., a0:a1, b0:b1] = downsample2(block, self.kind)

            n = workers or os.cpu_count() or 1
            if n > 1 and len(boxes) > 1:
                with ThreadPoolExecutor(n) as ex:
                    list(ex.map(_one, boxes))
            else:
                for box in boxes:
                    _one(box)

    def mark_complete(self, **extra: Any) -> None:
        """Set the completion marker (and extra JSON attrs) in the group attributes."""
        mine = self.attrs
        mine.update(extra)
        mine["complete"] = True
        mine["completed_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.group.attrs[_ATTR] = mine

    def update_attrs(self, **extra: Any) -> None:
        """Merge JSON-serializable values into ``attrs["napari_histo"]``."""
        mine = self.attrs
        mine.update(extra)
        self.group.attrs[_ATTR] = mine


def create_ome_zarr(
    path: str | Path,
    shape: Sequence[int],
    dtype: npt.DTypeLike,
    *,
    chunks: int | Sequence[int] = 256,
    mpp: float | Sequence[float] | None = None,
    kind: Kind = "labels",
    n_levels: int | None = None,
    name: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    fill_value: float = 0,
    overwrite: bool = False,
    resume: bool = False,
    ngff_version: str = "0.4",
    clevel: int = 5,
) -> OmeZarrStore:
    """Create an empty NGFF pyramid (all levels) at ``path``, marked incomplete.

    Parameters
    ----------
    shape : level-0 ``(H, W)`` or channel-last ``(H, W, C)``.
    dtype : e.g. uint8 labels, float16/uint8 probabilities, uint8 RGB.
    chunks : spatial chunk size (int or (cy, cx)); channels are never split.
    mpp : level-0 um/px, scalar or (y, x); None writes pixel units.
    kind : "labels" (striding pyramid, image-label metadata) or "image" (mean pyramid).
    n_levels : pyramid depth (default: until the largest side fits one chunk).
    name : multiscales name (default: the file name).
    attrs : JSON values stored under ``attrs["napari_histo"]`` (e.g. model, config).
    overwrite : delete an existing store first.
    resume : open an existing compatible store instead of failing (its chunks are kept).
    ngff_version : "0.4" (zarr v2) or "0.5" (zarr v3).
    clevel : blosc-zstd level (1 for scratch data, 5 default).

    Raises
    ------
    OutputExistsError
        ``path`` exists and neither ``overwrite`` nor ``resume`` (or it is incompatible).
    """
    import zarr

    from napari_histo.io._atomic import check_output_path, remove_path

    p = Path(path)
    shp = tuple(int(s) for s in shape)
    if len(shp) not in (2, 3) or min(shp) <= 0:
        msg = f"shape must be (H, W) or (H, W, C) with positive sizes, got {shape}"
        raise ConfigError(msg)
    dt = np.dtype(dtype)
    if kind not in ("labels", "image"):
        msg = f"kind must be 'labels' or 'image', got {kind!r}"
        raise ConfigError(msg)
    if kind == "labels" and not (np.issubdtype(dt, np.integer) or dt.kind == "b"):
        msg = f"labels must have an integer dtype, got {dt}; use kind='image' for heatmaps"
        raise ConfigError(msg)
    if ngff_version not in ("0.4", "0.5"):
        msg = f"ngff_version must be '0.4' or '0.5', got {ngff_version!r}"
        raise ConfigError(msg)
    cyx = _norm_chunks(chunks)
    hw = shp[:2]
    channels = shp[2] if len(shp) == 3 else None
    nl = n_levels or n_levels_for(hw, max(cyx))

    if p.exists() and resume and not overwrite:
        store = open_ome_zarr(p, mode="r+")
        want = (hw, channels, dt, cyx, nl)
        have = (store.shape, store.channels, np.dtype(store.level0.dtype), store.chunks)
        if have != want[:4] or (n_levels is not None and store.n_levels != nl):
            msg = (
                f"cannot resume {p}: it holds shape {have[0]} channels {have[1]} dtype {have[2]}"
                f" chunks {have[3]}, this run writes {hw} {channels} {dt} {cyx}; "
                "use --overwrite or another output"
            )
            raise OutputExistsError(msg)
        return store
    check_output_path(p, overwrite)
    if overwrite:
        remove_path(p)

    zf: Literal[2, 3] = 2 if ngff_version == "0.4" else 3
    group = zarr.open_group(str(p), mode="w", zarr_format=zf)
    nm = name or p.name.split(".")[0]
    for k, (h, w) in enumerate(_level_shapes((hw[0], hw[1]), nl)):
        lshape = (channels, h, w) if channels else (h, w)
        lchunks = ((channels,) if channels else ()) + (min(cyx[0], h), min(cyx[1], w))
        _create_level(group, str(k), lshape, lchunks, dt, kind, fill_value, zf, clevel)
    ms = _multiscales(nl, channels, _norm_mpp(mpp), kind, nm, ngff_version)
    meta: dict[str, Any] = {"multiscales": [ms]}
    if kind == "labels":
        meta["image-label"] = {
            # no "source": a standalone label pyramid has no parent image for readers to visit
            "colors": [{"label-value": i, "rgba": c} for i, c in enumerate(_LABEL_COLORS)],
        }
        if ngff_version == "0.4":
            meta["image-label"]["version"] = "0.4"
    elif channels:
        meta["omero"] = _omero(channels, dt, nm)
    norm = _norm_mpp(mpp)
    ours = {
        "complete": False,
        "kind": kind,
        "mpp": list(norm) if norm is not None else None,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(dict(attrs) if attrs else {}),
    }
    top = {"ome": {"version": "0.5", **meta}} if ngff_version == "0.5" else meta
    group.attrs.update({**top, _ATTR: ours})
    return OmeZarrStore(p, group)


def _create_level(
    group: Any,
    name: str,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype,
    kind: str,
    fill_value: float,
    zarr_format: int,
    clevel: int = 5,
) -> Any:
    shuffle_bits = kind == "labels" or dtype.itemsize == 1
    if zarr_format == 2:
        import numcodecs

        comp: Any = numcodecs.Blosc(
            cname="zstd",
            clevel=clevel,
            shuffle=numcodecs.Blosc.BITSHUFFLE if shuffle_bits else numcodecs.Blosc.SHUFFLE,
        )
        extra: dict[str, Any] = {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    else:
        from zarr.codecs import BloscCodec

        comp = BloscCodec(
            cname="zstd", clevel=clevel, shuffle="bitshuffle" if shuffle_bits else "shuffle"
        )
        dims = ("c", "y", "x") if len(shape) == 3 else ("y", "x")
        extra = {"dimension_names": dims}
    return group.create_array(
        name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        compressors=comp,
        fill_value=fill_value,
        config={"write_empty_chunks": True},
        **extra,
    )


def open_ome_zarr(
    path: str | Path, *, mode: Literal["r", "r+"] = "r", require_complete: bool = False
) -> OmeZarrStore:
    """Open an NGFF multiscale store (``mode="r+"`` to resume writing).

    Raises
    ------
    DataError
        Not an NGFF store, or (with ``require_complete``) a store whose writer never finished.
    """
    import zarr

    p = Path(path)
    if not p.exists():
        msg = f"OME-Zarr store not found: {p}"
        raise DataError(msg)
    try:
        group = zarr.open_group(str(p), mode=mode)
    except Exception as exc:  # zarr raises several types for a non-group path
        msg = f"{p} is not a zarr group ({type(exc).__name__}: {exc})"
        raise DataError(msg) from None
    store = OmeZarrStore(p, group)
    for i, z in enumerate(store.levels):  # a header claiming terapixels is refused unread
        if len(z.shape) < 2:
            msg = f"{p.name} level {i}: array of shape {tuple(z.shape)} is not an image"
            raise DataError(msg)
        check_image_size(z.shape[-2], z.shape[-1], f"{p.name} level {i}", error=DataError)
    if require_complete and not store.is_complete:
        msg = (
            f"{p} is incomplete: its writer stopped before finishing (crash or cancel); "
            "rerun with --resume or --overwrite"
        )
        raise DataError(msg)
    return store


def is_complete(path: str | Path) -> bool:
    """True when ``path`` is an OME-Zarr store whose writer called ``mark_complete``.

    Stores written by other tools (no ``napari_histo`` attributes) count as complete.
    """
    try:
        store = open_ome_zarr(path)
    except DataError:
        return False
    if _ATTR not in store.group.attrs.asdict():
        return True
    return store.is_complete


# ----------------------------------------------------------------------------- one-shot write


def _as_levels(data: Any) -> list[Any]:
    if isinstance(data, (list, tuple)):
        if not data:
            msg = "an empty list of levels cannot be written"
            raise ConfigError(msg)
        return list(data)
    return [data]


def write_ome_zarr(
    path: str | Path,
    data: npt.ArrayLike | da.Array | Sequence[npt.ArrayLike | da.Array],
    *,
    mpp: float | Sequence[float] | None = None,
    kind: Kind = "labels",
    levels: int | None = None,
    chunks: int | Sequence[int] = 256,
    name: str | None = None,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
    ngff_version: str = "0.4",
) -> Path:
    """Write an array (or a ready multiscale list, largest first) as a complete OME-Zarr.

    Parameters
    ----------
    data : 2D labels/heatmap or channel-last ``(Y, X, C)`` (RGB uint8), numpy or dask; dask
        input is written chunk by chunk and never loaded whole.
    levels : pyramid depth when ``data`` is a single array (default: until one chunk).
    Other parameters as :func:`create_ome_zarr`.

    Returns
    -------
    Path
        ``path``, which appears only once complete (temporary sibling + rename).
    """
    from napari_histo.io._atomic import atomic_path

    lv = _as_levels(data)
    first = lv[0]
    dt = np.dtype(first.dtype) if hasattr(first, "dtype") else np.asarray(first).dtype
    if dt.kind == "b":
        dt = np.dtype(np.uint8)
    shape = tuple(first.shape)
    if len(shape) == 3 and shape[-1] > 16 and shape[0] <= 16:
        msg = f"data of shape {shape} looks channel-first; pass channel-last (Y, X, C)"
        raise ConfigError(msg)
    nl = len(lv) if len(lv) > 1 else levels
    with atomic_path(path, overwrite=overwrite) as tmp:
        store = create_ome_zarr(
            tmp,
            shape,
            dt,
            chunks=chunks,
            mpp=mpp,
            kind=kind,
            n_levels=nl,
            name=name or Path(path).name.split(".")[0],
            attrs=attrs,
            ngff_version=ngff_version,
        )
        for k, arr in enumerate(lv):
            if k >= store.n_levels:
                break
            want = store.levels[k].shape[-2:]
            if tuple(arr.shape[:2]) != tuple(want):
                msg = f"level {k} has shape {arr.shape[:2]}, expected {want} (each level halves)"
                raise ConfigError(msg)
            _store_level(store, k, arr, dt)
        if len(lv) == 1:
            store.build_pyramid()
        store.mark_complete()
    return Path(path)


def _store_level(store: OmeZarrStore, k: int, arr: Any, dt: np.dtype) -> None:
    z = store.levels[k]
    if isinstance(arr, da.Array):
        a = arr.astype(dt) if arr.dtype != dt else arr
        # batches of whole chunks (~16 MB): dask computes a batch in parallel, zarr writes it
        # in one call; about 2x faster than da.store's one zarr call per chunk and still
        # bounded in memory whatever the array size
        for y0, x0, y1, x1 in _batches(
            z.shape[-2:], z.chunks[-2:], dt.itemsize * (store.channels or 1)
        ):
            store.write_block(y0, x0, np.asarray(a[y0:y1, x0:x1].compute()))
    else:
        a = np.asarray(arr).astype(dt, copy=False)
        z[...] = np.moveaxis(a, -1, 0) if store.channels else a


def _batches(
    shape: Sequence[int], chunks: Sequence[int], px_bytes: int, target: int = 16 * 2**20
) -> list[tuple[int, int, int, int]]:
    """Chunk-aligned regions of about ``target`` bytes covering ``shape`` (row-major)."""
    h, w = shape
    cy, cx = chunks
    per_chunk = cy * cx * px_bytes
    n = max(1, target // per_chunk)
    ncols = math.ceil(w / cx)
    bx = cx * min(ncols, n)
    by = cy * max(1, n // ncols)
    return [
        (y, x, min(y + by, h), min(x + bx, w)) for y in range(0, h, by) for x in range(0, w, bx)
    ]
