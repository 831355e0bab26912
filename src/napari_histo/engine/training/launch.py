"""Start the N ranks of a distributed training run on this machine and watch them.

``napari-histo train --nproc N`` comes here: each rank is ``python -m napari_histo.cli
train --config CONFIG`` with RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT set (what
``torchrun`` would set), in its own session so a Ctrl-C reaches each rank exactly once,
through this launcher. Rank 0's output is the run's output; the others are silent.

When a rank fails, the others are stopped and one line says which rank and how to resume;
a rank that only lost its peers exits with :data:`EXIT_PEER_LOST` (silently when started
here), so the line names the rank that really failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from napari_histo.core import settings
from napari_histo.engine.training.ddp import DistributedError

#: exit code of a rank (started by this launcher) whose peers went away
EXIT_PEER_LOST = 3
#: seconds ranks get to save ``last.pt`` and exit after a Ctrl-C, before they are killed
CANCEL_GRACE_S = 60.0
#: seconds the other ranks get to exit after one failed, before they are killed
FAIL_GRACE_S = 10.0


def free_port() -> int:
    """A TCP port free on localhost now (for the rendezvous of the ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, nproc: int, port: int) -> dict[str, str]:
    """The torch.distributed variables of one rank on this machine."""
    return {"RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), settings.LAUNCHER_PID_ENV: str(os.getpid())}


def launch(args: Sequence[str], nproc: int, *, resume_hint: str = "") -> int:
    """Run ``python -m napari_histo.cli *args`` as ``nproc`` ranks; rank 0's exit code.

    Raises
    ------
    DistributedError
        A rank other than 0 failed first (the others were stopped).
    KeyboardInterrupt
        Interrupted: every rank got one SIGINT (rank 0 saves ``last.pt``) and has exited.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "napari_histo.cli", *args]
    logs: list[IO[bytes] | None] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for r in range(nproc):
            log: IO[bytes] | None = None if r == 0 else tempfile.TemporaryFile()
            logs.append(log)
            procs.append(subprocess.Popen(
                cmd, env=settings.child_environment(rank_env(r, nproc, port)),
                stdout=None if r == 0 else subprocess.DEVNULL,
                stderr=None if r == 0 else log, start_new_session=True))
        try:
            culprit = _watch(procs)
        except KeyboardInterrupt:
            for p in procs:
                _signal(p, signal.SIGINT)
            _stop(procs, CANCEL_GRACE_S)
            raise
        if culprit is None or culprit == 0:
            return int(procs[0].returncode or 0)
        raise DistributedError(_failure_line(culprit, nproc, procs[culprit].returncode,
                                             logs[culprit], resume_hint))
    finally:
        _stop(procs, FAIL_GRACE_S)
        for log in logs:
            if log is not None:
                log.close()


def _watch(procs: list[subprocess.Popen[bytes]]) -> int | None:
    """Wait until all ranks ended well (None) or one failed: stop the rest, return its rank."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [r for r, c in enumerate(codes) if c not in (None, 0, EXIT_PEER_LOST)]
        if failed:
            culprit = next((r for r in failed if r != 0), failed[0])
            _stop(procs, FAIL_GRACE_S)
            return culprit
        if any(c == EXIT_PEER_LOST for c in codes):  # a peer died silently (killed, ...)
            _stop(procs, FAIL_GRACE_S)
            gone = [r for r, p in enumerate(procs) if p.returncode not in (0, EXIT_PEER_LOST)]
            return gone[0] if gone else next(r for r, c in enumerate(codes) if c)
        if all(c == 0 for c in codes):
            return None
        time.sleep(0.05)


def _signal(p: subprocess.Popen[bytes], sig: int) -> None:
    if p.poll() is None:
        with contextlib.suppress(OSError):
            p.send_signal(sig)


def _stop(procs: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    """Let running ranks end for ``grace_s`` (after a SIGTERM), then kill them."""
    running = [p for p in procs if p.poll() is None]
    if not running:
        return
    deadline = time.monotonic() + grace_s
    for p in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
    for p in running:
        _signal(p, signal.SIGTERM)
    for p in running:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _failure_line(rank: int, nproc: int, code: int | None, log: IO[bytes] | None,
                  resume_hint: str) -> str:
    """One line: which rank stopped, how, its own error line, how to resume."""
    how = (f"was killed by signal {-code}" if code is not None and code < 0
           else f"exited with code {code}")
    said = ""
    if log is not None:
        log.seek(0)
        lines = [ln.strip() for ln in log.read().decode("utf-8", "replace").splitlines()
                 if ln.strip()]
        errors = [ln for ln in lines if "error:" in ln]
        said = f" ({(errors or lines or [''])[-1][:300]})" if (errors or lines) else ""
    return (f"training process rank {rank} of {nproc} {how}{said}; the others were stopped"
            + (f"; {resume_hint}" if resume_hint else ""))


def write_rank_config(cfg: Any, folder: Path) -> Path:
    """The resolved config every rank reads (``cfg.to_yaml``), in ``folder``."""
    path = folder / "config.yaml"
    cfg.to_yaml(path)
    return path
