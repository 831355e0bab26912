"""``napari-histo evaluate --model CKPT --data PATH [--split val] [--json]``: score a checkpoint.

With ``--split val`` only the validation groups recorded in the checkpoint are used, which
reproduces the validation metrics of the training run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def run_model_evaluation(args: argparse.Namespace) -> int:
    """Evaluate and print a metrics table (or JSON)."""
    from napari_histo.core.progress import Message, Progress, run_task
    from napari_histo.engine.training.evaluate import evaluate_checkpoint

    bar = None

    def on_event(ev: Any) -> None:
        nonlocal bar
        if isinstance(ev, Progress) and not args.json:
            if bar is None:
                from tqdm import tqdm

                bar = tqdm(total=ev.total, desc="evaluate", leave=False, file=sys.stderr)
            bar.update(ev.done - bar.n)
        elif isinstance(ev, Message) and not args.json:
            print(("warning: " if ev.level == "warning" else "") + ev.text)

    try:
        res = run_task(evaluate_checkpoint(
            args.model, args.data, split=getattr(args, "split", "all") or "all",
            data_mpp=getattr(args, "data_mpp", None), device=args.device,
            batch_size=args.batch_size, group_by=getattr(args, "group_by", None),
            out_dir=args.out, tta=bool(getattr(args, "tta", False))), on_event)
    finally:
        if bar is not None:
            bar.close()

    if args.json:
        from napari_histo.cli._json import print_json

        print_json(res)
        return 0
    print(f"{'':>10}  value   [95 % CI: bootstrap over {res.get('groups', '?')} groups]")
    for k in ("accuracy", "dice", "iou", "precision", "recall", "auc", "loss"):
        if k in res:
            ci = res.get(f"{k}_ci")
            band = (f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and all(
                isinstance(c, float) and c == c for c in ci) else "")
            print(f"{k:>10}: {res[k]:.4f}{band}")
    print(f"{'items':>10}: {res['items']} ({res['split']})")
    print(f"{'confusion':>10}: {res['confusion']} (rows = true {res['class_names']})")
    return 0
