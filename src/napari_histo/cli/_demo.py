"""``napari-histo demo``: the main job in one command.

Without options it starts napari (in a subprocess, so this CLI never imports napari or Qt)
with the synthetic sample slide, its mask, the dock widgets and a working model, and segments
the visible region. ``--headless`` runs the same job without a display: sample slide -> small
model (trained offline on first use, then cached) -> whole-slide prediction -> Dice against
the sample's mask, printing where everything was written.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from napari_histo.core import settings
from napari_histo.core.errors import HistoError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="open napari with a sample slide, its mask, a model and the dock widgets",
        description="Open napari with a synthetic H&E sample slide and its tumour mask, dock "
        "the napari-histo widgets, train a small model offline if none is cached, and segment "
        "the visible region. --headless runs the same job without a display and prints Dice.",
    )
    p.add_argument("--headless", action="store_true",
                   help="no window: predict the sample slide and print Dice vs its mask")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the demo's prediction (default: ~/.cache/napari-histo/demo); "
                        "the sample slide and the model are shared with the GUI demo")
    p.add_argument("--epochs", type=int, default=6,
                   help="epochs when the demo model must be trained (default 6)")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Launch the GUI demo in a subprocess, or run the headless job here."""
    if not args.headless:
        cmd = [sys.executable, "-m", "napari_histo.plugin.demo"]
        if args.epochs:
            cmd += ["--epochs", str(args.epochs)]
        return subprocess.call(cmd)
    return headless(out=args.out, epochs=args.epochs, device=args.device)


def _home() -> Path:
    return settings.home_dir()


class _Bars:
    """Render Progress events as tqdm bars (one per ``desc``) and messages as lines."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar: Any = None
        self.desc = ""

    def __call__(self, ev: Any) -> None:
        from napari_histo.core.progress import EpochEnd, Message, Progress

        if isinstance(ev, Progress):
            desc = "predict" if ev.desc in ("tile", "predict") else (ev.desc or "work")
            if self.bar is None or desc != self.desc or (ev.total and self.bar.total != ev.total):
                self.close()
                self.bar = self._tqdm(total=ev.total or None, desc=desc, leave=False,
                                      dynamic_ncols=True)
                self.desc = desc
            self.bar.n = ev.done
            self.bar.refresh()
        elif isinstance(ev, EpochEnd):
            self.close()
            m = ev.metrics
            shown = ", ".join(f"{k} {m[k]:.3f}" for k in ("train_loss", "val_loss", "val_dice")
                              if k in m)
            print(f"epoch {ev.epoch}: {shown}")
        elif isinstance(ev, Message):
            self.close()
            print(ev.text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def headless(*, out: Path | None = None, epochs: int = 6, device: str = "cpu") -> int:
    """Sample slide -> demo model -> whole-slide prediction -> Dice vs the sample mask."""
    from napari_histo.core.progress import run_task
    from napari_histo.engine.demo import ensure_demo_model, sample_slide_path
    from napari_histo.engine.evaluation import evaluate_prediction
    from napari_histo.engine.inference import InferenceConfig, predict_slide

    folder = Path(out) if out is not None else _home() / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    # the same sample slide and demo model as the GUI demo (core.settings): whichever demo
    # runs first writes/trains them, the other reuses them
    slide = sample_slide_path()
    mask = slide.with_name(f"{slide.stem}_mask.tif")
    bars = _Bars()
    try:
        ckpt = run_task(ensure_demo_model(slide, mask, None, epochs=epochs, device=device), bars)
        pred = folder / "synthetic_he-prediction.ome.zarr"
        cfg = InferenceConfig(device=device, overwrite=True, tissue_only=True)
        result = run_task(predict_slide(slide, ckpt, cfg, out_path=pred), bars)
    finally:
        bars.close()
    if not result.complete:
        raise HistoError(f"the prediction {pred} did not complete")
    metrics, _ = evaluate_prediction(pred, mask)
    print(f"slide:       {slide}")
    print(f"model:       {ckpt}")
    print(f"prediction:  {pred} (probabilities + labels/prediction, OME-Zarr)")
    print(f"Dice {metrics['dice']:.3f}  IoU {metrics['iou']:.3f}  "
          f"accuracy {metrics['accuracy']:.3f}  AUC {metrics['auc']:.3f}  vs {mask.name}")
    return 0
