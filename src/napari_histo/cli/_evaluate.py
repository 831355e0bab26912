"""``napari-histo evaluate``: score a model on labelled data, or a prediction against truth.

Two modes share one command: ``--model CKPT --data PATH`` (metrics of a checkpoint on any
labelled dataset) and ``--pred OUT --truth MASK`` (metrics of a written prediction against a
mask or annotation). Each mode has its own module.
"""

from __future__ import annotations

import argparse

from napari_histo.cli._json import json_help
from napari_histo.core.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="metrics of a model on labelled data, or of a prediction against ground truth",
        description=__doc__,
    )
    p.add_argument("--model", help="checkpoint (.pt) to evaluate on --data")
    p.add_argument("--data", action="append", default=[], help="labelled dataset (repeatable)")
    p.add_argument("--pred", action="append", default=[], help="prediction output (repeatable)")
    p.add_argument("--truth", action="append", default=[], help="mask or annotation file/folder")
    p.add_argument("--json", action="store_true", help=json_help("the metrics"))
    p.add_argument("--out", help="folder for the metrics JSON and plots")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|mps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--split", choices=("all", "val", "train", "test"), default="all",
                   help="--model: score only the run's validation (or training) groups; "
                        "test: the fixed test split (PCam)")
    p.add_argument("--data-mpp", type=float, help="--model: um/px of the data files")
    p.add_argument("--group-by", help="--model: group column for --split")
    p.add_argument("--tta", action="store_true",
                   help="--model: test-time augmentation (average over flips/rot90)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the model or prediction evaluator."""
    if args.model and args.data:
        from napari_histo.cli._evaluate_model import run_model_evaluation

        return run_model_evaluation(args)
    if args.pred and args.truth:
        from napari_histo.cli._evaluate_prediction import run_prediction_evaluation

        return run_prediction_evaluation(args)
    raise ConfigError("give either --model CKPT --data PATH, or --pred OUT --truth MASK")
