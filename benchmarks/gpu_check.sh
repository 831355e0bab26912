#!/usr/bin/env bash
# GPU proofs of issue 14 in one short run (< 8 min on an H200): CUDA training with AMP and
# channels_last, CUDA inference on a CAMELYON-size virtual slide, and their throughput figures.
# Exits 2 with one line when there is no CUDA device. See benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DIR="${GPU_CHECK_DIR:-/tmp/gpu_check}"
mkdir -p "$DIR"
exec timeout 480 "$PY" benchmarks/gpu_check.py --workdir "$DIR" --json "$DIR/figures.json" "$@"
