"""What makes two prediction runs the same run: the checkpoint's content hash and the slide's
fingerprint (with the settings fingerprint, checked by ``writer.check_resume``).

A resume continues a store only when all three match, so a store never ends "complete" with
blocks from two models or two slides.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_histo.engine.checkpoints import LoadedModel
    from napari_histo.io.protocols import SlideLike

__all__ = ["run_identity", "slide_fingerprint"]

_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_MB = 1 << 20


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(8 * _MB), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _state_dict_sha256(model: Any) -> str | None:
    """Hash of an in-memory model's parameters and buffers (None if it cannot be read)."""
    import torch

    try:
        h = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            flat = t.detach().cpu().contiguous().reshape(-1)
            h.update(flat.view(torch.uint8).numpy().tobytes())
        return h.hexdigest()
    except Exception:  # an exotic module: no hash rather than no prediction
        return None


def slide_fingerprint(slide: SlideLike) -> dict[str, Any]:
    """Cheap content fingerprint of a slide: level-0 shape, file size and the sha256 of its
    first and last MB (for a folder such as OME-Zarr: of its metadata files).

    Not the modification time: a slide copied to a faster disk is the same slide, and a
    resume from the copy must still be allowed."""
    fp: dict[str, Any] = {"shape": [int(v) for v in slide.shape]}
    path = getattr(slide, "path", None)
    if not path:
        return fp
    p = Path(path)
    try:
        if p.is_file():
            st = p.stat()
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                h.update(fh.read(_MB))
                if st.st_size > _MB:
                    fh.seek(max(_MB, st.st_size - _MB))
                    h.update(fh.read(_MB))
            fp.update(size=st.st_size, head_tail_sha256=h.hexdigest())
        elif p.is_dir():
            h = hashlib.sha256()
            names = (".zattrs", ".zgroup", ".zarray", "zarr.json")
            files = [p / n for n in names]
            for sub in sorted(q for q in p.iterdir() if q.is_dir())[:32]:
                files += [sub / n for n in names]
            for f in files:
                if f.is_file():
                    h.update(str(f.relative_to(p)).encode())
                    h.update(f.read_bytes()[:_MB])
            fp.update(metadata_sha256=h.hexdigest())
    except OSError:
        pass
    return fp


def run_identity(slide: SlideLike, loaded: LoadedModel) -> dict[str, Any]:
    """What a resume must match besides the settings: checkpoint sha256 and slide fingerprint.

    The checkpoint hash is of the .pt file's bytes; an in-memory model hashes its state_dict.
    """
    path = getattr(loaded, "path", None)
    if path is not None and Path(path).is_file():
        sha: str | None = _file_sha256(Path(path))
        name: str | None = str(path)
    else:
        sha, name = _state_dict_sha256(loaded.model), None
    return {"checkpoint_sha256": sha, "checkpoint_name": name,
            "slide_fingerprint": slide_fingerprint(slide)}
