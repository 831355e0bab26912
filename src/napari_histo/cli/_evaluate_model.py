"""Evaluate a checkpoint on labelled data (placeholder until the training issue lands)."""

from __future__ import annotations

import argparse

from napari_histo.core.errors import HistoError


def run_model_evaluation(args: argparse.Namespace) -> int:
    """Not built yet."""
    raise HistoError("model evaluation is not available in this version yet")
