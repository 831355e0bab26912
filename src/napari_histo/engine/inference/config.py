"""InferenceConfig: every knob of a prediction run in one frozen, validated dataclass.

The GUI, the CLI and the tests build the same object; ``to_dict``/``from_dict`` round-trip it
(stored in the output's metadata so a resume can check it is continuing the same run).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from napari_histo.core.errors import ConfigError
from napari_histo.core.limits import (
    BATCH_RANGE,
    BLOCK_TILES_RANGE,
    CONTEXT_RANGE,
    MAX_BATCH_PIXELS,
    MPP_RANGE,
    READERS_RANGE,
    STRIDE_RANGE,
    TILE_RANGE,
    integer,
    number,
)
from napari_histo.io.ome_zarr import VERSIONS as NGFF_VERSIONS

__all__ = ["FORMATS", "NGFF_VERSIONS", "InferenceConfig"]

FORMATS = ("zarr", "tiff", "geojson", "png")


@dataclass(frozen=True)
class InferenceConfig:
    """How to run a model over a slide.

    Every field is validated on construction (types, finite numbers, and the bounds of
    :mod:`napari_histo.core.limits`: mpp 0.01..1000 um/px, tile 8..4096, batch 1..1024,
    readers 1..64, stride 1..4096, context 8..4096, batch_size x tile**2 <= 128 Mpx); a bad
    value is a one-line :class:`~napari_histo.core.errors.ConfigError`.

    Parameters
    ----------
    mpp : float, optional
        Working resolution in um/px; default the checkpoint's. Mutually exclusive with level.
    level : int, optional
        Read this pyramid level as is (no resampling); for slides without mpp.
    slide_mpp : float, optional
        Level-0 um/px to assume for slides whose metadata has none.
    tile, overlap : int, optional
        Model input size and overlap between neighbouring tiles (output px); defaults from
        the checkpoint (patch size, tile // 4).
    block_tiles : int
        Tiles per block side; a block is one zarr chunk and the unit of resume/distribution.
    stride, context : int, optional
        Patch classifiers: one output pixel per ``stride`` px cell, model sees ``context`` px
        centred on the cell (CAMELYON rule: 128 and 299). Defaults from the checkpoint.
    threshold : float
        Positive-class probability for the binary label map.
    tissue_only : bool
        Skip tiles without tissue (reported, written as 0).
    prob_dtype : "float16" | "uint8"
        Storage of probabilities (uint8 = round(255 p)).
    formats : tuple
        Outputs among zarr (always written for slides), tiff, geojson, png.
    resume, overwrite : bool
        What to do when the output exists (neither: refuse).
    scheduler : str, optional
        dask.distributed address or ``local:N``.
    readers : int
        Threads reading and decoding tiles ahead of the model.
    tta : bool
        Test-time augmentation: average probabilities over flips/rot90 (8x the compute).
    ngff_version : "0.4" | "0.5"
        OME-Zarr of the prediction store: NGFF 0.4 on zarr v2 (default, read by most
        viewers) or 0.5 on zarr v3. A resumed store keeps the version it was created with.
    """

    mpp: float | None = None
    level: int | None = None
    slide_mpp: float | None = None
    tile: int | None = None
    overlap: int | None = None
    block_tiles: int = 2
    batch_size: int = 8
    device: str = "auto"
    stride: int | None = None
    context: int | None = None
    threshold: float = 0.5
    tissue_only: bool = True
    prob_dtype: str = "float16"
    formats: tuple[str, ...] = ("zarr",)
    resume: bool = False
    overwrite: bool = False
    scheduler: str | None = None
    readers: int = 4
    amp: bool = False
    tta: bool = False
    ngff_version: str = "0.4"

    def __post_init__(self) -> None:
        """Check every field: types, finite numbers and the ranges of :mod:`core.limits`."""

        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in ("mpp", "slide_mpp"):
            fix(name, number(name, getattr(self, name), *MPP_RANGE, allow_none=True))
        fix("level", integer("level", self.level, 0, 64, allow_none=True))
        if self.mpp is not None and self.level is not None:
            raise ConfigError("give either mpp or level, not both")
        fix("tile", integer("tile", self.tile, *TILE_RANGE, allow_none=True))
        fix("overlap", integer("overlap", self.overlap, 0, TILE_RANGE[1] - 2, allow_none=True))
        if self.overlap is not None:
            if self.overlap % 2:
                raise ConfigError(f"overlap must be an even number >= 0, got {self.overlap}")
            if self.tile is not None and self.overlap >= self.tile:
                raise ConfigError(f"overlap {self.overlap} must be smaller than tile {self.tile}")
        fix("batch_size", integer("batch_size", self.batch_size, *BATCH_RANGE))
        fix("block_tiles", integer("block_tiles", self.block_tiles, *BLOCK_TILES_RANGE))
        fix("readers", integer("readers", self.readers, *READERS_RANGE))
        fix("stride", integer("stride", self.stride, *STRIDE_RANGE, allow_none=True))
        fix("context", integer("context", self.context, *CONTEXT_RANGE, allow_none=True))
        side = self.tile or self.context
        if side is not None and self.batch_size * side * side > MAX_BATCH_PIXELS:
            raise ConfigError(
                f"batch_size {self.batch_size} x {side} x {side} px is more input than one "
                f"forward pass may hold ({MAX_BATCH_PIXELS / 1e6:.0f} Mpx); lower batch_size")
        fix("threshold", number("threshold", self.threshold, 0.0, 1.0))
        for name in ("tissue_only", "resume", "overwrite", "amp", "tta"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.device, str) or len(self.device) > 64:
            raise ConfigError(f"device must be a name such as auto, cpu or cuda, got {self.device!r}")
        if self.scheduler is not None and not isinstance(self.scheduler, str):
            raise ConfigError(f"scheduler must be an address or local:N, got {self.scheduler!r}")
        if self.prob_dtype not in ("float16", "uint8"):
            raise ConfigError("prob_dtype must be 'float16' or 'uint8'")
        if isinstance(self.formats, str) or not isinstance(self.formats, (tuple, list)):
            raise ConfigError(f"formats must be a list of {', '.join(FORMATS)}")
        fix("formats", tuple(self.formats))
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ConfigError(f"unknown output format(s) {bad}; choose from {', '.join(FORMATS)}")
        if self.ngff_version not in NGFF_VERSIONS:
            raise ConfigError(f"ngff_version must be one of {', '.join(NGFF_VERSIONS)}, "
                              f"got {self.ngff_version!r}")
        if self.resume and self.overwrite:
            raise ConfigError("give either resume or overwrite, not both")

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (lists for tuples), JSON/YAML safe."""
        d = asdict(self)
        d["formats"] = list(self.formats)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InferenceConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError(f"inference options must be a mapping, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown inference option(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        if isinstance(d.get("formats"), list):
            d["formats"] = tuple(d["formats"])
        return cls(**d)

    def replace(self, **changes: Any) -> InferenceConfig:
        """Copy with some fields changed (validated again)."""
        d = self.to_dict()
        d.update(changes)
        return InferenceConfig.from_dict(d)
