"""Group k-fold cross-validation: ``crossval(cfg) -> Task[CrossValResult]``.

One validation slide with four tumour patches cannot tell a good model from a lucky one.
With ``cfg.folds = K`` the groups (slides, patients) are dealt into K folds (no group on both
sides; class balance kept where possible), one training run per fold is written to
``OUT/fold_k/``, and the out-of-fold predictions of every fold's selected checkpoint are
pooled: every item is scored exactly once by a model that never saw its group. The pooled
metrics, with a cluster-bootstrap 95 % interval over groups, go to ``OUT/crossval.json``.

Pooling scores of K different models assumes they are calibrated alike (usual for the same
recipe); the per-fold metrics are reported next to the pooled ones. The model to use is
fold 1's selected checkpoint (trained on (K-1)/K of the data; no refit on everything).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_histo.core.errors import ConfigError
from napari_histo.core.progress import Message, Task
from napari_histo.engine.datasets import ArraySample
from napari_histo.engine.training.config import TrainConfig
from napari_histo.engine.training.loop import TrainResult, prepare_run_dir, train
from napari_histo.engine.uncertainty import (
    format_metric,
    item_cis,
    item_metrics,
    validation_warnings,
)

_HINT = " Use --folds K (group cross-validation) for an honest estimate."


@dataclass
class CrossValResult:
    """Pooled out-of-fold metrics (``val_*`` keys, with ``*_ci``) and the per-fold runs."""

    run_dir: Path
    folds: list[TrainResult]
    fold_groups: list[list[str]]
    metrics: dict[str, Any]
    final_checkpoint: Path
    final_model: str
    warnings: list[str] = field(default_factory=list)
    stopped: str = "crossval"

    @property
    def best_checkpoint(self) -> Path:
        """The checkpoint to use (fold 1's selected model)."""
        return self.final_checkpoint

    @property
    def best_metrics(self) -> dict[str, Any]:
        """The pooled out-of-fold metrics (what a TrainResult's best epoch would report)."""
        return self.metrics

    def summary_line(self) -> str:
        """``5-fold CV (out of fold, 57 items, 3 groups): val_auc=0.91 [0.80, 0.97] ...``."""
        keys = ("val_dice", "val_auc", "val_accuracy")
        parts = [t for t in (format_metric(self.metrics, k) for k in keys) if t]
        return (f"{len(self.folds)}-fold group cross-validation (out-of-fold, "
                f"{self.metrics.get('items')} items, {self.metrics.get('groups')} groups): "
                + " ".join(parts) + f"; model for use: {self.final_model}")


def assign_folds(groups: list[str], labels: list[int] | None, k: int, seed: int = 0) -> list[list[str]]:
    """Deal whole groups into ``k`` folds, balancing item counts and (given labels) classes.

    Greedy: groups from largest to smallest (ties shuffled by ``seed``) each go to the fold
    where the squared fractions of items and of every class stay smallest.
    """
    uniq = sorted(set(groups))
    if k > len(uniq):
        raise ConfigError(f"{k} folds need at least {k} groups; the data has {len(uniq)} "
                          f"({uniq[:10]}); lower --folds or set --group-by")
    g = np.asarray(groups)
    lab = np.zeros(len(groups), np.int64) if labels is None else np.asarray(labels, np.int64)
    n_cls = int(lab.max()) + 1 if lab.size else 1
    counts = {u: np.bincount(lab[g == u], minlength=n_cls).astype(np.float64) for u in uniq}
    total = np.maximum(sum(counts.values()), 1.0)
    rng = np.random.default_rng(seed)
    order = sorted(uniq, key=lambda u: (-counts[u].sum(), rng.random()))
    fold_counts = np.zeros((k, n_cls))
    folds: list[list[str]] = [[] for _ in range(k)]
    for u in order:
        empty = [i for i in range(k) if not folds[i]]
        if len(empty) >= len(order) - sum(map(len, folds)):  # every fold needs a group
            best = empty[0]
        else:
            cand = fold_counts + counts[u]
            cost = ((cand / total) ** 2).sum(1) + (cand.sum(1) / total.sum()) ** 2
            cost -= ((fold_counts / total) ** 2).sum(1) + (fold_counts.sum(1) / total.sum()) ** 2
            best = int(np.argmin(cost))
        folds[best].append(u)
        fold_counts[best] += counts[u]
    return [sorted(f) for f in folds]


def _groups_and_labels(cfg: TrainConfig, arrays: list[ArraySample] | None
                       ) -> tuple[list[str], list[int] | None]:
    from napari_histo.engine.training.data import build_data

    # any split holds every item on one side or the other (a one-sided split would leave an
    # empty dataset, which the datasets refuse)
    full = build_data(cfg.replace(val_fraction=0.5, val_groups=(), folds=None, stain_norm=None),
                      arrays)
    if full.task == "segment":
        samples = list(full.train.samples) + list(full.val)
        return [str(s.group) for s in samples], [int(((s.labels > 0) & (s.labels != 255)).any())
                                                  for s in samples]
    return ([str(x) for x in list(full.train.groups) + list(full.val.groups)],
            [int(x) for x in list(full.train.labels) + list(full.val.labels)])


def _load_items(run_dir: Path) -> dict[str, np.ndarray] | None:
    path = run_dir / "val_predictions.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def crossval(cfg: TrainConfig, *, arrays: list[ArraySample] | None = None) -> Task[CrossValResult]:
    """Group k-fold cross-validation of ``cfg`` (``cfg.folds`` folds); yields the folds' events.

    Steps: assign the groups to folds, train each fold (:func:`_train_fold`), pool the folds'
    out-of-fold predictions (:func:`_pooled_metrics`) and write ``crossval.json``
    (:func:`_write_report`).
    """
    k = cfg.folds
    if not k:
        raise ConfigError("crossval needs folds >= 2")
    if cfg.val_groups:
        raise ConfigError("--folds chooses the validation groups itself; drop --val-groups")
    out = Path(cfg.out_dir)
    prepare_run_dir(out)
    cfg.to_yaml(out / "config.yaml")
    yield Message(f"{k}-fold group cross-validation: reading the groups")
    groups, labels = _groups_and_labels(cfg, arrays)
    fold_groups = assign_folds(groups, labels, k, cfg.seed)
    for i, fg in enumerate(fold_groups, 1):
        n = sum(1 for g in groups if g in set(fg))
        yield Message(f"fold {i}: {len(fg)} validation groups, {n} items ({', '.join(fg[:6])}"
                      f"{', ...' if len(fg) > 6 else ''})")
    results: list[TrainResult] = []
    pooled: list[dict[str, np.ndarray]] = []
    warned: list[str] = []
    per_fold: list[dict[str, Any]] = []
    for i, fg in enumerate(fold_groups, 1):
        fdir = out / f"fold_{i}"
        res = yield from _train_fold(cfg, fdir, i, k, fg, arrays)
        results.append(res)
        items = _load_items(fdir)
        if items is not None:
            pooled.append(items)
        best = res.best_metrics
        per_fold.append({"fold": i, "val_groups": fg, "best_epoch": best.get("epoch"),
                         "stopped": res.stopped,
                         **{key: best.get(key) for key in best if key.startswith("val_")}})
        yield Message(f"fold {i}/{k} done: " + " ".join(
            t for t in (format_metric(best, key) for key in ("val_dice", "val_auc", "val_accuracy")) if t))
    if not pooled:
        raise ConfigError("no fold produced validation predictions")
    metrics, item_groups, n_pos, unit = _pooled_metrics(pooled, cfg.seed)
    warned += validation_warnings(n_pos, item_groups, unit=unit + " in all folds together",
                                  folds_hint=False)
    for w in warned:
        yield Message(w, level="warning")
    final = results[0].best_checkpoint or results[0].last_checkpoint
    final_desc = (f"fold_1/{Path(final).name} (trained on {k - 1}/{k} of the groups; "
                  "not refit on all data)")
    result = CrossValResult(out, results, fold_groups, metrics, Path(final), final_desc, warned)
    _write_report(out, cfg, result, per_fold)
    return result


def _train_fold(cfg: TrainConfig, fdir: Path, i: int, k: int, fg: list[str],
                arrays: list[ArraySample] | None) -> Task[TrainResult]:
    """Train fold ``i`` of ``k`` (validation groups ``fg``) in ``fdir``; its warnings are
    prefixed with the fold (and lose the hint to use folds)."""
    fcfg = cfg.replace(out_dir=str(fdir), val_groups=tuple(fg), folds=None,
                       resume=bool(cfg.resume and (fdir / "last.pt").is_file()))
    yield Message(f"fold {i}/{k}: training in {fdir}")
    task = train(fcfg, arrays=arrays)
    try:
        ev = next(task)
        while True:
            if isinstance(ev, Message) and ev.level == "warning":
                ev = Message(f"fold {i}: " + ev.text.replace(_HINT, ""), "warning")
            yield ev
            ev = next(task)
    except StopIteration as stop:
        res: TrainResult = stop.value
    finally:
        task.close()
    return res


def _pooled_metrics(pooled: list[dict[str, np.ndarray]], seed: int,
                    ) -> tuple[dict[str, Any], list[str], int, str]:
    """Out-of-fold metrics (with 95 % intervals) of every fold's validation items together.

    Returns the metrics, the item groups, the count of positive items and its unit.
    """
    items = {key: np.concatenate([p[key] for p in pooled]) for key in pooled[0] if key != "groups"}
    item_groups = [str(x) for p in pooled for x in p["groups"]]
    metrics: dict[str, Any] = item_metrics(items, "val")
    metrics.update(item_cis(items, item_groups, "val", seed=seed))
    metrics["items"] = len(item_groups)
    metrics["groups"] = len(set(item_groups))
    if "truth" in items:
        n_pos = int(np.asarray(items["truth"]).sum())
        unit = "positive patches"
    else:
        n_pos = int(sum(1 for cm in items["cm"] if cm[1:, :].sum() > 0))
        unit = "images with foreground"
    return metrics, item_groups, n_pos, unit


def _write_report(out: Path, cfg: TrainConfig, result: CrossValResult,
                  per_fold: list[dict[str, Any]]) -> None:
    """``crossval.json``: pooled and per-fold metrics, fold groups, warnings, final model."""
    from napari_histo.engine.training.reports import _clean

    report = {
        "folds": cfg.folds, "selection": result.folds[0].selection,
        "monitor": cfg.monitor_metric, "pooled_out_of_fold": result.metrics,
        "per_fold": per_fold,
        "per_fold_mean": {key: float(np.nanmean([f.get(key) if isinstance(f.get(key), float)
                                                 else math.nan for f in per_fold]))
                          for key in ("val_dice", "val_auc", "val_accuracy")
                          if any(isinstance(f.get(key), float) for f in per_fold)},
        "fold_groups": result.fold_groups, "warnings": result.warnings,
        "final_model": result.final_model, "final_checkpoint": str(result.final_checkpoint),
        "summary": result.summary_line()}
    (out / "crossval.json").write_text(json.dumps(_clean(report), indent=1), encoding="utf-8")
