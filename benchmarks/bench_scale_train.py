"""Training scaling on one machine: 2 ranks (``train --nproc 2``, gloo) vs 1 rank (issue 14).

Both runs train the same classifier on the same CAMELYON16 patches with the same global
batch, one torch thread per process, in the same invocation (so machine load hits both
alike). Throughput is training samples per second of training time (``train_s`` of
``--json``: from the first step to the end of the last epoch, rank 0's validation on the
26-patch validation slide included in both). The ratio 2-rank / 1-rank is printed against
the 1.5x target.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_scale_train.py \\
        [--data ../shared/data/camelyon16_patches] [--steps 60] [--batch 32] [--repeats 1]

The last line is ``speed-up 2 ranks / 1 rank: X.XXx (target >= 1.5x)``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run(cfg_path: Path, out: Path, nproc: int) -> dict:
    """One CLI training run; its ``--json`` result."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "napari_histo.cli", "train", "--config", str(cfg_path),
           "--out", str(out), "--json", "--quiet"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    res = subprocess.run(cmd, env=env, capture_output=True, check=False)
    if res.returncode:
        sys.exit(f"training with {nproc} process(es) failed: {res.stderr.decode()[-400:]}")
    return json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "camelyon16_patches"))
    ap.add_argument("--steps", type=int, default=60, help="optimiser steps per run")
    ap.add_argument("--batch", type=int, default=32, help="global batch size")
    ap.add_argument("--repeats", type=int, default=1, help="alternating 1-rank/2-rank pairs")
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"no data at {args.data}: give --data PATH (camelyon16_patches)")
    cfg = {"task": "classify", "data": [args.data], "model": "cnn-small",
           "model_kwargs": {"base": 16}, "mpp": 0.972, "data_mpp": 0.243, "patch_size": 64,
           "batch_size": args.batch, "epochs": 1, "steps_per_epoch": args.steps,
           "val_groups": ["tumor_064"], "threads": 1, "num_workers": 0, "preview": False}
    samples = args.steps * args.batch
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-scale-train-") as tmp:
        cfg_path = Path(tmp) / "cfg.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        for rep in range(args.repeats):
            for n in (1, 2):
                res = run(cfg_path, Path(tmp) / f"r{rep}_{n}", n)
                t = float(res["timings"]["train_s"])
                rates[n].append(samples / t)
                print(f"{n} rank(s): {samples} samples in {t:.2f} s = {samples / t:.1f} "
                      f"samples/s (cpus {os.cpu_count()}, 1 thread per process)", flush=True)
    best = {n: max(r) for n, r in rates.items()}
    ratio = best[2] / best[1]
    print(f"speed-up 2 ranks / 1 rank: {ratio:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
