"""Evaluate a written prediction against ground truth (placeholder until the inference issue lands)."""

from __future__ import annotations

import argparse

from napari_histo.core.errors import HistoError


def run_prediction_evaluation(args: argparse.Namespace) -> int:
    """Not built yet."""
    raise HistoError("prediction evaluation is not available in this version yet")
