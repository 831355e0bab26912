"""In-memory training samples saved to a folder and read back exactly (GUI runs -> headless).

Layout of a saved folder (the ``data/`` folder of a run card)::

    samples.json          format marker, and per sample: file stem, name, group, shape, weights
    images/0000_NAME.tif  RGB uint8 (zlib, lossless)
    labels/0000_NAME.tif  uint8 class indices, 255 = unlabelled (kept, unlike a mask folder)
    weights/0000_NAME.tif float32 per-pixel weights (only samples that have them)

Why TIFF pairs and a JSON manifest rather than a plain ``images/`` + ``labels/`` folder: a
mask folder maps 0/255 masks to 0/1 and refuses 255 = unlabelled, drops per-pixel weights,
and takes groups from a CSV as ``column=value``; the corrections' samples need all three kept
as they were so the group split and the loss are the same. The ``images/`` + ``labels/``
layout is kept so other tools still see image/mask pairs. Samples are numbered so they load
in the order they were given (the group split and the crops depend on that order).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.errors import DataError
from napari_histo.engine.datasets.segmentation import ArraySample

__all__ = ["MANIFEST", "is_array_folder", "load_array_samples", "save_array_samples"]

#: the manifest that marks a folder of saved samples
MANIFEST = "samples.json"
FORMAT = "napari-histo-arrays"
VERSION = 1


def _stem(i: int, name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (name or "sample"))[:60]
    return f"{i:04d}_{safe.strip('.') or 'sample'}"


def save_array_samples(folder: str | Path, samples: list[ArraySample],
                       extra: list[dict[str, Any]] | None = None) -> Path:
    """Write ``samples`` to ``folder`` (created; must not already hold samples).

    ``extra``: optional per-sample metadata (e.g. the layer and its placement) kept in the
    manifest. Returns the manifest's path.
    """
    import tifffile

    root = Path(folder)
    if (root / MANIFEST).exists():
        raise DataError(f"{root} already holds saved samples")
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for i, s in enumerate(samples):
        stem = _stem(i, s.name)
        tifffile.imwrite(root / "images" / f"{stem}.tif", np.ascontiguousarray(s.image),
                         photometric="rgb", compression="zlib")
        tifffile.imwrite(root / "labels" / f"{stem}.tif", np.ascontiguousarray(s.labels),
                         photometric="minisblack", compression="zlib")
        if s.weights is not None:
            (root / "weights").mkdir(exist_ok=True)
            tifffile.imwrite(root / "weights" / f"{stem}.tif",
                             np.ascontiguousarray(s.weights, dtype=np.float32),
                             photometric="minisblack", compression="zlib")
        entry: dict[str, Any] = {"file": stem, "name": s.name, "group": s.group,
                                 "shape": list(s.labels.shape), "weights": s.weights is not None}
        if extra and i < len(extra) and extra[i]:
            entry["source"] = extra[i]
        entries.append(entry)
    manifest = root / MANIFEST
    manifest.write_text(json.dumps({"format": FORMAT, "version": VERSION, "samples": entries},
                                   indent=1), encoding="utf-8")
    return manifest


def is_array_folder(path: str | Path) -> bool:
    """True for a folder written by :func:`save_array_samples`."""
    return (Path(path) / MANIFEST).is_file()


def load_array_samples(folder: str | Path) -> list[ArraySample]:
    """The samples of a folder written by :func:`save_array_samples`, in their saved order."""
    import tifffile

    root = Path(folder)
    try:
        meta = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {root / MANIFEST}: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{root / MANIFEST} is not a napari-histo samples manifest")
    if int(meta.get("version", 0)) > VERSION:
        raise DataError(f"{root / MANIFEST} is version {meta.get('version')}; this napari-histo "
                        f"reads up to {VERSION}")
    out = []
    for e in meta.get("samples", []):
        stem = str(e["file"])
        if "/" in stem or "\\" in stem or stem.startswith("."):
            raise DataError(f"{root / MANIFEST}: bad file name {stem!r}")
        try:
            image = tifffile.imread(root / "images" / f"{stem}.tif")
            labels = tifffile.imread(root / "labels" / f"{stem}.tif")
            weights = (tifffile.imread(root / "weights" / f"{stem}.tif")
                       if e.get("weights") else None)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read saved sample {stem} in {root}: {err}") from err
        out.append(ArraySample(image, labels, weights, str(e.get("group", "array")),
                               str(e.get("name", stem))))
    if not out:
        raise DataError(f"{root / MANIFEST} lists no samples")
    return out
