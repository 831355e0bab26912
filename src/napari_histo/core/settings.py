"""Settings: the folders napari-histo writes to and every environment variable it reads.

Nothing else in the package reads ``os.environ``: call these functions instead. Each is
read on every call (not cached at import), so tests and users may change a variable at any
time.

Environment variables
---------------------
``NAPARI_HISTO_HOME``
    The per-user folder (:func:`home_dir`): recent checkpoints, the Segment widget's
    predictions (``predictions/``), training and fine-tuning runs of the widgets
    (``runs/``), saved corrections (``corrections/``), stain references (``stain/``), the
    demo model (``demo-model/``) and the pixel sizes set in the Pixel size widget
    (``pixel_sizes.json``, :func:`remember_pixel_size`). Default ``~/.cache/napari-histo``.
``NAPARI_HISTO_CACHE``
    Generated sample files, e.g. File > Open Sample's synthetic slide (:func:`cache_dir`).
    Default ``$XDG_CACHE_HOME/napari-histo``, else ``~/.cache/napari-histo``.
``XDG_CACHE_HOME``
    The user's cache root (freedesktop convention), used for :func:`cache_dir`'s default.
``NAPARI_HISTO_TILE_CACHE_MB``
    Size of each slide's decoded-tile LRU in MB (:func:`tile_cache_mb`); default 64, 0
    disables it.
``NAPARI_HISTO_DECODE_THREADS``
    Threads decoding slide tiles in parallel (:func:`decode_threads`); default (unset or
    0): the number of CPUs.
``NAPARI_HISTO_NOTHREADS``
    ``1``/``true``/``yes`` run the widgets' background tasks synchronously in the caller,
    for debugging (:func:`threads_disabled`).
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``
    Set by ``torchrun`` (or ``napari-histo train --nproc N``) for each process of a
    distributed training run (:func:`distributed_env`); unset in a one-process run.
``NAPARI_HISTO_LAUNCHER_PID``
    Set by ``train --nproc N`` in the processes it starts: they stop when that launcher is
    gone (:func:`launcher_pid`).
``NAPARI_HISTO_TEST_KILL_RANK``
    ``RANK:STEP``: that rank of a distributed run exits abruptly at that optimiser step, to
    test that the others fail cleanly and the run resumes (:func:`kill_rank_hook`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "DECODE_THREADS_ENV",
    "ENVIRONMENT",
    "HOME_ENV",
    "NOTHREADS_ENV",
    "TILE_CACHE_ENV",
    "cache_dir",
    "child_environment",
    "decode_threads",
    "distributed_env",
    "kill_rank_hook",
    "launcher_pid",
    "demo_model_dir",
    "home_dir",
    "pixel_sizes_file",
    "predictions_dir",
    "remember_pixel_size",
    "remembered_pixel_size",
    "runs_dir",
    "threads_disabled",
    "tile_cache_mb",
    "user_subdir",
]

HOME_ENV = "NAPARI_HISTO_HOME"
CACHE_ENV = "NAPARI_HISTO_CACHE"
TILE_CACHE_ENV = "NAPARI_HISTO_TILE_CACHE_MB"
DECODE_THREADS_ENV = "NAPARI_HISTO_DECODE_THREADS"
NOTHREADS_ENV = "NAPARI_HISTO_NOTHREADS"
XDG_CACHE_ENV = "XDG_CACHE_HOME"
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCHER_PID_ENV = "NAPARI_HISTO_LAUNCHER_PID"
KILL_RANK_ENV = "NAPARI_HISTO_TEST_KILL_RANK"

#: every environment variable the package reads -> one line of what it sets
ENVIRONMENT: dict[str, str] = {
    HOME_ENV: "per-user folder: recent checkpoints, predictions, runs, corrections "
              "(default ~/.cache/napari-histo)",
    CACHE_ENV: "generated sample files (default $XDG_CACHE_HOME/napari-histo)",
    XDG_CACHE_ENV: "cache root for NAPARI_HISTO_CACHE's default (default ~/.cache)",
    TILE_CACHE_ENV: "decoded-tile LRU per slide in MB (default 64, 0 disables it)",
    DECODE_THREADS_ENV: "tile decode threads (default: number of CPUs)",
    NOTHREADS_ENV: "1: run widget tasks synchronously (debugging)",
    **{name: "distributed training process (set by torchrun or train --nproc)"
       for name in DIST_ENV},
    LAUNCHER_PID_ENV: "the train --nproc launcher a training process stops without",
    KILL_RANK_ENV: "RANK:STEP: that training rank exits abruptly (tests)",
}

#: default decoded-tile cache size in MB
DEFAULT_TILE_CACHE_MB = 64.0


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def home_dir(*, create: bool = False) -> Path:
    """The per-user napari-histo folder: ``$NAPARI_HISTO_HOME`` or ``~/.cache/napari-histo``."""
    root = _env(HOME_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "napari-histo"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def user_subdir(name: str, *, create: bool = False) -> Path:
    """``home_dir() / name`` (``create`` makes it, with the home folder)."""
    path = home_dir() / name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir(*, create: bool = False) -> Path:
    """Where the widgets put training and fine-tuning runs: ``home_dir() / "runs"``."""
    return user_subdir("runs", create=create)


def demo_model_dir(*, create: bool = False) -> Path:
    """The one demo model folder, shared by the GUI demo and ``napari-histo demo --headless``
    (whichever runs first trains the model, the other reuses it): ``home_dir() / "demo-model"``."""
    return user_subdir("demo-model", create=create)


def predictions_dir(*, create: bool = False) -> Path:
    """Where the Segment widget writes whole-slide predictions: ``home_dir() / "predictions"``."""
    return user_subdir("predictions", create=create)


def cache_dir() -> Path:
    """Generated sample files: ``$NAPARI_HISTO_CACHE``, else ``$XDG_CACHE_HOME/napari-histo``,
    else ``~/.cache/napari-histo``."""
    env = _env(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = _env(XDG_CACHE_ENV)
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "napari-histo"


def tile_cache_mb() -> float:
    """Decoded-tile cache size in MB from ``NAPARI_HISTO_TILE_CACHE_MB`` (default 64;
    an unparsable value means the default)."""
    try:
        return float(os.environ.get(TILE_CACHE_ENV, DEFAULT_TILE_CACHE_MB))
    except ValueError:
        return DEFAULT_TILE_CACHE_MB


def decode_threads() -> int:
    """Tile decode threads from ``NAPARI_HISTO_DECODE_THREADS`` (0 or unset: CPU count)."""
    try:
        n = int(os.environ.get(DECODE_THREADS_ENV, "0"))
    except ValueError:
        n = 0
    return n if n > 0 else (os.cpu_count() or 2)


def threads_disabled() -> bool:
    """True when ``NAPARI_HISTO_NOTHREADS`` asks for synchronous widget tasks (debugging)."""
    return os.environ.get(NOTHREADS_ENV, "").strip().lower() not in ("", "0", "false", "no")


def pixel_sizes_file() -> Path:
    """The pixel sizes the user set for slides without one: ``home_dir() / "pixel_sizes.json"``.

    A JSON object ``{absolute file path: um per pixel}`` written by the Pixel size widget.
    """
    return home_dir() / "pixel_sizes.json"


def _pixel_size_key(path: str | Path) -> str:
    return str(Path(str(path).rstrip("/\\")).expanduser().resolve())


def _read_pixel_sizes() -> dict[str, float]:
    try:
        data = json.loads(pixel_sizes_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, float] = {}
    for k, v in data.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            out[str(k)] = f
    return out


def remembered_pixel_size(path: str | Path) -> float | None:
    """The um/px the user set for ``path`` (:func:`remember_pixel_size`), or None."""
    return _read_pixel_sizes().get(_pixel_size_key(path))


def remember_pixel_size(path: str | Path, mpp: float | None) -> None:
    """Remember (``mpp`` um/px) or forget (None) the pixel size of ``path``; never raises
    for an unwritable home folder (the size then only lasts this session)."""
    table = _read_pixel_sizes()
    key = _pixel_size_key(path)
    if mpp is None:
        table.pop(key, None)
    else:
        table[key] = float(mpp)
    target = pixel_sizes_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        pass


def distributed_env() -> dict[str, str]:
    """The torch.distributed variables of this process (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT) that are set; empty in a one-process run."""
    return {k: v for k in DIST_ENV if (v := os.environ.get(k, "")) != ""}


def launcher_pid() -> int | None:
    """The ``train --nproc`` launcher this process belongs to (None when not launched so)."""
    try:
        return int(os.environ.get(LAUNCHER_PID_ENV, ""))
    except ValueError:
        return None


def kill_rank_hook() -> tuple[int, int] | None:
    """(rank, step) from ``NAPARI_HISTO_TEST_KILL_RANK=RANK:STEP`` (tests), else None."""
    text = os.environ.get(KILL_RANK_ENV, "")
    try:
        rank, step = text.split(":")
        return int(rank), int(step)
    except ValueError:
        return None


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment plus ``extra``: what a child process is started with."""
    return {**os.environ, **extra}
