"""InferenceConfig: every knob of a prediction run in one frozen, validated dataclass.

The GUI, the CLI and the tests build the same object; ``to_dict``/``from_dict`` round-trip it
(stored in the output's metadata so a resume can check it is continuing the same run).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from napari_histo.core.errors import ConfigError

__all__ = ["FORMATS", "InferenceConfig"]

FORMATS = ("zarr", "tiff", "geojson", "png")


@dataclass(frozen=True)
class InferenceConfig:
    """How to run a model over a slide.

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
        centred on the cell (seed 004: 128 and 299). Defaults from the checkpoint.
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

    def __post_init__(self) -> None:
        if self.mpp is not None and self.level is not None:
            raise ConfigError("give either mpp or level, not both")
        if self.mpp is not None and not self.mpp > 0:
            raise ConfigError(f"mpp must be > 0 um/px, got {self.mpp}")
        if self.slide_mpp is not None and not self.slide_mpp > 0:
            raise ConfigError(f"slide_mpp must be > 0 um/px, got {self.slide_mpp}")
        if self.level is not None and self.level < 0:
            raise ConfigError(f"level must be >= 0, got {self.level}")
        if self.tile is not None and self.tile < 8:
            raise ConfigError(f"tile must be >= 8 px, got {self.tile}")
        if self.overlap is not None:
            if self.overlap < 0 or self.overlap % 2:
                raise ConfigError(f"overlap must be an even number >= 0, got {self.overlap}")
            if self.tile is not None and self.overlap >= self.tile:
                raise ConfigError(f"overlap {self.overlap} must be smaller than tile {self.tile}")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if self.block_tiles < 1:
            raise ConfigError("block_tiles must be >= 1")
        if self.readers < 1:
            raise ConfigError("readers must be >= 1")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.prob_dtype not in ("float16", "uint8"):
            raise ConfigError("prob_dtype must be 'float16' or 'uint8'")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ConfigError(f"unknown output format(s) {bad}; choose from {', '.join(FORMATS)}")
        if self.resume and self.overwrite:
            raise ConfigError("give either resume or overwrite, not both")
        for name in ("stride", "context"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be >= 1 px, got {v}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (lists for tuples), JSON/YAML safe."""
        d = asdict(self)
        d["formats"] = list(self.formats)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InferenceConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown inference option(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        if "formats" in d:
            d["formats"] = tuple(d["formats"])
        return cls(**d)

    def replace(self, **changes: Any) -> InferenceConfig:
        """Copy with some fields changed (validated again)."""
        d = self.to_dict()
        d.update(changes)
        return InferenceConfig.from_dict(d)
