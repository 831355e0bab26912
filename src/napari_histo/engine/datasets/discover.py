"""Find labelled items in data folders: image/mask pairs, class folders, CSV indexes, PCam.

Only paths and labels are collected here (cheap); pixels are read later. Groups for splits
come from an index CSV next to the data (GlaS ``Grade.csv``: ``patient ID``; CAMELYON
``labels.csv``: ``source_slide``) or from a column the user names.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from napari_histo.core.errors import DataError
from napari_histo.engine.datasets.images import IMAGE_SUFFIXES

_IMAGE_DIRS = ("images", "imgs", "img", "inputs", "input")
_MASK_DIRS = ("labels", "masks", "mask", "outputs", "output", "annotations")
AUTO_GROUP_COLUMNS = ("patient ID", "patient", "patient_id", "source_slide", "slide", "wsi",
                      "group")


@dataclass(frozen=True)
class SegRecord:
    """One image/mask pair on disk."""

    image: str
    mask: str
    name: str
    group: str


@dataclass(frozen=True)
class ClsRecord:
    """One labelled patch on disk (``label`` is the class name)."""

    path: str
    label: str
    group: str


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read CSV {path}: {err}") from err
    return [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in rows]


def _group_table(root: Path, group_by: str | None) -> dict[str, str]:
    """Map image stem -> group from a CSV in ``root`` holding a name/path column."""
    if group_by in ("name", "file", "none"):
        return {}
    for csv_path in sorted(root.glob("*.csv")):
        rows = _read_csv(csv_path)
        if not rows:
            continue
        cols = list(rows[0])
        key = next((c for c in ("name", "path", "image", "filename") if c in cols), None)
        if key is None:
            continue
        col = None
        if group_by and group_by != "auto":
            col = group_by if group_by in cols else None
        else:
            col = next((c for c in AUTO_GROUP_COLUMNS if c in cols), None)
        if col is None:
            continue
        return {Path(r[key]).stem: f"{col}={r[col]}" for r in rows if r.get(key)}
    if group_by and group_by not in ("auto", "name", "file", "none"):
        raise DataError(f"group column {group_by!r} not found in any CSV in {root}")
    return {}


def find_segmentation_pairs(root: str | Path, group_by: str | None = "auto") -> list[SegRecord]:
    """Pair ``images*/NAME.*`` with ``labels*/NAME.*`` (GlaS, seed ``inputs*/outputs*``).

    Raises
    ------
    DataError
        Missing folder, no image/mask folders, or no pairs.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    img_dirs = [d for d in subdirs if d.name.lower().rstrip("0123456789_-") in _IMAGE_DIRS]
    records: list[SegRecord] = []
    groups = _group_table(root, group_by)
    for img_dir in img_dirs:
        suffix = img_dir.name.lower()
        for base in _IMAGE_DIRS:
            if suffix.startswith(base):
                suffix = suffix[len(base):]
                break
        mask_dir = next((d for d in subdirs if d.name.lower() in {m + suffix for m in _MASK_DIRS}), None)
        if mask_dir is None:
            continue
        masks = {p.relative_to(mask_dir).with_suffix("").as_posix(): p for p in _images_in(mask_dir)}
        for img in _images_in(img_dir):
            rel = img.relative_to(img_dir).with_suffix("").as_posix()
            m = masks.get(rel) or masks.get(rel + "_anno") or masks.get(rel + "_mask")
            if m is None:
                continue
            name = img.stem
            records.append(SegRecord(str(img), str(m), name, groups.get(name, name)))
    if not records:
        raise DataError(
            f"no image/mask pairs in {root}: expected images/NAME.png + labels/NAME.png "
            "(or inputs*/ + outputs*/ with matching names)")
    return records


def find_classification_items(source: str | Path, group_by: str | None = "auto") -> list[ClsRecord]:
    """Labelled patches from class folders (``normal/``, ``tumor/``) or a CSV ``path,label[,group]``.

    A folder holding an index CSV with ``path`` and ``label`` columns uses it (CAMELYON
    ``labels.csv``), which also gives groups.
    """
    src = Path(source)
    if src.is_file() and src.suffix.lower() == ".csv":
        return _items_from_csv(src, src.parent, group_by)
    if not src.is_dir():
        raise DataError(f"data not found: {src}")
    for csv_path in sorted(src.glob("*.csv")):
        rows = _read_csv(csv_path)
        if rows and "path" in rows[0] and "label" in rows[0]:
            return _items_from_csv(csv_path, src, group_by)
    items: list[ClsRecord] = []
    for cls_dir in sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for p in _images_in(cls_dir):
            items.append(ClsRecord(str(p), cls_dir.name, _slide_group(p.stem)))
    if not items:
        raise DataError(f"no labelled patches in {src}: expected class folders (e.g. normal/, "
                        "tumor/) holding images, or a CSV with path,label[,group]")
    return items


def _slide_group(stem: str) -> str:
    """Group of a CAMELYON-style file name ``<slide>_<x>_<y>`` = its slide; else the stem."""
    parts = stem.split("_")
    while len(parts) > 1 and parts[-1].isdigit():
        parts.pop()
    return "_".join(parts) if len(parts) < len(stem.split("_")) else stem


def _items_from_csv(path: Path, base: Path, group_by: str | None) -> list[ClsRecord]:
    rows = _read_csv(path)
    if not rows or "path" not in rows[0] or "label" not in rows[0]:
        raise DataError(f"{path} needs the columns path,label[,group]")
    cols = list(rows[0])
    if group_by and group_by not in ("auto", "name", "file", "none"):
        if group_by not in cols:
            raise DataError(f"group column {group_by!r} not in {path.name} (columns: {cols})")
        gcol: str | None = group_by
    elif group_by in ("name", "file", "none"):
        gcol = None
    else:
        gcol = next((c for c in AUTO_GROUP_COLUMNS if c in cols), None)
    items = []
    for r in rows:
        p = Path(r["path"])
        p = p if p.is_absolute() else base / p
        group = r[gcol] if gcol else _slide_group(p.stem)
        items.append(ClsRecord(str(p), r["label"], group))
    if not items:
        raise DataError(f"{path} lists no patches")
    return items


PCAM_SPLITS = ("train", "valid", "test")
#: evaluation split names -> PCam file split names
_PCAM_SPLIT_ALIASES = {"train": "train", "val": "valid", "valid": "valid", "test": "test"}


def _pcam_triple(x: Path) -> tuple[Path, Path, Path | None]:
    stem = x.name[: -len("_x.h5")]
    y = x.with_name(stem + "_y.h5")
    if not y.is_file():
        raise DataError(f"PCam labels {y.name} missing next to {x.name}")
    meta = x.with_name(stem + "_meta.csv")
    return x, y, meta if meta.is_file() else None


def find_pcam_splits(source: str | Path) -> dict[str, tuple[Path, Path, Path | None]] | None:
    """PCam files of a file or folder by split, or None when there are no ``*_x.h5`` files.

    A standard PCam folder holds ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``
    (+ optional ``_meta.csv``): the result maps ``train``/``valid``/``test`` to
    (x.h5, y.h5, meta.csv | None) for the splits present. A single ``*_x.h5`` without a split
    name (or a file given directly) is returned as ``{"": ...}``: one unsplit set.

    Raises
    ------
    DataError
        Labels missing, still-compressed ``.h5.gz`` downloads, or several unsplit files.
    """
    src = Path(source)
    if src.is_file() and src.name.endswith("_x.h5"):
        xs = [src]
    elif src.is_dir():
        xs = sorted(src.glob("*_x.h5"))
        if not xs and any(src.glob("*_x.h5.gz")):
            raise DataError(f"{src} holds compressed PCam files (*.h5.gz): decompress them "
                            "first (gunzip *.gz)")
    else:
        return None
    if not xs:
        return None
    out: dict[str, tuple[Path, Path, Path | None]] = {}
    unsplit: list[Path] = []
    for x in xs:
        stem = x.name[: -len("_x.h5")]
        split = next((sp for sp in PCAM_SPLITS if stem.endswith(f"_{sp}") or stem == sp), None)
        if split is None or (src.is_file() and len(xs) == 1):
            unsplit.append(x)
        else:
            out[split] = _pcam_triple(x)
    if out:
        return out
    if len(unsplit) > 1:
        raise DataError(f"{src} holds several PCam files ({', '.join(x.name for x in unsplit)}) "
                        "without split names (*_train_x.h5, *_valid_x.h5, *_test_x.h5): give "
                        "one file")
    return {"": _pcam_triple(unsplit[0])}


def find_pcam(source: str | Path, split: str | None = None) -> tuple[Path, Path, Path | None] | None:
    """(x.h5, y.h5, meta.csv | None) of one PCam split of a file or folder, else None.

    ``split`` = ``train`` (default), ``valid``/``val`` or ``test``. The test split is only
    returned when asked for: training never sees it. An unsplit file serves any split.

    Raises
    ------
    DataError
        The folder is PCam but lacks the requested split.
    """
    found = find_pcam_splits(source)
    if found is None:
        return None
    if "" in found:
        return found[""]
    want = _PCAM_SPLIT_ALIASES.get(split or "train")
    if want is None:
        raise DataError(f"unknown PCam split {split!r}: choose train, val or test")
    if want not in found:
        raise DataError(f"no PCam {want} split in {source}: expected "
                        f"camelyonpatch_level_2_split_{want}_x.h5 (found {sorted(found)})")
    return found[want]
