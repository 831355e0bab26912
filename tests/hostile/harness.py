"""Hostile-input suite: a runner that watches each run like a user would, and its assets.

Every case runs the real command line (or the napari reader) in a child process, so a hang,
a memory blow-up or a traceback is seen exactly as a user would see it. The runner records
the exit code, stdout/stderr, the peak resident memory (``VmHWM``, polled every 20 ms so
a runaway process is killed at the ceiling) and whether the time limit was hit.

Assets are built at test time from synthetic data (nothing binary is committed): a small
pyramidal TIFF slide with its mask, two tiny real checkpoints, a finished prediction store
and a small GlaS-style training folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: peak resident memory a hostile case may reach (issue 9: 1.5 GB)
RSS_LIMIT_MB = 1500
#: wall-clock seconds after which a case counts as a hang
HANG_S = 90.0


@dataclass
class Outcome:
    """What a user saw from one run."""

    rc: int | None
    stdout: str
    stderr: str
    peak_rss_mb: float
    seconds: float
    timed_out: bool = False
    killed_for_memory: bool = False
    changed: list[str] = field(default_factory=list)

    @property
    def stderr_lines(self) -> list[str]:
        """Non-blank stderr lines (progress-bar carriage returns split too)."""
        parts = self.stderr.replace("\r", "\n").splitlines()
        return [p for p in parts if p.strip()]

    @property
    def traceback(self) -> bool:
        """Whether a Python traceback reached the user."""
        return "Traceback (most recent call last)" in self.stderr + self.stdout


def _rss_mb(pid: int) -> float:
    """Peak resident memory so far (VmHWM) of a running process.

    Not ``wait4``'s ``ru_maxrss``: Linux carries the parent's peak into a forked child, so
    every case would report the size of the pytest process that started it.
    """
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_child(argv: Sequence[str], *, cwd: Path, timeout: float = HANG_S,
              env: dict[str, str] | None = None, close_stdout_early: bool = False) -> Outcome:
    """Run ``argv`` as a child; kill it at ``timeout`` or at the memory ceiling.

    ``close_stdout_early`` closes the read end of stdout right away, as ``| head`` does
    once it has its lines: the child then meets a broken pipe on its first write.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "100",
                "NAPARI_HISTO_HOME": str(cwd / ".home"), **(env or {})}
    out_f = open(cwd / ".stdout", "w+b")  # files, not pipes: no deadlock on big output
    err_f = open(cwd / ".stderr", "w+b")
    stdout: int | object = out_f
    r_fd = w_fd = None
    if close_stdout_early:
        r_fd, w_fd = os.pipe()
        stdout = w_fd
    t0 = time.monotonic()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=err_f, start_new_session=True)
    if w_fd is not None:  # the reader went away before the first line, as `| head` may
        os.close(w_fd)
        assert r_fd is not None
        os.close(r_fd)
    timed_out = killed = False
    peak = 0.0
    rc: int | None = None
    while True:
        pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            rc = os.waitstatus_to_exitcode(status)
            proc.returncode = rc
            break
        peak = max(peak, _rss_mb(proc.pid))
        if peak > RSS_LIMIT_MB and not killed:
            killed = True
            os.killpg(proc.pid, signal.SIGKILL)
        elif time.monotonic() - t0 > timeout and not timed_out:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # grandchildren (dask workers) too
    out_f.seek(0)
    err_f.seek(0)
    out = out_f.read().decode("utf-8", "replace")
    err = err_f.read().decode("utf-8", "replace")
    out_f.close()
    err_f.close()
    return Outcome(rc, out, err, peak, time.monotonic() - t0, timed_out, killed)


def cli_argv(*args: str | os.PathLike[str]) -> list[str]:
    """The ``napari-histo`` command line as a user runs it."""
    return [sys.executable, "-m", "napari_histo.cli", *[str(a) for a in args]]


#: a child that opens a path through the napari reader contribution, as napari does
READER_PROBE = """
import sys
from napari_histo.core.errors import HistoError
from napari_histo.plugin._reader import get_reader
path = sys.argv[1]
reader = get_reader(path)
if reader is None:
    print("not-ours")
    sys.exit(0)
try:
    layers = reader(path)
except HistoError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
for data, kwargs, kind in layers:
    print(kind, "|", kwargs.get("name"))
"""


def reader_argv(path: str | os.PathLike[str]) -> list[str]:
    """A child that runs the napari reader on ``path``."""
    return [sys.executable, "-c", READER_PROBE, str(path)]


def hash_tree(root: Path, *, exclude: Sequence[Path] = ()) -> dict[str, str]:
    """sha256 of every regular file under ``root`` (not following links), minus ``exclude``."""
    ex = [str(p) for p in exclude]
    digests: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if any(dirpath == e or dirpath.startswith(e + os.sep) for e in ex):
            dirnames[:] = []
            continue
        for name in filenames:
            p = os.path.join(dirpath, name)
            if any(p == e or p.startswith(e + os.sep) for e in ex) or name.startswith(".std"):
                continue
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                digests[p] = f"special:{st.st_mode:o}"
                continue
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(chunk)
            digests[p] = h.hexdigest()
    return digests


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Paths added, removed or modified between two :func:`hash_tree` snapshots."""
    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k) != after.get(k))


# ----------------------------------------------------------------------------- assets


@dataclass(frozen=True)
class Assets:
    """Valid inputs that cases copy and then damage."""

    root: Path
    slide: Path          # 512 x 640 pyramidal TIFF at 0.5 um/px
    mask: Path           # its *_mask.tif
    seg_ckpt: Path       # unet-tiny, 1.0 um/px, 64 px patches
    cls_ckpt: Path       # cnn-small classifier
    prediction: Path     # finished prediction of ``slide`` by ``seg_ckpt``
    train_data: Path     # GlaS layout: images/*.png + labels/*.png


def _save_ckpt(path: Path, spec: dict, task: str, **pre: object) -> Path:
    import torch

    from napari_histo.engine.checkpoints import default_preprocessing, save_checkpoint
    from napari_histo.engine.models import build_model

    torch.manual_seed(0)
    return save_checkpoint(path, build_model(spec), spec=spec, task=task,
                           class_names=["normal", "tumor"],
                           preprocessing=default_preprocessing(**pre))


def build_assets(root: Path) -> Assets:
    """Build the valid inputs once per session."""
    from PIL import Image

    from napari_histo.core.progress import run_task
    from napari_histo.engine.inference import InferenceConfig, predict_slide
    from napari_histo.io.synthetic import synthetic_he, write_synthetic_slide

    slide, mask = write_synthetic_slide(root / "slide.tif", shape=(512, 640), tile=128,
                                        levels=2, mpp=0.5, seed=5)
    assert mask is not None
    seg = _save_ckpt(root / "seg.pt", {"name": "unet-tiny", "in_channels": 3, "num_classes": 2},
                     "segment", mpp=1.0, patch_size=64)
    cls = _save_ckpt(root / "cls.pt", {"name": "cnn-small", "in_channels": 3, "num_classes": 2,
                                       "base": 4}, "classify", mpp=1.0, patch_size=32,
                     context_size=32, center_size=16)
    pred = root / "slide.ome.zarr"
    run_task(predict_slide(slide, seg, InferenceConfig(device="cpu", tile=64),
                           out_path=pred))
    data = root / "train"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for i in range(4):
        rgb, m = synthetic_he((96, 96), seed=10 + i)
        Image.fromarray(rgb).save(data / "images" / f"img_{i}.png")
        Image.fromarray((m > 0).astype(np.uint8)).save(data / "labels" / f"img_{i}.png")
    return Assets(root, slide, mask, seg, cls, pred, data)


@contextlib.contextmanager
def small_filesystem(path: Path, size_kb: int, *, read_only: bool = False) -> Iterator[bool]:
    """Mount a tmpfs of ``size_kb`` at ``path``; yield False when mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_kb}k" + (",ro" if read_only else "")
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                        capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
