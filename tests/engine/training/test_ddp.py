"""Distributed training (issue 14): sharding, rank contexts, a killed rank and resume, cancel.

Runs real 2-process gloo training on CPU through ``napari-histo train --nproc 2`` on a few
CAMELYON16 patches (each run a few seconds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_histo.cli import main
from napari_histo.core import settings
from napari_histo.core.errors import ConfigError
from napari_histo.engine.checkpoints import load_checkpoint
from napari_histo.engine.metrics import MetricAccumulator
from napari_histo.engine.training import ddp

REPO = Path(__file__).resolve().parents[3]


def ddp_config(camelyon: Path, folder: Path, **over: object) -> Path:
    """A tiny classifier run whose crops are deterministic (64 px patches at 0.972 um/px are
    the whole 256 px patch at 0.243) and whose model has no dropout or batch statistics
    (freeze_norm), so 1 and 2 ranks compute the same gradients."""
    cfg = {"task": "classify", "data": [str(camelyon)], "model": "cnn-small",
           "model_kwargs": {"base": 8, "dropout": 0.0}, "mpp": 0.972, "data_mpp": 0.243,
           "patch_size": 64, "batch_size": 8, "epochs": 2, "steps_per_epoch": 3,
           "val_groups": ["tumor_064"], "augment": False, "freeze_norm": True,
           "selection": "raw", "threads": 1, "num_workers": 0, "preview": False, **over}
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_shard_pads_to_equal_shares_and_covers_the_batch() -> None:
    two = [ddp.DistContext(r, 2) for r in range(2)]
    shares = [ddp.shard([5, 6, 7], c) for c in two]
    assert shares == [[5, 7], [6, 5]]  # padded with the batch's own first index
    assert sorted(shares[0] + shares[1]) == [5, 5, 6, 7]
    assert ddp.shard([1, 2, 3], ddp.DistContext()) == [1, 2, 3]


def test_context_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in settings.DIST_ENV:
        monkeypatch.delenv(k, raising=False)
    assert not ddp.from_env().active
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        ddp.from_env()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    ctx = ddp.from_env()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main) == (1, 2, 1, False)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="does not fit"):
        ddp.from_env()
    with pytest.raises(ConfigError, match="global batch"):
        ddp.check_batch(ddp.DistContext(0, 4), 6)


def test_merged_accumulators_equal_one_accumulator() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(20, 2, generator=g), 1)
    target = torch.randint(0, 2, (20,), generator=g)
    whole = MetricAccumulator(2)
    whole.update(probs, target, 0.5, n=20)
    parts = [MetricAccumulator(2), MetricAccumulator(2)]
    parts[0].update(probs[::2], target[::2], 0.5, n=10)
    parts[1].update(probs[1::2], target[1::2], 0.5, n=10)
    merged = ddp.merge_accumulators(parts)
    assert merged.result("t") == pytest.approx(whole.result("t"))


def test_killed_rank_fails_cleanly_and_the_run_resumes(
        camelyon: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    cfg = ddp_config(camelyon, tmp_path, epochs=3)
    out = tmp_path / "run"
    monkeypatch.setenv(settings.KILL_RANK_ENV, "1:5")  # rank 1 dies at epoch 2, step 2
    code = main(["train", "--config", str(cfg), "--out", str(out), "--nproc", "2", "--quiet"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "rank 1 of 2" in err[0] and "--resume" in err[0], err
    ck = load_checkpoint(out / "last.pt")
    assert ck.extra["epoch"] == 1  # the last whole epoch, written by rank 0
    assert not list(out.glob(".*.tmp"))
    monkeypatch.delenv(settings.KILL_RANK_ENV)
    code = main(["train", "--resume", "--out", str(out), "--nproc", "2", "--quiet"])
    assert code == 0, capfd.readouterr().err
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert load_checkpoint(out / "last.pt").extra["epoch"] == 3


def test_ctrl_c_stops_every_rank_and_keeps_a_resumable_run(camelyon: Path,
                                                           tmp_path: Path) -> None:
    import psutil

    cfg = ddp_config(camelyon, tmp_path, epochs=200)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "napari_histo.cli", "train", "--config",
                             str(cfg), "--out", str(out), "--nproc", "2", "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        ranks = psutil.Process(proc.pid).children()
        assert len(ranks) == 2
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err.decode()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ranks)
    assert not list(out.glob(".*.tmp"))
    assert load_checkpoint(out / "last.pt").extra["epoch"] >= 1


def test_shard_over_three_ranks_sees_each_sample_once() -> None:
    batch = list(range(9))
    shares = [ddp.shard(batch, ddp.DistContext(r, 3)) for r in range(3)]
    assert sorted(np.concatenate(shares).tolist()) == batch
