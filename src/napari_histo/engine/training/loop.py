"""The training loop as a generator: ``train(cfg) -> Task[TrainResult]``.

It yields ``Progress`` per batch ("train"/"val") and ``EpochEnd`` per epoch, writes the run
folder (checkpoints, metrics, plots) as it goes, and can be cancelled between batches with
``gen.close()`` (or Ctrl-C), which still leaves a loadable ``last.pt`` for ``resume``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_histo.core.errors import (
    CheckpointError,
    ConfigError,
    HistoError,
    OutputExistsError,
)
from napari_histo.core.progress import EpochEnd, Message, Progress, Task
from napari_histo.engine.checkpoints import read_checkpoint, save_checkpoint
from napari_histo.engine.datasets import ArraySample
from napari_histo.engine.devices import avoid_triton_llvm_clash, resolve_device, seed_everything
from napari_histo.engine.metrics import MetricAccumulator
from napari_histo.engine.models import build_model, make_spec
from napari_histo.engine.training import reports
from napari_histo.engine.training.config import TrainConfig
from napari_histo.engine.training.data import DataBundle, build_data
from napari_histo.engine.training.losses import SegClsLoss
from napari_histo.engine.training.pipeline import (
    BatchMaker,
    EpochBatches,
    Prefetcher,
    epoch_indices,
    worker_loader,
)
from napari_histo.engine.training.schedule import ProgressLR
from napari_histo.engine.training.validate import validate_classification, validate_segmentation
from napari_histo.engine.transforms import AugmentConfig


class TrainingError(HistoError):
    """Training cannot go on (diverged to NaN/inf, ...); the message says what to change."""


@dataclass
class TrainResult:
    """Where the run went and how it did."""

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = "epochs"

    @property
    def best_metrics(self) -> dict[str, Any]:
        """Metrics of the epoch saved as best (last epoch when no validation)."""
        if not self.history:
            return {}
        best = [h for h in self.history if h.get("is_best")]
        return (best[-1] if best else self.history[-1])


def _build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    avoid_triton_llvm_clash()
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _monitor_value(metrics: dict[str, Any], name: str) -> tuple[float, float]:
    """(primary, tie-break): higher is better. Losses are negated; ties on the primary metric
    (AUC often saturates on small validation sets) go to the lower validation loss; a NaN
    primary falls back below any real value."""
    def finite(key: str) -> float | None:
        v = metrics.get(key)
        return float(v) if v is not None and math.isfinite(float(v)) else None

    loss = finite("val_loss") if finite("val_loss") is not None else finite("train_loss")
    tie = -loss if loss is not None else -math.inf
    v = finite(name)
    if v is not None:
        return (-v if name.endswith("loss") else v, tie)
    return (-math.inf, tie)


def _init_weights(model: torch.nn.Module, ckpt: dict[str, Any], name: str) -> str:
    own = model.state_dict()
    state = ckpt["state_dict"]
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not keep:
        raise CheckpointError(f"{name} shares no weights with this model; "
                              "pick a checkpoint of the same architecture")
    model.load_state_dict(keep, strict=False)
    return f"initialised {len(keep)}/{len(own)} tensors from {name}"


def freeze_norm_statistics(model: torch.nn.Module) -> None:
    """Put the batch-norm layers in eval mode (their affine weights still train).

    Fine-tuning on a few patches around a user's edits, in batches of 4 that are mostly one
    class, would otherwise replace the running statistics learned on the whole training set
    with those of the edits, and the model gets worse everywhere else.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def prepare_run_dir(run_dir: Path) -> None:
    """Check the run folder can hold a run before any data is loaded."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output {run_dir} is a file; give a folder for the training run")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the run folder {run_dir}: "
                          f"{err.strerror or err}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"run folder {run_dir} is not writable; choose another output folder")


def sweep_partial_checkpoints(run_dir: Path) -> None:
    """Remove ``.NAME.pt.*.tmp`` left by a process killed mid-write (never a finished file)."""
    for leftover in run_dir.glob(".*.pt.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def train(cfg: TrainConfig, *, arrays: list[ArraySample] | None = None) -> Task[TrainResult]:
    """Train a model as described by ``cfg``; yields progress events, returns a TrainResult.

    Raises
    ------
    DataError, ConfigError, CheckpointError, OutputExistsError
        Bad data or options (raised before any training step).
    TrainingError
        The loss became NaN/inf.
    """
    run_dir = Path(cfg.out_dir)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    prepare_run_dir(run_dir)
    if cfg.resume and not last_path.is_file():
        raise CheckpointError(f"nothing to resume: {last_path} does not exist")
    if not cfg.resume and last_path.exists():
        raise OutputExistsError(f"{run_dir} already holds a training run; use resume to continue "
                                "it or choose another output folder")
    sweep_partial_checkpoints(run_dir)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    if cfg.threads:
        # on a shared CPU, fewer intra-op threads avoid OpenMP spin-wait collapse
        torch.set_num_threads(cfg.threads)
    yield Message(f"loading data on {device.type}")
    init = read_checkpoint(cfg.init_checkpoint) if (cfg.init_checkpoint and not cfg.resume) else None
    init_pre = dict(init["preprocessing"]) if init is not None else {}
    if init is not None and init["task"] != cfg.task:
        from napari_histo.core.errors import ConfigError

        raise ConfigError(f"{Path(cfg.init_checkpoint).name} is a {init['task']} model; "
                          f"cannot fine-tune it for {cfg.task}")
    # fine-tuning keeps the base model's stain normalisation unless another is asked for
    data: DataBundle = build_data(cfg, arrays, stain=None if cfg.stain_norm else init_pre.get("stain"))
    if init is not None:
        for key in ("mpp", "mean", "std"):
            if data.preprocessing.get(key) is None and init_pre.get(key) is not None:
                data.preprocessing[key] = init_pre[key]
    if len(data.train) == 0:
        from napari_histo.core.errors import DataError

        raise DataError("the split left no training items; lower val_fraction or add data")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(run_dir / "config.yaml")
    n_cls = data.num_classes
    if init is not None:  # same architecture as the base model, head sized for these classes
        spec = {**dict(init["spec"]), "num_classes": n_cls}
    else:
        spec = make_spec(cfg.model, in_channels=3, num_classes=n_cls, **cfg.model_kwargs)
    model = build_model(spec)
    if init is not None:
        yield Message(_init_weights(model, init, Path(cfg.init_checkpoint).name))
    cuda = device.type == "cuda"
    use_cl = cuda and cfg.channels_last
    model.to(device)
    if use_cl:
        model.to(memory_format=torch.channels_last)
    amp_dtype: torch.dtype | None = None
    if cuda and cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    opt = _build_optimizer(cfg, model)
    sched = ProgressLR(opt, cfg.lr, cfg.scheduler)
    kind = cfg.loss if cfg.loss != "auto" else ("ce+dice" if cfg.task == "segment" else "ce")
    cw = torch.tensor(cfg.class_weights, dtype=torch.float32) if cfg.class_weights else None
    if cw is not None and cw.numel() != n_cls:
        from napari_histo.core.errors import ConfigError

        raise ConfigError(f"{cw.numel()} class weights given for {n_cls} classes")
    loss_fn = SegClsLoss(kind, n_cls, cw).to(device)
    loss_cpu = SegClsLoss(kind, n_cls, cw)
    aug = AugmentConfig() if cfg.augment else None
    maker = BatchMaker(data.train, data.preprocessing, aug, cfg.patch_size)
    val_maker = BatchMaker(data.val, data.preprocessing, None, cfg.patch_size) if cfg.task == "classify" else None
    balance = cfg.balance if cfg.balance is not None else cfg.task == "classify"
    train_labels = getattr(data.train, "labels", None) if cfg.task == "classify" else None

    history: list[dict[str, Any]] = []
    start_epoch, step, elapsed0 = 1, 0, 0.0
    best_score: tuple[float, float] = (-math.inf, -math.inf)
    since_best = 0
    if cfg.resume:
        ck = read_checkpoint(last_path)
        ex = ck.get("extra") or {}
        try:
            model.load_state_dict(ck["state_dict"])
            if "optimizer" in ex:
                opt.load_state_dict(ex["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{last_path} does not match this configuration: {err}") from err
        sched.load_state_dict(ex.get("scheduler", {}))
        start_epoch = int(ex.get("epoch", 0)) + 1
        step = int(ex.get("step", 0))
        elapsed0 = float(ex.get("elapsed_s", 0.0))
        history = list(ex.get("history", []))
        bs = ex.get("best_score", [-math.inf, -math.inf])
        best_score = (float(bs[0]), float(bs[1])) if isinstance(bs, (list, tuple)) else (float(bs), -math.inf)
        since_best = int(ex.get("since_best", 0))
        if "torch_rng" in ex:
            torch.set_rng_state(ex["torch_rng"])
        yield Message(f"resuming {run_dir.name} at epoch {start_epoch}")

    steps_per_epoch = len(epoch_indices(len(data.train), cfg.batch_size, np.random.default_rng(0),
                                        steps=cfg.steps_per_epoch))
    total_steps = max(1, steps_per_epoch * cfg.epochs)
    limit_s = cfg.time_limit_min * 60 if cfg.time_limit_min else None
    t0 = time.perf_counter() - elapsed0
    monitor = cfg.monitor_metric if len(data.val) else "train_loss"
    completed_epoch = start_epoch - 1
    stopped = "epochs"
    val_seconds = 0.0
    prefetch: Prefetcher | None = None
    preview_idx: list[int] = []
    if cfg.task == "classify" and len(data.val):  # a fixed mix of classes, up to 8 patches
        vl = np.asarray(data.val.labels)
        per = max(1, 8 // len(np.unique(vl)))
        for c in np.unique(vl):
            preview_idx += np.flatnonzero(vl == c)[:per].tolist()

    def ckpt_extra(epoch: int) -> dict[str, Any]:
        return {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                "step": step, "elapsed_s": time.perf_counter() - t0, "history": history,
                "best_score": list(best_score), "since_best": since_best,
                "torch_rng": torch.get_rng_state(), "config": cfg.to_dict(),
                "train_groups": data.train_groups, "val_groups": data.val_groups}

    def save(path: Path, metrics: dict[str, Any], epoch: int, resume_state: bool) -> Path:
        return save_checkpoint(path, model, spec=spec, task=cfg.task, class_names=data.class_names,
                               preprocessing=data.preprocessing, metrics=metrics,
                               extra=ckpt_extra(epoch) if resume_state else
                               {"epoch": epoch, "config": cfg.to_dict(), "val_groups": data.val_groups})

    n_train = (f"{len(data.train.samples)} training images ({len(data.train)} crops per epoch)"
               if cfg.task == "segment" else f"{len(data.train)} training patches")
    yield Message(f"{n_train} / {len(data.val)} validation items; validation groups "
                  f"val={data.val_groups[:10]}; model {cfg.model} ({sum(p.numel() for p in model.parameters()):,} "
                  "parameters)")
    finished = False
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            rng = np.random.default_rng((cfg.seed, epoch))
            batches = epoch_indices(len(data.train), cfg.batch_size, rng, labels=train_labels,
                                    balance=balance, steps=cfg.steps_per_epoch)

            model.train()
            if cfg.freeze_norm:
                freeze_norm_statistics(model)
            acc = MetricAccumulator(n_cls)
            epoch_batches = EpochBatches(batches, maker, cfg.seed, epoch)
            if cfg.num_workers > 0:
                loader: Any = worker_loader(epoch_batches, cfg.num_workers)
            else:
                prefetch = Prefetcher(range(len(batches)), epoch_batches.__getitem__)
                loader = prefetch
            out_of_time = False
            for i, batch in enumerate(loader):
                x = batch["x"].to(device, non_blocking=True)
                if use_cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = batch["y"].to(device, non_blocking=True)
                w = batch["w"].to(device, non_blocking=True) if "w" in batch else None
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                    enabled=amp_dtype is not None):
                    logits = model(x)
                    loss = loss_fn(logits, y, w)
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise TrainingError(
                        f"the loss became {lv} at epoch {epoch}, batch {i + 1}: training diverged. "
                        f"Lower the learning rate (now {cfg.lr:g}) or check the data for "
                        "corrupt images; the last good checkpoint is kept")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                step += 1
                elapsed = time.perf_counter() - t0
                frac = step / total_steps
                if limit_s:
                    frac = max(frac, elapsed / max(1.0, limit_s - val_seconds - 5))
                lr = sched.set_progress(frac)
                if cfg.task == "classify":  # cheap for (N, C) logits: train ROC too
                    acc.update(torch.softmax(logits.detach().float(), 1), y, lv, n=x.shape[0])
                else:
                    acc.update(logits.detach(), y, lv, n=x.shape[0], with_roc=False)
                yield Progress(i + 1, len(batches), "train",
                               {"epoch": float(epoch), "loss": lv, "lr": lr})
                if limit_s and elapsed + val_seconds + 5 >= limit_s:
                    out_of_time = True
                    break
            if prefetch is not None:
                prefetch.close()
                prefetch = None
            del loader
            metrics: dict[str, Any] = {"epoch": epoch}
            metrics.update(acc.result("train"))
            vt = time.perf_counter()
            val_acc = None
            first_prob = None
            val_probs = None
            if len(data.val):
                if cfg.task == "segment":
                    val_acc, first_prob = yield from validate_segmentation(
                        model, data.val, data.preprocessing, device, loss_cpu if not cuda else loss_fn,
                        n_cls, max(cfg.val_tile, cfg.patch_size), amp_dtype=amp_dtype,
                        channels_last=use_cl)
                else:
                    val_acc, val_probs = yield from validate_classification(
                        model, data.val, val_maker, cfg.batch_size, device, loss_fn, n_cls,
                        amp_dtype=amp_dtype, channels_last=use_cl)
                metrics.update(val_acc.result("val"))
            val_seconds = time.perf_counter() - vt
            metrics["lr"] = sched.lr_at(sched.progress)
            metrics["elapsed_s"] = time.perf_counter() - t0
            score = _monitor_value(metrics, monitor)
            improved = score > best_score
            metrics["is_best"] = bool(improved)
            history.append(metrics)
            completed_epoch = epoch
            if improved:
                best_score, since_best = score, 0
                save(best_path, metrics, epoch, resume_state=False)
            else:
                since_best += 1
            save(last_path, metrics, epoch, resume_state=True)
            _write_reports(run_dir, cfg, data, history, epoch, val_acc, improved, first_prob,
                           val_probs, preview_idx)
            yield EpochEnd(epoch, {k: float(v) for k, v in metrics.items()
                                   if isinstance(v, (int, float)) and not isinstance(v, bool)},
                           str(best_path if best_path.exists() else last_path))
            if out_of_time or (limit_s and time.perf_counter() - t0 >= limit_s - 5):
                stopped = "time_limit"
                yield Message(f"time limit of {cfg.time_limit_min:g} min reached after epoch {epoch}")
                break
            if sched.progress >= 1.0 and epoch < cfg.epochs and cfg.scheduler != "none" and limit_s:
                stopped = "time_limit"
                break
            if cfg.early_stopping_patience and since_best >= cfg.early_stopping_patience:
                stopped = "early_stopping"
                yield Message(f"early stopping: {monitor} did not improve for {since_best} epochs")
                break
        finished = True
    except (GeneratorExit, KeyboardInterrupt):
        # cancelled between batches: keep what was learnt, resumable from the last full epoch
        save(last_path, history[-1] if history else {}, completed_epoch, resume_state=True)
        raise
    finally:
        if prefetch is not None:
            prefetch.close()
    assert finished
    if not best_path.exists():
        save(best_path, history[-1] if history else {}, completed_epoch, resume_state=False)
    return TrainResult(run_dir, best_path, last_path, history, stopped)


def _write_reports(run_dir: Path, cfg: TrainConfig, data: DataBundle, history: list[dict[str, Any]],
                   epoch: int, val_acc: MetricAccumulator | None, improved: bool,
                   first_prob: np.ndarray | None, val_probs: np.ndarray | None,
                   preview_idx: list[int]) -> None:
    """metrics.csv/json, curves every epoch; ROC + confusion for the best epoch; preview."""
    reports.write_metrics(run_dir, history)
    reports.plot_curves(run_dir, history, cfg.task)
    if val_acc is not None and improved:
        fpr, tpr = val_acc.roc()
        auc = history[-1].get("val_auc", float("nan"))
        pos = data.class_names[-1] if data.num_classes == 2 else "non-" + data.class_names[0]
        reports.plot_roc(run_dir / "plots" / "roc.png", fpr, tpr, float(auc),
                         f"Validation ROC ({pos}), epoch {epoch}")
        reports.plot_confusion(run_dir / "plots" / "confusion.png", val_acc.cm, data.class_names,
                               f"Validation confusion, epoch {epoch}")
    if not cfg.preview:
        return
    prev = run_dir / "previews" / f"epoch_{epoch:03d}.png"
    if cfg.task == "segment" and first_prob is not None:
        s = data.val[0]
        step = max(1, int(math.ceil(max(s.labels.shape) / 768)))
        reports.plot_seg_preview(prev, s.image[::step, ::step], s.labels[::step, ::step],
                                 first_prob[::step, ::step], epoch, history[-1].get("val_dice"))
    elif cfg.task == "classify" and val_probs is not None and preview_idx:
        imgs, labs = data.val.get_batch(preview_idx, None)
        reports.plot_cls_preview(prev, list(imgs.numpy()), labs.tolist(),
                                 [float(val_probs[i]) for i in preview_idx], data.class_names, epoch)
