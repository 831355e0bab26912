"""Issue 9 fault tests: kill -9 during predict, resume with another checkpoint, two writers on
one store, a full disk (a real small filesystem where the machine allows mounting one, and a
simulated ENOSPC in any case), a kill during a checkpoint write, a closed stdout.

Processes are real (``python -m napari_histo.cli``), stores are real zarr folders.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_histo.cli import main

# registered by conftest.py (importlib mode: siblings are not importable by name)
H = sys.modules["napari_histo_hostile_harness"]
C = sys.modules["napari_histo_hostile_cases"]


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slide large enough that predicting it takes a few seconds (many blocks)."""
    from napari_histo.io.synthetic import write_synthetic_slide

    d = tmp_path_factory.mktemp("fault-slide")
    path, _ = write_synthetic_slide(d / "big.tif", shape=(2048, 2048), tile=256, levels=3,
                                    mpp=0.5, seed=7, with_mask=False)
    return path


def _predict_argv(slide: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return H.cli_argv("predict", slide, "--model", model, "--out", out, "--device", "cpu",
                      "--quiet", "--all-tiles", "--tile", "64", "--readers", "1", *extra)


def _store_arrays(store: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import zarr

    g = zarr.open_group(str(store), mode="r")
    return np.asarray(g["0"]), np.asarray(g["labels/prediction/0"]), dict(g.attrs["napari_histo"])


def _done_markers(store: Path) -> int:
    d = store.parent / f".{store.name}.done"
    return len(list(d.iterdir())) if d.is_dir() else 0


@pytest.mark.slow
def test_kill_during_predict_then_resume(tmp_path: Path, big_slide: Path, assets: Any) -> None:
    """A killed run is visibly unfinished; resume refuses another checkpoint and finishes the
    run with the same one, byte-identical to an uninterrupted run."""
    ref = tmp_path / "ref.ome.zarr"
    ok = H.run_child(_predict_argv(big_slide, assets.seg_ckpt, ref), cwd=tmp_path)
    assert ok.rc == 0, ok.stderr

    store = tmp_path / "killed.ome.zarr"
    proc = subprocess.Popen(_predict_argv(big_slide, assets.seg_ckpt, store), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while _done_markers(store) < 2 and proc.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _done_markers(store) >= 1, "the run ended before it could be killed mid-way"
    assert not _store_arrays(store)[2].get("complete")

    info = H.run_child(H.cli_argv("info", store), cwd=tmp_path)
    assert info.rc == 0 and "unfinished" in (info.stdout + info.stderr).lower(), info.stderr

    other = C.checkpoint_variant(assets.seg_ckpt, tmp_path / "other.pt",
                                 lambda p: p["preprocessing"].update(std=[0.3, 0.3, 0.3]))
    refused = H.run_child(_predict_argv(big_slide, other, store, "--resume"), cwd=tmp_path)
    assert refused.rc == 2 and len(refused.stderr_lines) == 1, refused.stderr
    assert "checkpoint" in refused.stderr.lower()

    resumed = H.run_child(_predict_argv(big_slide, assets.seg_ckpt, store, "--resume"),
                          cwd=tmp_path)
    assert resumed.rc == 0, resumed.stderr
    p_ref, l_ref, _ = _store_arrays(ref)
    p_res, l_res, meta = _store_arrays(store)
    assert meta["complete"] is True
    np.testing.assert_array_equal(p_res, p_ref)
    np.testing.assert_array_equal(l_res, l_ref)


@pytest.mark.slow
def test_two_writers_on_one_store(tmp_path: Path, big_slide: Path, assets: Any) -> None:
    """Two runs started at once on one output: one writes it, the other says so in one line."""
    store = tmp_path / "shared.ome.zarr"
    argv = _predict_argv(big_slide, assets.seg_ckpt, store, "--resume")
    procs = [subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    lines = [ln for ln in loser[2].splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in loser[2], loser[2]
    assert _store_arrays(store)[2]["complete"] is True
    assert not list(tmp_path.glob(".*.lock")), "the lock outlived its run"


def test_stale_lock_is_taken_over(tmp_path: Path, assets: Any) -> None:
    """A lock left by a process that no longer exists does not block the next run."""
    slide = C.copy(assets.slide, tmp_path / "slide.tif")
    store = tmp_path / "out.ome.zarr"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = store.parent / f".{store.name}.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename,
                                "time": time.time() - 3600}))
    code = main(["predict", str(slide), "--model", str(assets.seg_ckpt), "--out", str(store),
                 "--device", "cpu", "--quiet"])
    assert code == 0
    assert _store_arrays(store)[2]["complete"] is True


def test_simulated_enospc_during_predict(tmp_path: Path, assets: Any, monkeypatch: Any,
                                         capsys: Any) -> None:
    """A full disk mid-run: one line, exit 2, and the store is not marked complete."""
    from napari_histo.engine.inference import writer

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.ome.zarr"))

    monkeypatch.setattr(writer.ZarrSink, "write", full)
    slide = C.copy(assets.slide, tmp_path / "slide.tif")
    store = tmp_path / "out.ome.zarr"
    code = main(["predict", str(slide), "--model", str(assets.seg_ckpt), "--out", str(store),
                 "--device", "cpu", "--quiet", "--all-tiles"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "disk full" in err[0], err
    assert not (store.exists() and _store_arrays(store)[2].get("complete"))


def test_simulated_enospc_during_checkpoint(tmp_path: Path, assets: Any, monkeypatch: Any,
                                            capsys: Any) -> None:
    """A full disk while a checkpoint is written: one line, exit 2, no partial .pt left."""
    import torch

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run"))

    monkeypatch.setattr(torch, "save", full)
    code = main(["train", "--task", "segment", "--data", str(assets.train_data), "--out",
                 str(tmp_path / "run"), "--model", "unet-tiny", "--patch-size", "64",
                 "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--quiet"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "disk full" in err[0], err
    assert not list((tmp_path / "run").glob("*.pt")) and not list((tmp_path / "run").glob(".*tmp"))


def test_partial_checkpoint_of_a_killed_run_is_swept(tmp_path: Path, assets: Any) -> None:
    """A kill during a checkpoint write leaves only a hidden temp; the next run removes it."""
    run = tmp_path / "run"
    run.mkdir()
    leftover = run / ".last.pt.k3j2h1.tmp"
    leftover.write_bytes(b"")
    code = main(["train", "--task", "segment", "--data", str(assets.train_data), "--out",
                 str(run), "--model", "unet-tiny", "--patch-size", "64", "--epochs", "1",
                 "--batch-size", "2", "--device", "cpu", "--quiet"])
    assert code == 0
    assert not leftover.exists()
    assert (run / "last.pt").is_file()


def test_argument_errors_are_one_line(capsys: Any) -> None:
    """argparse's usage + error pair becomes one line, exit 2."""
    with pytest.raises(SystemExit) as exc:
        main(["predict", "x.svs", "--model", "m.pt", "--out", "o", "--batch-size", "many"])
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--batch-size" in err[0]


def test_warnings_are_one_line_each(tmp_path: Path, capsys: Any) -> None:
    """A warning raised during a command is one 'napari-histo: warning:' line."""
    import warnings

    from napari_histo.cli import _quiet_libraries

    with _quiet_libraries(False), warnings.catch_warnings():
        warnings.simplefilter("always")
        text = warnings.formatwarning("two\nlines", UserWarning, "f.py", 1)
    assert text == "napari-histo: warning: two; lines\n"
