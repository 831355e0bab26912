"""``napari-histo review PRED.ome.zarr --top K [--json]``: where to look first.

Ranks the regions of a prediction store by the model's uncertainty (entropy of the stored
probabilities; optionally TTA disagreement on the few regions near the threshold) and
prints the best ``K``: a table, or with ``--json`` a JSON list of objects (``id``, ``rank``,
``score``, ``uncertainty``, ``status``, ``area_px``, ``bbox_px`` in slide level-0 pixels,
``bbox_um`` in micrometres or null). The ranking, the uncertainty map and the review marks
are saved inside the store (group ``review``), so the napari Review widget and later calls
continue the same session; a ranking with the same settings is reused.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_histo.cli._json import print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``review`` subcommand."""
    p = sub.add_parser(
        "review",
        help="rank a prediction's regions by the model's uncertainty (review queue)",
        description="List the regions of a prediction store to review first, ranked by the "
                    "model's uncertainty; the ranking and marks are saved in the store.",
    )
    p.add_argument("prediction", help="prediction store (.ome.zarr) written by predict")
    p.add_argument("--top", type=int, default=20, metavar="K",
                   help="how many regions to list (default 20; 0 lists all)")
    p.add_argument("--unit", choices=("tile", "component"), default="tile",
                   help="square tiles, or connected components of the uncertain band")
    p.add_argument("--size-um", type=float, default=None, metavar="UM",
                   help="tile side in micrometres (default 256 store pixels)")
    p.add_argument("--tta", nargs="?", const="", default=None, metavar="CKPT",
                   help="add test-time-augmentation disagreement for the best regions near "
                        "the threshold (CKPT, default the checkpoint the store was made with)")
    p.add_argument("--tta-top", type=int, default=8, metavar="N",
                   help="re-predict at most N regions with TTA (default 8)")
    p.add_argument("--rerank", action="store_true",
                   help="rank again even if a ranking with these settings is stored")
    p.add_argument("--mark", nargs=2, metavar=("ID", "STATUS"), default=None,
                   help="mark region ID as accepted, flagged or corrected (or 'none' to clear) "
                        "and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true",
                   help="print the regions as a JSON list on stdout (progress goes to stderr)")
    p.set_defaults(func=run)


def _table(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    um = all(r["bbox_um"] is not None for r in rows)
    head = f"{'rank':>4}  {'score':>6}  {'uncert':>6}  {'status':<9}  {'id':<14}  " + \
        ("bbox um (y0, x0, y1, x1)" if um else "bbox level-0 px (y0, x0, y1, x1)")
    lines = [head]
    for r in rows:
        box = r["bbox_um"] if um else r["bbox_px"]
        txt = ", ".join(f"{v:.1f}" if um else str(v) for v in box)
        lines.append(f"{r['rank']:>4}  {r['score']:>6.3f}  {r['uncertainty']:>6.3f}  "
                     f"{r['status'] or '-':<9}  {r['id']:<14}  ({txt})")
    n = settings.get("regions", len(rows))
    lines.append(f"{len(rows)} of {n} regions ({settings.get('unit')}, "
                 f"{settings.get('size')} store px)")
    cost = settings.get("tta_cost")
    if cost:
        lines.append(f"TTA: {cost['regions']} regions re-predicted ({cost['store_px']} px) in "
                     f"{cost['seconds']:.1f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Rank (or reuse the ranking) and print the best regions."""
    from napari_histo.cli._predict import LazyBar
    from napari_histo.core.errors import ConfigError
    from napari_histo.core.progress import Message, Progress, run_task
    from napari_histo.engine.review import ReviewStore

    if args.top < 0:
        raise ConfigError(f"--top must be 0 (all) or more, got {args.top}")
    store = ReviewStore.open(args.prediction)
    if args.mark is not None:
        rid, status = args.mark
        store.mark(rid, None if status.lower() == "none" else status)
        if args.json:
            print_json({"id": rid, "status": store.status(rid)})
        else:
            print(f"{rid}: {store.status(rid) or 'not reviewed'}")
        return 0
    tta = args.tta is not None
    model = args.tta or None
    want = {"unit": args.unit, "size": store.size_px(args.size_um), "tta": tta,
            "method": "entropy"}
    have = store.settings
    same = all(have.get(k) == v for k, v in want.items()) and (not model
                                                                or have.get("model") == model)
    regions = store.regions()
    if args.rerank or not regions or not same:
        with LazyBar("review", args.quiet, args.json) as bar:
            def on_event(ev: Any) -> None:
                if isinstance(ev, Progress):
                    bar.show(ev.done, ev.total)
                elif isinstance(ev, Message):
                    stream = sys.stderr
                    if bar.bar is not None:
                        bar.bar.write(ev.text, file=stream)
                    elif not (args.quiet and args.json):
                        print(ev.text, file=stream, flush=True)

            regions = run_task(store.rank(unit=args.unit, size_um=args.size_um, model=model,
                                          tta=tta, tta_top=args.tta_top), on_event)
    top = regions if args.top == 0 else regions[:args.top]
    marks = store.marks()
    rows = [{"id": r.id, "rank": r.rank, "score": r.score, "uncertainty": r.uncertainty,
             "status": marks.get(r.id), "area_px": r.area_px, "mean_prob": r.mean_prob,
             "bbox_px": list(r.bbox_px),
             "bbox_um": list(r.bbox_um) if r.bbox_um is not None else None,
             "bbox_store": list(r.bbox_store), "kind": r.kind, "tta": r.tta} for r in top]
    if args.json:
        print_json(rows)
    else:
        print(_table(rows, store.settings))
    return 0
