"""The training loop as a generator: ``train(cfg) -> Task[TrainResult]``.

It yields ``Progress`` per batch ("train"/"val") and ``EpochEnd`` per epoch, writes the run
folder (checkpoints, metrics, plots) as it goes, and can be cancelled between batches with
``gen.close()`` (or Ctrl-C), which still leaves a loadable ``last.pt`` for ``resume``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_histo.core.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    HistoError,
    OutputExistsError,
)
from napari_histo.core.progress import EpochEnd, Message, Progress, Task
from napari_histo.engine.checkpoints import read_checkpoint, save_checkpoint
from napari_histo.engine.datasets import ArraySample
from napari_histo.engine.devices import avoid_triton_llvm_clash, resolve_device, seed_everything
from napari_histo.engine.metrics import MetricAccumulator
from napari_histo.engine.models import (
    EXTERNAL_WEIGHT_KEYS,
    build_model,
    make_spec,
    supports_pretrained,
    weights_info,
)
from napari_histo.engine.training import ddp, reports
from napari_histo.engine.training.config import TrainConfig
from napari_histo.engine.training.data import DataBundle, build_data
from napari_histo.engine.training.ddp import DistContext
from napari_histo.engine.training.losses import SegClsLoss
from napari_histo.engine.training.pipeline import (
    BatchMaker,
    EpochBatches,
    Prefetcher,
    epoch_indices,
    worker_loader,
)
from napari_histo.engine.training.schedule import ProgressLR, run_progress, should_stop_early
from napari_histo.engine.training.validate import validate_classification, validate_segmentation
from napari_histo.engine.transforms import AugmentConfig
from napari_histo.engine.uncertainty import metric_cis, validation_warnings


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
    #: warnings about the validation set (too few positives, one group), also in summary.json
    warnings: list[str] = field(default_factory=list)
    #: how the best checkpoint was picked (raw, smoothed, ema)
    selection: str = "raw"

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


#: what ``selection="auto"`` means, chosen by measurement (benchmarks/bench_selection.py,
#: held-out test groups, mean of 3-5 seeds): GlaS test Dice raw 0.722 / smoothed 0.735 /
#: val-loss 0.712 / EMA weights 0.739; CAMELYON16 test AUC 0.982 / 0.982 / 1.000 / 1.000
DEFAULT_SELECTION = "ema"
#: weight of the newest epoch in the smoothed validation metric (selection "smoothed")
SMOOTHING = 0.5


def resolve_selection(cfg: TrainConfig) -> str:
    """raw | smoothed | ema for this run ("auto" = :data:`DEFAULT_SELECTION`)."""
    return DEFAULT_SELECTION if cfg.selection == "auto" else cfg.selection


def _ema_decay(steps_per_epoch: int) -> float:
    """Per-step decay of the weight EMA: a half-life of about half an epoch, never below 0.9."""
    return float(min(0.999, max(0.9, 1.0 - 1.4 / max(1, steps_per_epoch))))


def make_weight_ema(model: torch.nn.Module, decay: float) -> Any:
    """An ``AveragedModel`` keeping an exponential moving average of weights and BN buffers
    (warm-up: the decay grows from 0.1 so the first steps are not dominated by the init)."""
    from torch.optim.swa_utils import AveragedModel

    @torch.no_grad()
    def ema_all(avg: Sequence[torch.Tensor], cur: Sequence[torch.Tensor],
                n: torch.Tensor | int) -> None:
        k = float(n)
        d = min(decay, (1.0 + k) / (10.0 + k))
        floats = [(a, c) for a, c in zip(avg, cur, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - d)
        for a, c in zip(avg, cur, strict=True):
            if not a.is_floating_point():
                a.copy_(c)

    return AveragedModel(model, multi_avg_fn=ema_all, use_buffers=True)


def _smoothed(history: list[dict[str, Any]], name: str, value: tuple[float, float]) -> tuple[float, float]:
    """EMA over epochs of the primary monitor value (NaN epochs skipped)."""
    prev = next((h.get(f"{name}_smoothed") for h in reversed(history)
                 if isinstance(h.get(f"{name}_smoothed"), float)), None)
    if not math.isfinite(value[0]) or prev is None or not math.isfinite(prev):
        return value
    sign = -1.0 if name.endswith("loss") else 1.0
    return (SMOOTHING * value[0] + (1 - SMOOTHING) * sign * prev, value[1])


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


def _build_network(cfg: TrainConfig, init: dict[str, Any] | None, n_cls: int, data: DataBundle,
                   run_dir: Path, write: bool = True) -> Any:
    """(spec to record, network, weights origin); sets the input normalisation they expect.

    The network starts from ``init`` (a checkpoint to fine-tune), from pretrained weights
    (``cfg.pretrained``: torchvision/timm cache; ``cfg.weights``: a local file) or at random.
    ``data.preprocessing`` mean/std become what those weights were trained with, so the
    checkpoint makes inference normalise the same way. The recorded spec never names a file;
    ``pretrained`` in it says whether external weights were really loaded. The origin and
    normalisation are kept in ``weights_origin.json``: a resumed run reads them there instead
    of fetching the pretrained weights again (its weights come from ``last.pt``).
    """
    import json

    record = run_dir / "weights_origin.json"
    if init is not None:  # same architecture as the base model, head sized for these classes
        spec = {**dict(init["spec"]), "num_classes": n_cls}
        model = build_model(spec)
        name = Path(str(cfg.init_checkpoint)).name
        yield Message(_init_weights(model, init, name))
        origin: dict[str, Any] = {"kind": "checkpoint", "name": name}
        if init.get("weights_origin"):
            origin["base"] = {k: v for k, v in init["weights_origin"].items()
                              if not isinstance(v, dict)}
        info: dict[str, Any] = {"mean": init["preprocessing"].get("mean"),
                                "std": init["preprocessing"].get("std")}
    else:
        kw = dict(cfg.model_kwargs)
        if cfg.pretrained:
            kw["pretrained"] = True
        if cfg.weights:
            kw["weights"] = cfg.weights
        full = make_spec(cfg.model, in_channels=3, num_classes=n_cls, **kw)
        saved = None
        if cfg.resume and record.is_file():
            with contextlib.suppress(OSError, ValueError):
                saved = json.loads(record.read_text(encoding="utf-8"))
        if isinstance(saved, dict) and isinstance(saved.get("origin"), dict):
            model = build_model(full, external_weights=False)
            info = saved
        else:
            model = build_model(full)
            info = weights_info(model)
        origin = dict(info.get("origin") or {"kind": "none"})
        spec = {k: v for k, v in full.items() if k not in EXTERNAL_WEIGHT_KEYS}
        if supports_pretrained(cfg.model):
            spec["pretrained"] = origin.get("kind", "none") != "none"
        if origin.get("kind") == "file" and not cfg.resume:
            yield Message(f"starting from weights file {origin.get('name')} (sha256 "
                          f"{str(origin.get('sha256'))[:12]}, {origin.get('tensors_loaded')}/"
                          f"{origin.get('tensors_total')} tensors)")
        elif origin.get("kind") == "hub" and not cfg.resume:
            yield Message(f"starting from pretrained weights {origin.get('id')}")
    mean, std = info.get("mean"), info.get("std")
    if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
        data.preprocessing["mean"] = [float(v) for v in mean]
        data.preprocessing["std"] = [float(v) for v in std]
    if write:  # rank 0 of a distributed run
        record.write_text(json.dumps({"origin": origin, "mean": data.preprocessing["mean"],
                                      "std": data.preprocessing["std"]}, indent=1),
                          encoding="utf-8")
    return spec, model, origin


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


def train(cfg: TrainConfig, *, arrays: list[ArraySample] | None = None,
          dist: DistContext | None = None) -> Task[TrainResult]:
    """Train a model as described by ``cfg``; yields progress events, returns a TrainResult.

    ``dist`` (:func:`ddp.from_env` under torchrun or ``train --nproc``) makes this process
    one rank of a distributed data-parallel run (see :mod:`.ddp`): every rank calls
    ``train`` with the same config; rank 0 writes the run folder and reports.

    The steps: check the run folder (:func:`_check_output`), seed torch
    (:func:`_set_up_torch`), load the data (:func:`_load_data`), build the network,
    optimiser and losses (:func:`_set_up`), restore a resumed run (:func:`_restore`), then
    per epoch train (:func:`_train_epoch`), validate (:func:`_validate_epoch`), keep the
    best and last checkpoints (:func:`_keep_checkpoints`), write the reports and decide
    whether to stop (:func:`_stop_reason`); :func:`_finish` writes the summary.

    Raises
    ------
    DataError, ConfigError, CheckpointError, OutputExistsError
        Bad data or options (raised before any training step).
    TrainingError
        The loss became NaN/inf.
    """
    run_dir = Path(cfg.out_dir)
    ctx = dist or DistContext()
    ddp.check_batch(ctx, cfg.batch)
    _check_output(cfg, run_dir, sweep=ctx.is_main)
    device = _set_up_torch(cfg, ctx)
    with ddp.process_group(ctx, device):
        return (yield from _train_run(cfg, arrays, ctx, device, run_dir))


def _train_run(cfg: TrainConfig, arrays: list[ArraySample] | None, ctx: DistContext,
               device: torch.device, run_dir: Path) -> Task[TrainResult]:
    """The body of :func:`train` once the device (and process group) is set up."""
    where = f"{device.type}, {ctx.world_size} processes" if ctx.active else device.type
    yield Message(f"loading data on {where}")
    data, init = _load_data(cfg, arrays)
    run_dir.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        cfg.to_yaml(run_dir / "config.yaml")
    val_item_groups = _val_groups(data)
    warned = _validation_warnings(cfg, data, val_item_groups)
    for text in warned:
        yield Message(text, level="warning")
    run = yield from _set_up(cfg, data, init, device, run_dir, val_item_groups, ctx)
    if cfg.resume:
        _restore(run)
        yield Message(f"resuming {run_dir.name} at epoch {run.start_epoch}")

    max_epochs = cfg.max_epochs  # None: paced by the time limit alone (schedule spans it)
    total_steps = max(1, run.steps_per_epoch * max_epochs) if max_epochs else None
    limit_s = cfg.time_limit_min * 60 if cfg.time_limit_min else None
    run.t0 = time.perf_counter() - run.elapsed0
    monitor = cfg.monitor_metric if len(data.val) else "train_loss"
    run.completed_epoch = run.start_epoch - 1
    stopped = "epochs"
    preview_idx = _preview_indices(cfg, data)
    yield Message(_describe(run))
    finished = False
    try:
        for epoch in (range(run.start_epoch, max_epochs + 1) if max_epochs
                      else itertools.count(run.start_epoch)):
            acc, out_of_time = yield from _train_epoch(run, epoch, total_steps, limit_s)
            reason = None
            if ctx.is_main:  # validation, checkpoints, reports: rank 0 alone
                metrics, val_acc, first_prob, val_probs = yield from _validate_epoch(
                    run, epoch, acc)
                improved = _keep_checkpoints(run, epoch, metrics, monitor, val_acc)
                _write_reports(run_dir, cfg, data, run.history, epoch, val_acc, improved,
                               first_prob, val_probs, preview_idx)
                yield EpochEnd(epoch, reports.flat_metrics(metrics),
                               str(run.best_path if run.best_path.exists() else run.last_path))
                reason = yield from _stop_reason(run, epoch, metrics, monitor, out_of_time,
                                                 limit_s, max_epochs)
            if ctx.active:  # every rank follows rank 0's decision (and clock)
                reason = _follow_main(run, epoch, reason)
            if reason is not None:
                stopped = reason
                break
        finished = True
    except (GeneratorExit, KeyboardInterrupt):
        # cancelled between batches: keep what was learnt, resumable from the last full epoch
        if ctx.is_main:
            run.save(run.last_path, run.history[-1] if run.history else {},
                     run.completed_epoch, resume_state=True)
        raise
    finally:
        if run.prefetch is not None:
            run.prefetch.close()
    assert finished
    return _finish(run, stopped, warned, monitor)


@dataclass(eq=False)
class _Run:
    """One training run: what :func:`_set_up` builds once, and the progress it makes."""

    cfg: TrainConfig
    data: DataBundle
    run_dir: Path
    device: torch.device
    spec: dict[str, Any]
    model: torch.nn.Module
    weights_origin: Any
    #: the weights validated and saved as best (the EMA's when selection is "ema")
    eval_model: torch.nn.Module
    ema: Any
    opt: torch.optim.Optimizer
    sched: ProgressLR
    scaler: Any
    loss_fn: SegClsLoss
    loss_cpu: SegClsLoss
    maker: BatchMaker
    val_maker: BatchMaker | None
    amp_dtype: torch.dtype | None
    use_cl: bool
    steps_per_epoch: int
    balance: bool
    train_labels: Any
    selection: str
    val_item_groups: list[str]
    # ---- progress (restored by _restore on resume)
    start_epoch: int = 1
    step: int = 0
    elapsed0: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: tuple[float, float] = (-math.inf, -math.inf)
    since_best: int = 0
    t0: float = 0.0
    val_seconds: float = 0.0
    completed_epoch: int = 0
    prefetch: Prefetcher | None = None
    #: this process's rank in a distributed run (rank 0 of 1 otherwise)
    dist: DistContext = field(default_factory=DistContext)
    #: what the forward pass calls: DistributedDataParallel around ``model`` when distributed
    net: torch.nn.Module | None = None

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    def ckpt_extra(self, epoch: int) -> dict[str, Any]:
        """What ``last.pt`` carries to resume: optimiser, schedule, progress, RNG, EMA."""
        ema = self.ema
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "epoch": epoch, "step": self.step, "elapsed_s": time.perf_counter() - self.t0,
                "history": self.history, "best_score": list(self.best_score),
                "since_best": self.since_best, "torch_rng": torch.get_rng_state(),
                "config": self.cfg.to_dict(), "train_groups": self.data.train_groups,
                "val_groups": self.data.val_groups,
                **({"ema_state": {k: v.detach().cpu() for k, v in ema.module.state_dict().items()},
                    "ema_n": int(ema.n_averaged)} if ema is not None else {})}

    def save(self, path: Path, metrics: dict[str, Any], epoch: int, resume_state: bool) -> Path:
        """last.pt: the trained weights (+ their EMA to resume); best.pt: the weights validated."""
        cfg, data = self.cfg, self.data
        return save_checkpoint(path, self.model if resume_state else self.eval_model,
                               spec=self.spec, task=cfg.task, class_names=data.class_names,
                               preprocessing=data.preprocessing, metrics=metrics,
                               weights_origin=self.weights_origin,
                               extra=self.ckpt_extra(epoch) if resume_state else
                               {"epoch": epoch, "config": cfg.to_dict(),
                                "val_groups": data.val_groups})


def _check_output(cfg: TrainConfig, run_dir: Path, sweep: bool = True) -> None:
    """The run folder can hold this run (new, or one to resume); leftovers swept (``sweep``:
    by rank 0 alone in a distributed run)."""
    last_path = run_dir / "last.pt"
    prepare_run_dir(run_dir)
    if cfg.resume and not last_path.is_file():
        raise CheckpointError(f"nothing to resume: {last_path} does not exist")
    if not cfg.resume and last_path.exists():
        raise OutputExistsError(f"{run_dir} already holds a training run; use resume to continue "
                                "it or choose another output folder")
    if sweep:
        sweep_partial_checkpoints(run_dir)


def _set_up_torch(cfg: TrainConfig, ctx: DistContext) -> torch.device:
    """The device (cuda:LOCAL_RANK for a rank of a CUDA run), seeded RNGs and the thread
    count of this run."""
    device = ddp.rank_device(ctx, resolve_device(cfg.device))
    seed_everything(cfg.seed)
    if cfg.threads:
        # on a shared CPU, fewer intra-op threads avoid OpenMP spin-wait collapse
        torch.set_num_threads(cfg.threads)
    return device


def _load_data(cfg: TrainConfig, arrays: list[ArraySample] | None,
               ) -> tuple[DataBundle, dict[str, Any] | None]:
    """The training data, and the checkpoint to fine-tune (None when training afresh)."""
    init = read_checkpoint(cfg.init_checkpoint) if (cfg.init_checkpoint and not cfg.resume) else None
    init_pre = dict(init["preprocessing"]) if init is not None else {}
    if init is not None and init["task"] != cfg.task:
        raise ConfigError(f"{Path(str(cfg.init_checkpoint)).name} is a {init['task']} model; "
                          f"cannot fine-tune it for {cfg.task}")
    # fine-tuning keeps the base model's stain normalisation unless another is asked for
    data: DataBundle = build_data(cfg, arrays, stain=None if cfg.stain_norm else init_pre.get("stain"))
    if init is not None:
        for key in ("mpp", "mean", "std"):
            if data.preprocessing.get(key) is None and init_pre.get(key) is not None:
                data.preprocessing[key] = init_pre[key]
    if len(data.train) == 0:
        raise DataError("the split left no training items; lower val_fraction or add data")
    return data, init


def _set_up(cfg: TrainConfig, data: DataBundle, init: dict[str, Any] | None,
            device: torch.device, run_dir: Path, val_item_groups: list[str],
            ctx: DistContext) -> Task[_Run]:
    """Network, weight EMA, optimiser, schedule, losses and batch makers of a run."""
    selection = resolve_selection(cfg)
    n_cls = data.num_classes
    spec, model, weights_origin = yield from _build_network(cfg, init, n_cls, data, run_dir,
                                                            write=ctx.is_main)
    cuda = device.type == "cuda"
    use_cl = cuda and cfg.channels_last
    model.to(device)
    if use_cl:
        model.to(memory_format=torch.channels_last)
    model, net = ddp.wrap_model(model, ctx, device)
    amp_dtype: torch.dtype | None = None
    if cuda and cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    steps_per_epoch = len(epoch_indices(len(data.train), cfg.batch, np.random.default_rng(0),
                                        steps=cfg.steps_per_epoch))
    ema = make_weight_ema(model, _ema_decay(steps_per_epoch)) if selection == "ema" else None
    eval_model: torch.nn.Module = ema.module if ema is not None else model
    opt = _build_optimizer(cfg, model)
    sched = ProgressLR(opt, cfg.lr, cfg.scheduler)
    kind = cfg.loss if cfg.loss != "auto" else ("ce+dice" if cfg.task == "segment" else "ce")
    cw = torch.tensor(cfg.class_weights, dtype=torch.float32) if cfg.class_weights else None
    if cw is not None and cw.numel() != n_cls:
        raise ConfigError(f"{cw.numel()} class weights given for {n_cls} classes")
    loss_fn = SegClsLoss(kind, n_cls, cw).to(device)
    loss_cpu = SegClsLoss(kind, n_cls, cw)
    aug = AugmentConfig.with_stain(cfg.stain_augment) if cfg.augment else None
    maker = BatchMaker(data.train, data.preprocessing, aug, cfg.patch)
    val_maker = BatchMaker(data.val, data.preprocessing, None, cfg.patch) if cfg.task == "classify" else None
    balance = cfg.balance if cfg.balance is not None else cfg.task == "classify"
    train_labels = getattr(data.train, "labels", None) if cfg.task == "classify" else None
    return _Run(cfg=cfg, data=data, run_dir=run_dir, device=device, spec=spec, model=model,
                weights_origin=weights_origin, eval_model=eval_model, ema=ema, opt=opt,
                sched=sched, scaler=scaler, loss_fn=loss_fn, loss_cpu=loss_cpu, maker=maker,
                val_maker=val_maker, amp_dtype=amp_dtype, use_cl=use_cl,
                steps_per_epoch=steps_per_epoch, balance=balance, train_labels=train_labels,
                selection=selection, val_item_groups=val_item_groups, dist=ctx, net=net)


def _restore(run: _Run) -> None:
    """Weights, optimiser, EMA, schedule, progress and RNG of the run in ``last.pt``."""
    ck = read_checkpoint(run.last_path)
    ex = ck.get("extra") or {}
    try:
        run.model.load_state_dict(ck["state_dict"])
        if "optimizer" in ex:
            run.opt.load_state_dict(ex["optimizer"])
        if run.ema is not None and "ema_state" in ex:
            run.ema.module.load_state_dict(ex["ema_state"])
            run.ema.n_averaged.fill_(int(ex.get("ema_n", 1)))
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{run.last_path} does not match this configuration: {err}") from err
    run.sched.load_state_dict(ex.get("scheduler", {}))
    run.start_epoch = int(ex.get("epoch", 0)) + 1
    run.step = int(ex.get("step", 0))
    run.elapsed0 = float(ex.get("elapsed_s", 0.0))
    run.history = list(ex.get("history", []))
    bs = ex.get("best_score", [-math.inf, -math.inf])
    run.best_score = (float(bs[0]), float(bs[1])) if isinstance(bs, (list, tuple)) else (float(bs), -math.inf)
    run.since_best = int(ex.get("since_best", 0))
    if "torch_rng" in ex:
        torch.set_rng_state(ex["torch_rng"])


def _preview_indices(cfg: TrainConfig, data: DataBundle) -> list[int]:
    """Validation patches shown in the per-epoch preview: a fixed mix of classes, up to 8."""
    preview_idx: list[int] = []
    if cfg.task == "classify" and len(data.val):
        vl = np.asarray(data.val.labels)
        per = max(1, 8 // len(np.unique(vl)))
        for c in np.unique(vl):
            preview_idx += np.flatnonzero(vl == c)[:per].tolist()
    return preview_idx


def _describe(run: _Run) -> str:
    """One line: the training and validation items and the model's size."""
    cfg, data = run.cfg, run.data
    n_train = (f"{len(data.train.samples)} training images ({len(data.train)} crops per epoch)"
               if cfg.task == "segment" else f"{len(data.train)} training patches")
    return (f"{n_train} / {len(data.val)} validation items; validation groups "
            f"val={data.val_groups[:10]}; model {cfg.model} "
            f"({sum(p.numel() for p in run.model.parameters()):,} parameters)")


def _train_epoch(run: _Run, epoch: int, total_steps: int | None, limit_s: float | None,
                 ) -> Task[tuple[MetricAccumulator, bool]]:
    """One epoch of optimiser steps; returns the training metrics and whether time ran out."""
    cfg, data = run.cfg, run.data
    rng = np.random.default_rng((cfg.seed, epoch))
    batches = epoch_indices(len(data.train), cfg.batch, rng, labels=run.train_labels,
                            balance=run.balance, steps=cfg.steps_per_epoch)
    batches = [ddp.shard(b, run.dist) for b in batches]  # same list on every rank
    run.model.train()
    if cfg.freeze_norm:
        freeze_norm_statistics(run.model)
    acc = MetricAccumulator(data.num_classes)
    epoch_batches = EpochBatches(batches, run.maker, cfg.seed, epoch,
                                 stream=ddp.seed_offset(run.dist))
    if cfg.num_workers > 0:
        loader: Any = worker_loader(epoch_batches, cfg.num_workers)
    else:
        run.prefetch = Prefetcher(range(len(batches)), epoch_batches.__getitem__)
        loader = run.prefetch
    out_of_time = False
    for i, batch in enumerate(loader):
        logits, y, lv, n = _train_step(run, batch, epoch, i)
        run.step += 1
        ddp.kill_hook(run.dist, run.step)
        elapsed = time.perf_counter() - run.t0
        if limit_s:  # rank 0's clock: the same schedule and last step on every rank
            elapsed = ddp.shared_clock(run.dist, elapsed)
        lr = run.sched.set_progress(run_progress(run.step, total_steps, elapsed, limit_s,
                                                 reserve_s=run.val_seconds + 5))
        if cfg.task == "classify":  # cheap for (N, C) logits: train ROC too
            acc.update(torch.softmax(logits.detach().float(), 1), y, lv, n=n)
        else:
            acc.update(logits.detach(), y, lv, n=n, with_roc=False)
        yield Progress(i + 1, len(batches), "train",
                       {"epoch": float(epoch), "loss": lv, "lr": lr})
        if limit_s and elapsed + run.val_seconds + 5 >= limit_s:
            out_of_time = True
            break
    if run.prefetch is not None:
        run.prefetch.close()
        run.prefetch = None
    del loader
    return ddp.gather_accumulator(run.dist, acc), out_of_time


def _train_step(run: _Run, batch: dict[str, Any], epoch: int, i: int,
                ) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Forward, loss, backward and optimiser (+ EMA) step on one batch.

    Returns the logits, the targets, the loss value and the batch size.
    """
    cfg, device = run.cfg, run.device
    x = batch["x"].to(device, non_blocking=True)
    if run.use_cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = batch["y"].to(device, non_blocking=True)
    w = batch["w"].to(device, non_blocking=True) if "w" in batch else None
    with torch.autocast(device.type, dtype=run.amp_dtype or torch.float32,
                        enabled=run.amp_dtype is not None):
        logits = (run.net or run.model)(x)
        loss = run.loss_fn(logits, y, w)
    lv = float(loss.detach())
    if not math.isfinite(lv):
        raise TrainingError(
            f"the loss became {lv} at epoch {epoch}, batch {i + 1}: training diverged. "
            f"Lower the learning rate (now {cfg.lr:g}) or check the data for "
            "corrupt images; the last good checkpoint is kept")
    run.opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if cfg.grad_clip:
        run.scaler.unscale_(run.opt)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.scaler.step(run.opt)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    return logits, y, lv, int(x.shape[0])


def _validate_epoch(run: _Run, epoch: int, acc: MetricAccumulator) -> Task[
        tuple[dict[str, Any], MetricAccumulator | None, np.ndarray | None, np.ndarray | None]]:
    """The epoch's metrics: training, validation (with 95 % intervals), lr and elapsed time.

    Returns the metrics, the validation accumulator (None without validation) and what the
    preview shows: the first validation image's probability (segment) or every validation
    patch's probability (classify).
    """
    cfg, data = run.cfg, run.data
    metrics: dict[str, Any] = {"epoch": epoch}
    metrics.update(acc.result("train"))
    vt = time.perf_counter()
    val_acc = None
    first_prob = None
    val_probs = None
    if len(data.val):
        if cfg.task == "segment":
            val_acc, first_prob = yield from validate_segmentation(
                run.eval_model, data.val, data.preprocessing, run.device,
                run.loss_cpu if run.device.type != "cuda" else run.loss_fn,
                data.num_classes, max(cfg.val_tile, cfg.patch), amp_dtype=run.amp_dtype,
                channels_last=run.use_cl)
        else:
            val_acc, val_probs = yield from validate_classification(
                run.eval_model, data.val, run.val_maker, cfg.batch, run.device,
                run.loss_fn, data.num_classes, amp_dtype=run.amp_dtype,
                channels_last=run.use_cl)
        metrics.update(val_acc.result("val"))
        metrics.update(metric_cis(val_acc, run.val_item_groups, "val", seed=cfg.seed))
    run.val_seconds = time.perf_counter() - vt
    metrics["lr"] = run.sched.lr_at(run.sched.progress)
    metrics["elapsed_s"] = time.perf_counter() - run.t0
    return metrics, val_acc, first_prob, val_probs


def _keep_checkpoints(run: _Run, epoch: int, metrics: dict[str, Any], monitor: str,
                      val_acc: MetricAccumulator | None) -> bool:
    """Score the epoch, record it, save ``best.pt`` when it improved and ``last.pt`` always.

    Returns whether the epoch is the new best.
    """
    score = _monitor_value(metrics, monitor)
    if run.selection == "smoothed" and len(run.data.val):
        score = _smoothed(run.history, monitor, score)
        if math.isfinite(score[0]):
            metrics[f"{monitor}_smoothed"] = -score[0] if monitor.endswith("loss") else score[0]
    improved = score > run.best_score
    metrics["is_best"] = bool(improved)
    run.history.append(metrics)
    run.completed_epoch = epoch
    if improved:
        run.best_score, run.since_best = score, 0
        run.save(run.best_path, metrics, epoch, resume_state=False)
        if val_acc is not None:
            reports.write_val_predictions(run.run_dir, val_acc, run.val_item_groups)
    else:
        run.since_best += 1
    run.save(run.last_path, metrics, epoch, resume_state=True)
    return bool(improved)


def _stop_reason(run: _Run, epoch: int, metrics: dict[str, Any], monitor: str,
                 out_of_time: bool, limit_s: float | None, max_epochs: int | None,
                 ) -> Task[str | None]:
    """"time_limit" or "early_stopping" when the run stops after ``epoch``, else None."""
    cfg = run.cfg
    if out_of_time or (limit_s and time.perf_counter() - run.t0 >= limit_s - 5):
        yield Message(f"time limit of {cfg.time_limit_min:g} min reached after epoch {epoch}")
        return "time_limit"
    if run.sched.progress >= 1.0 and (max_epochs is None or epoch < max_epochs) \
            and cfg.scheduler != "none" and limit_s:
        return "time_limit"
    best_t = max((float(h.get("elapsed_s", 0.0)) for h in run.history if h.get("is_best")),
                 default=0.0)
    if should_stop_early(run.since_best, cfg.early_stopping_patience, progress=run.sched.progress,
                         limit_s=limit_s, since_best_s=metrics["elapsed_s"] - best_t,
                         time_paced=max_epochs is None):
        yield Message(f"early stopping: {monitor} did not improve for {run.since_best} epochs")
        return "early_stopping"
    return None


def _follow_main(run: _Run, epoch: int, reason: str | None) -> str | None:
    """Rank 0's epoch outcome on every rank: its metrics, stop reason and validation time
    (ranks > 0 waited for them, so they stop together and keep the same schedule)."""
    metrics = run.history[-1] if run.dist.is_main and run.history else None
    metrics, reason, run.val_seconds = ddp.broadcast(
        run.dist, (metrics, reason, run.val_seconds), "the end of the epoch")
    if not run.dist.is_main:
        run.history.append(dict(metrics or {}))
        run.completed_epoch = epoch
    return reason


def _finish(run: _Run, stopped: str, warned: list[str], monitor: str) -> TrainResult:
    """``best.pt`` exists (the last epoch's weights when none was scored), summary written
    (by rank 0 alone in a distributed run)."""
    data = run.data
    if not run.dist.is_main:
        return TrainResult(run.run_dir, run.best_path, run.last_path, run.history, stopped,
                           warned, run.selection)
    if not run.best_path.exists():
        run.save(run.best_path, run.history[-1] if run.history else {}, run.completed_epoch,
                 resume_state=False)
    result = TrainResult(run.run_dir, run.best_path, run.last_path, run.history, stopped, warned,
                         run.selection)
    reports.write_summary(run.run_dir, {
        "stopped": stopped, "selection": run.selection, "monitor": monitor,
        "best_epoch": result.best_metrics.get("epoch"), "best": result.best_metrics,
        "validation_items": len(data.val), "validation_groups": data.val_groups,
        "warnings": warned, "checkpoint": str(run.best_path)})
    return result


def _val_groups(data: DataBundle) -> list[str]:
    """The group of every validation item (image or patch), for the cluster bootstrap."""
    if data.task == "segment":
        return [str(s.group) for s in data.val]
    return [str(g) for g in getattr(data.val, "groups", [])] if len(data.val) else []


def _validation_warnings(cfg: TrainConfig, data: DataBundle, groups: list[str]) -> list[str]:
    """Warnings when validation is too small to pick a checkpoint or report a score on."""
    if not len(data.val):
        return []
    if data.task == "classify":
        n_pos = int((np.asarray(data.val.labels) > 0).sum())
        unit = "positive patches"
    else:  # images with any foreground pixel
        n_pos = sum(int(((s.labels > 0) & (s.labels != 255)).any()) for s in data.val)
        unit = "validation images with foreground"
    return validation_warnings(n_pos, groups, unit=unit, folds_hint=not cfg.folds)


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
                         f"Validation ROC ({pos}), epoch {epoch}", history[-1].get("val_auc_ci"))
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
