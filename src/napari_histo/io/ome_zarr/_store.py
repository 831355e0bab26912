"""The OME-Zarr store: create (empty, then streamed into), open, completeness.

:class:`OmeZarrStore` wraps an NGFF multiscale group of any origin; napari-histo's own stores
also carry ``attrs["napari_histo"]`` (``complete`` flag, kind, mpp, user attrs).

Completeness, one rule for every store (:func:`is_complete`): a path is complete when it
opens as an NGFF multiscale image (every listed level present) and, if it carries
``napari_histo`` attributes, their ``complete`` flag is true. napari-histo sets that flag
last (:meth:`OmeZarrStore.mark_complete`, the inference writer's ``finish``), so a crashed or
cancelled run never reads as finished; stores without our attributes were written by other
tools, which publish whole stores, and count as complete.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError, DataError, HistoError, OutputExistsError
from napari_histo.core.limits import MPP_RANGE, check_image_size, one_line
from napari_histo.io.ome_zarr._ngff import (
    ATTR,
    MAX_LEVELS,
    axis_letters,
    check_version,
    dataset_scale,
    image_label,
    multiscales,
    ngff_multiscales,
    ngff_root,
    to_um,
    wrap,
)
from napari_histo.io.ome_zarr._pyramid import fill_levels, level_shapes, n_levels_for

__all__ = ["Kind", "OmeZarrStore", "array_options", "create_ome_zarr", "is_complete",
           "open_ome_zarr"]

Kind = Literal["labels", "image"]


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


def physical_mpp(axes: str, units: list[str | None], scale0: list[float] | None, *,
                 assume_um: bool = False) -> tuple[float, float] | None:
    """Level-0 (y, x) um/px from NGFF axes units and scale; None when not physical.

    ``assume_um`` takes a scale without a unit as micrometres unless it is 1 (the spec leaves
    the unit optional; slides are read that way), else a unit is required (napari-histo
    writes pixel-space stores without one). A result outside ``MPP_RANGE`` is not a
    microscope's resolution: unknown rather than absurd.
    """
    if scale0 is None:
        return None
    yi, xi = axes.index("Y"), axes.index("X")
    uy, ux = units[yi], units[xi]
    if not (uy or ux) and not assume_um:
        return None
    fy = to_um(uy) if uy else 1.0
    fx = to_um(ux) if ux else 1.0
    if not (fy and fx and (uy or ux or scale0[yi] != 1.0)):
        return None
    mpp = (scale0[yi] * fy, scale0[xi] * fx)
    return mpp if all(MPP_RANGE[0] <= v <= MPP_RANGE[1] for v in mpp) else None


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
    multiscales, version : the first NGFF ``multiscales`` entry and its NGFF version.
    axes, units, scales : axis letters (``"CYX"``...), their units, each level's scale.
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
        found, version = ngff_multiscales(attrs)
        if not found:
            msg = f"{path} is a zarr group without NGFF 'multiscales' metadata"
            raise DataError(msg)
        ms = found[0]
        if not isinstance(ms, dict) or not isinstance(ms.get("datasets"), list) \
                or not ms["datasets"]:
            raise DataError(f"{path.name}: NGFF 'multiscales' has no 'datasets' list")
        if len(ms["datasets"]) > MAX_LEVELS:
            raise DataError(f"{path.name}: NGFF metadata lists {len(ms['datasets'])} "
                            f"resolution levels (at most {MAX_LEVELS} are read)")
        self.multiscales: dict[str, Any] = ms
        self.version: str | None = version
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
        mine = attrs.get(ATTR)
        mine = mine if isinstance(mine, dict) else {}
        #: upper-case axis letters ("YX", "CYX", "TCZYX"...) and their units
        self.axes, self.units = axis_letters(ms, self.levels[0].ndim)
        #: each level's scale (one positive number per axis) or None where unknown
        self.scales = [dataset_scale(d, len(self.axes)) for d in ms["datasets"]]
        self.channels: int | None = (
            int(self.levels[0].shape[0]) if "C" in self.axes and self.levels[0].ndim == 3
            else None
        )
        label = "image-label" in ngff_root(attrs)
        self.kind: str = mine.get("kind") or ("labels" if label else "image")
        # ours say what the run knew (None: pixel units); others by their axes and scale
        if "mpp" in mine:
            self.mpp: tuple[float, float] | None = _plausible_mpp(mine["mpp"])
        elif "Y" in self.axes and "X" in self.axes and len(self.units) == len(self.axes):
            self.mpp = physical_mpp(self.axes, self.units, self.scales[0])
        else:
            self.mpp = None

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
        mine = self.group.attrs.asdict().get(ATTR)
        return dict(mine) if isinstance(mine, dict) else {}

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
        fill_levels(self.levels, self.kind, region, workers=workers)

    def mark_complete(self, **extra: Any) -> None:
        """Set the completion marker (and extra JSON attrs) in the group attributes."""
        mine = self.attrs
        mine.update(extra)
        mine["complete"] = True
        mine["completed_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.group.attrs[ATTR] = mine

    def update_attrs(self, **extra: Any) -> None:
        """Merge JSON-serializable values into ``attrs["napari_histo"]``."""
        mine = self.attrs
        mine.update(extra)
        self.group.attrs[ATTR] = mine


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
    check_version(ngff_version)
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
    for k, (h, w) in enumerate(level_shapes((hw[0], hw[1]), nl)):
        lshape = (channels, h, w) if channels else (h, w)
        lchunks = ((channels,) if channels else ()) + (min(cyx[0], h), min(cyx[1], w))
        _create_level(group, str(k), lshape, lchunks, dt, kind, fill_value, zf, clevel)
    norm = _norm_mpp(mpp)
    ms = multiscales(nl, channels=bool(channels), scale0=norm or (1.0, 1.0),
                     unit="micrometer" if norm else None, name=nm, version=ngff_version,
                     kind=kind)
    meta: dict[str, Any] = {"multiscales": [ms]}
    if kind == "labels":
        # no "source": a standalone label pyramid has no parent image for readers to visit
        meta["image-label"] = image_label(ngff_version)
    elif channels:
        meta["omero"] = _omero(channels, dt, nm)
    ours = {
        "complete": False,
        "kind": kind,
        "mpp": list(norm) if norm is not None else None,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(dict(attrs) if attrs else {}),
    }
    group.attrs.update({**wrap(meta, ngff_version), ATTR: ours})
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
        extra = array_options(3, len(shape))
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
    """Whether ``path`` is a finished OME-Zarr store (the rule in the module docstring).

    An NGFF multiscale image whose levels are all present, and whose ``napari_histo``
    attributes, when it has them, say ``complete``; never raises.
    """
    try:
        store = open_ome_zarr(path)
    except HistoError:
        return False
    if ATTR not in store.group.attrs.asdict():
        return True  # another tool's store: written whole
    return store.is_complete


def array_options(zarr_format: int, ndim: int) -> dict[str, Any]:
    """Extra ``create_array`` options of a level: zarr v3 names its dimensions (NGFF 0.5)."""
    if zarr_format == 3:
        return {"dimension_names": ("c", "y", "x") if ndim == 3 else ("y", "x")}
    return {}
