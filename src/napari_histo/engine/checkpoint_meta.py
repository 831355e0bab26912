"""A checkpoint's task read from its metadata alone: no torch import, no tensor loaded.

``torch.save`` writes a zip whose ``data.pkl`` holds the checkpoint dict; tensors in it are
references to other members. :func:`checkpoint_task` unpickles only that member with an
unpickler that builds nothing but plain containers (tensors and storages become inert
placeholders, any other global is refused), so the GUI can check which widget a checkpoint
belongs to in a few milliseconds. The full, validated read stays
:func:`napari_histo.engine.checkpoints.read_checkpoint`.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

__all__ = ["checkpoint_task"]

#: a larger ``data.pkl`` is not read here (the run reports what is wrong with the file)
_MAX_META_BYTES = 64 * 1024 * 1024
TASKS = ("segment", "classify")


class _Placeholder:
    """Stands for a tensor, storage or dtype: accepts anything, holds nothing."""

    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    def __setstate__(self, _state: Any) -> None:
        pass


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _Placeholder
        raise pickle.UnpicklingError(f"{module}.{name} is not read as metadata")

    def persistent_load(self, pid: Any) -> Any:
        return None


def checkpoint_task(path: str | os.PathLike[str]) -> str | None:
    """``"segment"`` or ``"classify"`` as stored in the checkpoint; None when unknown.

    None for anything that is not a readable napari-histo checkpoint zip: the run then
    reports the problem with the full check.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist()
                         if n == "data.pkl" or n.endswith("/data.pkl")), None)
            if name is None or zf.getinfo(name).file_size > _MAX_META_BYTES:
                return None
            data = zf.read(name)
        obj = _MetadataUnpickler(io.BytesIO(data)).load()
    except Exception:  # not a zip, corrupt, foreign: not ours to judge here
        return None
    task = obj.get("task") if isinstance(obj, dict) else None
    return task if task in TASKS else None
