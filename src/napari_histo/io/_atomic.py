"""Atomic output paths: write under a hidden temporary sibling, rename when complete.

Entry point: :func:`atomic_path`, a context manager used by every writer (OME-Zarr, OME-TIFF,
GeoJSON) and reusable for checkpoints and reports::

    with atomic_path(out, overwrite=False) as tmp:   # tmp = out.parent / ".<name>.partial-<pid>"
        write_everything_to(tmp)                     # a file or a directory
    # here ``out`` exists and is complete; on an exception ``tmp`` is removed and ``out``
    # is untouched, so a crash never leaves something that looks finished.

A process killed with SIGKILL cannot clean up: it leaves only the hidden ``.partial-<pid>``
sibling, never a file at the final name. :func:`remove_stale_partials` deletes such leftovers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from napari_histo.core.errors import ConfigError, OutputExistsError

__all__ = ["atomic_path", "check_output_path", "remove_path", "remove_stale_partials"]


def _partial_name(path: Path) -> Path:
    return path.parent / f".{path.name}.partial-{os.getpid()}"


def remove_path(path: Path) -> None:
    """Remove a file, link or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def check_output_path(path: str | Path, overwrite: bool = False) -> Path:
    """Validate an output path early (exists? parent writable?) and create its parent.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    ConfigError
        The parent cannot be created or written to.
    """
    p = Path(path)
    if (p.exists() or p.is_symlink()) and not overwrite:
        msg = f"output {p} already exists; pass overwrite=True (--overwrite) or choose another path"
        raise OutputExistsError(msg)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create output folder {p.parent}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    if not os.access(p.parent, os.W_OK | os.X_OK):
        msg = f"output folder {p.parent} is not writable; choose another output path"
        raise ConfigError(msg)
    return p


def _fsync(path: Path) -> None:
    """Flush a file's data to disk (cheap for one file; directories of chunks are skipped)."""
    if path.is_file():
        _fsync_entry(path)


def _fsync_entry(path: Path) -> None:
    """fsync a file or a folder by path (a folder: its entries, so a rename is durable)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write to; rename it to ``path`` on success.

    Parameters
    ----------
    path : final output path (a file or a directory such as ``.ome.zarr``).
    overwrite : replace an existing ``path`` (only once the new output is complete).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (checked before anything is written).
    """
    final = check_output_path(path, overwrite)
    tmp = _partial_name(final)
    remove_path(tmp)  # a leftover of an earlier crash of a process with our pid
    try:
        yield tmp
        if not tmp.exists():
            msg = f"nothing was written to the temporary output {tmp}"
            raise ConfigError(msg)
        _fsync(tmp)
        if final.exists() or final.is_symlink():
            if not overwrite:  # appeared while we were writing
                msg = f"output {final} appeared while writing; not overwriting it"
                raise OutputExistsError(msg)
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            remove_path(old)
            os.replace(final, old)
            os.replace(tmp, final)
            remove_path(old)
        else:
            os.replace(tmp, final)
        _fsync_entry(final.parent)
    except BaseException:
        remove_path(tmp)
        raise


def remove_stale_partials(path: str | Path) -> list[Path]:
    """Delete ``.<name>.partial-<pid>`` siblings of ``path`` whose process is gone (this host)."""
    p = Path(path)
    removed = []
    for cand in p.parent.glob(f".{p.name}.partial-*"):
        pid_s = cand.name.rsplit("-", 1)[-1]
        if not pid_s.isdigit():
            continue
        pid = int(pid_s)
        alive = True
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            remove_path(cand)
            removed.append(cand)
    return removed
