"""``napari-histo train``: train a segmentation U-Net or a patch classifier from the terminal.

Options map one to one onto :class:`napari_histo.engine.training.TrainConfig`; a YAML config
(``--config``) gives defaults that command-line options override; it may be the
``run_card.yaml`` a GUI run wrote (its ``config``, with the layers' pixels saved in
``RUN/data``), so ``napari-histo train --config RUN/run_card.yaml --out NEW`` re-runs it. Progress is a tqdm bar per
epoch plus one metrics line per epoch; the run folder holds checkpoints, metrics and plots.

``--nproc N`` trains data-parallel in N processes on this machine (one GPU each with CUDA,
gloo on CPU; ``batch_size`` stays the global batch). On a cluster, start the same command
under ``torchrun`` (it sets RANK/WORLD_SIZE/...), without ``--nproc``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO, Any

from napari_histo.cli._json import json_help, print_json
from napari_histo.core.model_registry import TASKS, default_model, model_help, model_task

# option dest -> TrainConfig field (only options given on the command line override)
_FIELDS = {
    "task": "task", "data": "data", "out": "out_dir", "model": "model", "epochs": "epochs",
    "time_limit": "time_limit_min", "device": "device", "group_by": "group_by",
    "val_groups": "val_groups", "val_fraction": "val_fraction", "lr": "lr",
    "batch_size": "batch_size", "patch_size": "patch_size", "mpp": "mpp", "data_mpp": "data_mpp",
    "stain_norm": "stain_norm", "stain_reference": "stain_reference", "init": "init_checkpoint",
    "seed": "seed", "loss": "loss", "patience": "early_stopping_patience",
    "steps_per_epoch": "steps_per_epoch", "num_classes": "num_classes",
    "class_names": "class_names", "optimizer": "optimizer", "num_workers": "num_workers",
    "center_size": "center_size", "weight_decay": "weight_decay", "threads": "threads",
    "folds": "folds", "selection": "selection",
    "weights": "weights",
}


def _model_name(text: str) -> str:
    """``--model``: a registered name or ``timm:<backbone>`` (argparse reports the error)."""
    from napari_histo.core.errors import ConfigError

    try:
        model_task(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser("train", help="train a U-Net (segment) or patch classifier (classify)",
                       description=__doc__)
    p.add_argument("--config", help="YAML file of TrainConfig options, or a GUI run's "
                                   "run_card.yaml (CLI options override)")
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--data", action="append", help="data folder/CSV/PCam h5 (repeatable)")
    p.add_argument("--out", help="run folder for checkpoints, metrics and plots")
    p.add_argument("--model", type=_model_name, metavar="NAME",
                   help=f"{model_help()} (default: {default_model('segment')} to segment, "
                        f"{default_model('classify')} to classify, "
                        f"{default_model('classify', transfer=True)} with --pretrained)")
    p.add_argument("--epochs", type=int, help="epochs to run (default: until --time-limit runs "
                                              "out, the LR schedule spanning it; else 20)")
    p.add_argument("--time-limit", type=float, metavar="MINUTES", help="stop after this long")
    p.add_argument("--device", help="auto|cpu|cuda|mps")
    p.add_argument("--group-by", help="split groups: auto, name, or a CSV column "
                                      "(e.g. 'patient ID', source_slide)")
    p.add_argument("--val-groups", nargs="+", help="groups used for validation (else random)")
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--folds", type=int, metavar="K",
                   help="group k-fold cross-validation: K runs in OUT/fold_k, metrics from the "
                        "pooled out-of-fold predictions with 95 %% intervals (OUT/crossval.json)")
    p.add_argument("--selection", choices=("auto", "raw", "smoothed", "ema"),
                   help="best checkpoint by the raw val metric, its EMA over epochs, or EMA "
                        "weights (auto: the measured default)")
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer", choices=("adamw", "adam", "sgd"))
    p.add_argument("--batch-size", type=int)
    p.add_argument("--patch-size", type=int)
    p.add_argument("--mpp", type=float, help="training resolution in um/px")
    p.add_argument("--data-mpp", type=float, help="resolution of the image files in um/px")
    p.add_argument("--stain-norm", choices=("macenko", "reinhard"))
    p.add_argument("--stain-reference", help="reference image for stain normalisation")
    p.add_argument("--init", help="checkpoint to fine-tune from")
    p.add_argument("--pretrained", action="store_true",
                   help="start from the backbone's ImageNet weights (torchvision/timm cache; "
                        "downloaded when online; resnet18 when --model is not given)")
    p.add_argument("--weights", metavar="PATH",
                   help="start from a local weights file (state dict .pt/.pth or .safetensors)")
    p.add_argument("--seed", type=int)
    p.add_argument("--loss", choices=("ce", "dice", "ce+dice", "focal", "focal+dice"))
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--class-names", nargs="+")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--center-size", type=int, help="classifier: label region at the patch centre")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy CPU)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train data-parallel in N processes on this machine (one GPU each "
                        "with CUDA; batch size stays the global batch); under torchrun leave "
                        "it out")
    p.add_argument("--events", metavar="FILE",
                   help="append one JSON line per progress event (progress, epoch_end with "
                        "the metrics, message) to FILE, flushed as they happen, so another "
                        "program can follow the run (rank 0 only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainConfig field (YAML value)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (with --json: only warnings and errors on stderr)")
    p.add_argument("--json", action="store_true",
                   help=json_help("the result (run_dir, best_checkpoint, metrics with their "
                                  "*_ci 95 %% intervals, crossval with --folds, timings, "
                                  "warnings)"))
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> Any:
    """TrainConfig from --config, --resume's saved config and the given options."""
    import yaml

    from napari_histo.core.errors import ConfigError
    from napari_histo.engine.training import TrainConfig

    base: dict[str, Any] = {}
    if args.config:
        base = TrainConfig.from_yaml(args.config).to_dict()
    if args.resume and args.out and (Path(args.out) / "config.yaml").is_file() and not args.config:
        base = TrainConfig.from_yaml(Path(args.out) / "config.yaml").to_dict()
    for dest, fld in _FIELDS.items():
        v = getattr(args, dest, None)
        if v is not None:
            base[fld] = v
    if getattr(args, "pretrained", False):
        base["pretrained"] = True
    if args.no_augment:
        base["augment"] = False
    base["resume"] = bool(args.resume)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            base[k.strip().replace("-", "_")] = yaml.safe_load(v)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or "not a plain YAML value"
            raise ConfigError(f"--set {k.strip()}: {problem} (only plain YAML values: "
                              "numbers, text, lists)") from None
    if not base.get("data"):
        raise ConfigError("give --data PATH (or --config with data:)")
    if not base.get("out_dir") or not args.out and not args.config:
        if not args.out and not args.config:
            raise ConfigError("give --out RUN_DIR for checkpoints, metrics and plots")
    return TrainConfig.from_dict(base)


def _launch(args: argparse.Namespace, cfg: Any) -> int:
    """``--nproc N``: start N ranks reading the resolved config; rank 0's exit code."""
    import dataclasses
    import os
    import tempfile

    from napari_histo.core.errors import ConfigError
    from napari_histo.engine.devices import resolve_device
    from napari_histo.engine.training import ddp
    from napari_histo.engine.training.launch import launch, write_rank_config

    n = int(args.nproc)
    if ddp.from_env().active:
        raise ConfigError("--nproc starts the processes itself: leave it out under torchrun")
    if cfg.folds:
        raise ConfigError("--folds runs one process per fold: leave out --nproc")
    ddp.check_batch(ddp.DistContext(world_size=n), cfg.batch)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        import torch

        if torch.cuda.device_count() < n:
            raise ConfigError(f"--nproc {n} needs {n} GPUs; {torch.cuda.device_count()} "
                              "visible")
    elif device.type != "cpu":
        raise ConfigError(f"--nproc runs on CUDA GPUs or the CPU, not {device.type}")
    elif not cfg.threads:  # share the cores: N processes x all cores would thrash
        cfg = dataclasses.replace(cfg, threads=max(1, (os.cpu_count() or 1) // n))
    flags = [f for f, on in (("--resume", args.resume), ("--json", args.json),
                             ("--quiet", args.quiet)) if on]
    if getattr(args, "events", None):  # rank 0 writes them (the other ranks are silent)
        flags += ["--events", str(Path(args.events).resolve())]
    hint = f"resume with: napari-histo train --resume --out {cfg.out_dir} --nproc {n}"
    with tempfile.TemporaryDirectory(prefix="napari-histo-ranks-") as tmp:
        path = write_rank_config(cfg, Path(tmp))
        return launch(["train", "--config", str(path), *flags], n, resume_hint=hint)


def run(args: argparse.Namespace) -> int:
    """Train and print one line per epoch and the final result."""
    from napari_histo.core.progress import EpochEnd, Message, Progress, run_task
    from napari_histo.engine.training import ddp, train
    from napari_histo.engine.training.launch import EXIT_PEER_LOST
    from napari_histo.engine.uncertainty import format_metric

    cfg = build_config(args)
    if args.nproc is not None and args.nproc > 1:
        return _launch(args, cfg)
    dist = ddp.from_env()
    if dist.active and cfg.folds:
        from napari_histo.core.errors import ConfigError

        raise ConfigError("--folds cannot run distributed: start it in one process")
    if not dist.is_main:  # ranks > 0 are silent: rank 0 reports the run
        try:
            run_task(train(cfg, dist=dist), lambda ev: None)
        except ddp.DistributedError:
            if settings_launched():
                return EXIT_PEER_LOST  # the launcher names the rank that failed
            raise
        return 0
    bar = None
    show = not args.quiet
    as_json = bool(getattr(args, "json", False))
    # with --json stdout holds only the final object: human lines go to stderr (or nowhere)
    human = sys.stderr if as_json else sys.stdout
    say = show or not as_json
    warned: list[str] = []
    t0 = time.perf_counter()
    events = _open_events(getattr(args, "events", None))

    def on_event(ev: Any) -> None:
        nonlocal bar
        if events is not None:
            _write_event(events, ev)
        if isinstance(ev, Progress) and show:
            if bar is None or bar.desc != ev.desc or ev.done == 1:
                if bar is not None:
                    bar.close()
                from tqdm import tqdm

                bar = tqdm(total=ev.total, desc=ev.desc, leave=False, file=sys.stderr,
                           dynamic_ncols=True)
            bar.update(ev.done - bar.n)
            if "loss" in ev.info:
                bar.set_postfix(loss=f"{ev.info['loss']:.4f}", refresh=False)
        elif isinstance(ev, EpochEnd):
            if bar is not None:
                bar.close()
                bar = None
            m = ev.metrics
            keys = ("train_loss", "val_loss", "val_accuracy", "val_dice", "val_auc")
            parts = [t for t in (format_metric(m, k) for k in keys) if t]  # with [95 % CI]
            if say:
                print(f"epoch {ev.epoch}: " + " ".join(parts), file=human, flush=True)
        elif isinstance(ev, Message):
            if ev.level == "warning":
                warned.append(ev.text)
            if say or ev.level == "warning":  # stdout: stderr is kept for the error line
                print(("warning: " if ev.level == "warning" else "") + ev.text, file=human,
                      flush=True)

    if cfg.folds:
        from napari_histo.engine.training.crossval import crossval

        task: Any = crossval(cfg)
    else:
        task = train(cfg, dist=dist)
    try:
        result = run_task(task, on_event)
    except ddp.DistributedError:
        if dist.active and settings_launched():
            return EXIT_PEER_LOST  # the launcher names the rank that failed
        raise
    finally:
        if bar is not None:
            bar.close()
        if events is not None:
            events.close()
    if as_json:
        to_json = _crossval_json if cfg.folds else _train_json
        print_json(to_json(result, cfg.task, warned, time.perf_counter() - t0))
        return 0
    if cfg.folds:
        print(f"done (crossval): {result.summary_line()}; "
              f"details {result.run_dir / 'crossval.json'}")
        return 0
    best = result.best_metrics
    summary = " ".join(t for t in (format_metric(best, k) for k in ("val_dice", "val_auc",
                                                                   "val_accuracy")) if t)
    print(f"done ({result.stopped}): best epoch {best.get('epoch')} ({result.selection} "
          f"selection) {summary}; checkpoint {result.best_checkpoint}")
    if result.warnings:
        print(f"{len(result.warnings)} warning(s) about the validation set: see "
              f"{result.run_dir / 'summary.json'}")
    return 0


def _open_events(path: str | None) -> IO[str] | None:
    """``--events FILE`` opened for appending (never truncating what is there)."""
    if not path:
        return None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed at the end of run)


def _write_event(stream: IO[str], event: Any) -> None:
    """One JSON line per event, flushed so a follower sees it at once."""
    from napari_histo.core.progress_stream import event_line

    stream.write(event_line(event) + "\n")
    stream.flush()


def _run_json(result: Any) -> dict[str, Any]:
    """One training run (a TrainResult) as ``train --json`` reports it."""
    best = result.best_metrics
    return {
        "run_dir": str(result.run_dir),
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "last_checkpoint": str(result.last_checkpoint),
        "best_epoch": best.get("epoch"),
        "epochs": len(result.history),
        "stopped": result.stopped,
        "selection": result.selection,
        # the best epoch's metrics: val_* with val_*_ci = [low, high] (95 %, bootstrap)
        "metrics": {k: v for k, v in best.items() if k not in ("epoch", "is_best")},
        "train_s": result.history[-1].get("elapsed_s") if result.history else None,
    }


def _train_json(result: Any, task: str, warned: list[str], wall_s: float) -> dict[str, Any]:
    """``train --json``: the run folder, its best checkpoint and metrics, timings."""
    run = _run_json(result)
    train_s = run.pop("train_s")
    return {
        "command": "train", "ok": True, "task": task, **run, "crossval": None,
        "files": {"summary": str(result.run_dir / "summary.json"),
                  "metrics": str(result.run_dir / "metrics.json"),
                  "config": str(result.run_dir / "config.yaml")},
        "warnings": list(dict.fromkeys([*warned, *result.warnings])),
        "timings": {"total_s": round(wall_s, 3), "train_s": train_s},
    }


def _crossval_json(cv: Any, task: str, warned: list[str], wall_s: float) -> dict[str, Any]:
    """``train --folds K --json``: pooled out-of-fold metrics and one entry per fold."""
    folds = [{"fold": i, **_run_json(fold)} for i, fold in enumerate(cv.folds, 1)]
    return {
        "command": "train", "ok": True, "task": task, "run_dir": str(cv.run_dir),
        "best_checkpoint": str(cv.best_checkpoint), "final_model": cv.final_model,
        "stopped": cv.stopped,
        # pooled out-of-fold metrics: val_* with val_*_ci = [low, high], items, groups
        "metrics": cv.metrics,
        "crossval": {"folds": len(cv.folds), "fold_groups": cv.fold_groups,
                     "summary": cv.summary_line(), "per_fold": folds},
        "files": {"crossval": str(cv.run_dir / "crossval.json"),
                  "config": str(cv.run_dir / "config.yaml")},
        "warnings": list(dict.fromkeys([*warned, *cv.warnings])),
        "timings": {"total_s": round(wall_s, 3),
                    "train_s": [f.pop("train_s") for f in folds]},
    }


def settings_launched() -> bool:
    """True in a rank started by ``train --nproc`` (its launcher reports failures)."""
    from napari_histo.core.settings import launcher_pid

    return launcher_pid() is not None
