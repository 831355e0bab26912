"""An existing dask cluster (tcp address): a killed worker's blocks are redone, a cohort
resumes slide by slide, and an unreachable or empty scheduler is one line, exit 2."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from napari_histo.cli import main
from napari_histo.core.progress import Message, Progress, run_task
from napari_histo.engine.distributed import predict_distributed
from napari_histo.engine.inference import InferenceConfig, is_complete, predict_slide

CFG = InferenceConfig(tile=128, overlap=32, batch_size=4, readers=2, device="cpu")
KEYS = ("0", "1", "labels/prediction/0", "labels/prediction/1")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, object]]:
    """A LocalCluster of 2 single-threaded worker processes, joined by its tcp address."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as lc, Client(lc) as client:
        yield lc.scheduler_address, client


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, seg_ckpt: Path) -> list[tuple[Path, Path]]:
    """Two synthetic slides (1024 x 1536 at 0.5 um/px) and their single-process outputs."""
    from napari_histo.io.synthetic import write_synthetic_slide

    d = tmp_path_factory.mktemp("cohort")
    pairs = []
    for seed in (1, 2):
        slide, _ = write_synthetic_slide(d / f"s{seed}.tif", shape=(1024, 1536), tile=256,
                                         levels=2, mpp=0.5, seed=seed)
        ref = d / f"ref{seed}.ome.zarr"
        run_task(predict_slide(slide, seg_ckpt, CFG, out_path=ref))
        pairs.append((slide, ref))
    return pairs


def _assert_same(ref: Path, out: Path) -> None:
    import zarr

    assert is_complete(out)
    a, b = zarr.open_group(str(ref), mode="r"), zarr.open_group(str(out), mode="r")
    for key in KEYS:
        np.testing.assert_array_equal(np.asarray(a[key][...]), np.asarray(b[key][...]))


@pytest.mark.slow
def test_killed_worker_blocks_are_redone(cluster, cohort, seg_ckpt: Path,
                                         tmp_path: Path) -> None:
    address, client = cluster
    pids = client.run(os.getpid)
    outs = [tmp_path / f"o{i}.ome.zarr" for i in range(2)]
    gen = predict_distributed([s for s, _ in cohort], seg_ckpt, CFG.replace(scheduler=address),
                              outs, blocks_per_task=1)
    killed = None
    try:
        ev = next(gen)
        while True:
            if killed is None and isinstance(ev, Progress) and ev.done > 0:
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:  # kill a worker in the middle of a task
                    killed = pids[busy[0]]
                    os.kill(killed, signal.SIGKILL)
            ev = gen.send(None)
    except StopIteration as stop:
        results = stop.value
    assert killed is not None, "no worker was busy to be killed"
    assert all(r is not None and r.complete for r in results)
    for (_, ref), out in zip(cohort, outs, strict=True):
        _assert_same(ref, out)
    client.wait_for_workers(2, timeout=60)  # the nanny replaced the killed worker
    assert killed not in client.run(os.getpid).values()


@pytest.mark.slow
def test_cohort_resumes_slide_by_slide(cluster, cohort, seg_ckpt: Path, tmp_path: Path) -> None:
    """One output complete, one interrupted: --resume skips the first, finishes the second."""
    address, _ = cluster
    (s1, ref1), (s2, ref2) = cohort
    out1, out2 = tmp_path / "a.ome.zarr", tmp_path / "b.ome.zarr"
    run_task(predict_slide(s1, seg_ckpt, CFG, out_path=out1))
    gen = predict_slide(s2, seg_ckpt, CFG, out_path=out2)
    for ev in gen:  # interrupt after 2 blocks have landed
        if isinstance(ev, Progress) and "y0" in ev.info and ev.done >= 2:
            break
    gen.close()
    assert not is_complete(out2)
    mtime = (out1 / "0" / "0.0" if (out1 / "0" / "0.0").exists() else out1).stat().st_mtime_ns
    events: list = []
    results = run_task(predict_distributed([s1, s2], seg_ckpt,
                                           CFG.replace(scheduler=address, resume=True),
                                           [out1, out2]), events.append)
    assert all(r is not None and r.complete for r in results)
    said = [e.text for e in events if isinstance(e, Message)]
    assert any("a.ome.zarr: already complete, skipped" in t for t in said)
    assert (out1 / "0" / "0.0" if (out1 / "0" / "0.0").exists() else out1
            ).stat().st_mtime_ns == mtime
    _assert_same(ref1, out1)
    _assert_same(ref2, out2)


@pytest.mark.slow
def test_cli_against_existing_cluster(cluster, cohort, seg_ckpt: Path, tmp_path: Path,
                                      capsys) -> None:
    address, _ = cluster
    (s1, ref1), _ = cohort
    out = tmp_path / "cli.ome.zarr"
    assert main(["predict", str(s1), "--model", str(seg_ckpt), "--out", str(out),
                 "--tile", "128", "--overlap", "32", "--batch-size", "4", "--readers", "2",
                 "--device", "cpu", "--scheduler", address, "--quiet"]) == 0
    _assert_same(ref1, out)
    capsys.readouterr()
    # --gpus is for local clusters: an existing cluster's workers are pinned by who starts them
    assert main(["predict", str(s1), "--model", str(seg_ckpt), "--out", str(tmp_path / "g"),
                 "--scheduler", address, "--gpus", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "existing cluster" in err[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_or_empty_scheduler_is_one_line(seg_ckpt: Path, syn_slide: Path,
                                                    tmp_path: Path, capsys) -> None:
    from distributed import LocalCluster

    base = ["predict", str(syn_slide), "--model", str(seg_ckpt), "--device", "cpu",
            "--scheduler-timeout", "2"]
    nowhere = f"tcp://127.0.0.1:{_free_port()}"
    assert main([*base, "--out", str(tmp_path / "a.ome.zarr"), "--scheduler", nowhere]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the dask scheduler" in err[0], err
    assert not (tmp_path / "a.ome.zarr").exists()
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None,
                      silence_logs=40) as empty:
        code = main([*base, "--out", str(tmp_path / "b.ome.zarr"),
                     "--scheduler", empty.scheduler_address])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no workers" in err[0] and "dask worker" in err[0], err
