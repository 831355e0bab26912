"""TrainConfig: the one frozen, validated, YAML round-tripping description of a training run.

The GUI, the CLI and the tests all build this object; ``train(cfg)`` needs nothing else
(besides in-memory arrays from the GUI).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_histo.core.errors import ConfigError
from napari_histo.core.limits import (
    BATCH_RANGE,
    MAX_BATCH_PIXELS,
    MPP_RANGE,
    NUM_CLASSES_RANGE,
    PATCH_RANGE,
    TILE_RANGE,
    check_regular_file,
    integer,
    number,
)
from napari_histo.core.model_registry import (
    TASKS,
    TIMM_ENTRY,
    default_model,
    model_task,
    pretrained_models,
    supports_pretrained,
)

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("onecycle", "cosine", "none")
LOSSES = ("auto", "ce", "dice", "ce+dice", "focal", "focal+dice")
STAIN = (None, "macenko", "reinhard")
#: epochs of a run given neither ``epochs`` nor ``time_limit_min``
DEFAULT_EPOCHS = 20
#: auto training resolution for segmentation when the data's is known (never finer than the
#: data): 4x GlaS' 0.62 um/px, the gland/tissue scale the README benchmark is tuned on
SEGMENT_AUTO_MPP = 2.48
#: best-checkpoint selection: raw val metric, its EMA over epochs, or EMA of the weights
SELECTIONS = ("auto", "raw", "smoothed", "ema")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (see the CLI help for each option)."""

    task: str = "segment"
    data: tuple[str, ...] = ()
    out_dir: str = "runs/train"
    model: str = "auto"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: None: until ``time_limit_min`` runs out (the LR schedule spans the time), else 20
    epochs: int | None = None
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    scheduler: str = "onecycle"
    #: None: 16 for patches <= 128 px, else 8
    batch_size: int | None = None
    #: None: 128 px for segmentation at >= 2 um/px, else 256
    patch_size: int | None = None
    mpp: float | None = None
    data_mpp: float | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    device: str = "auto"
    time_limit_min: float | None = None
    group_by: str = "auto"
    val_fraction: float = 0.2
    val_groups: tuple[str, ...] = ()
    seed: int = 0
    augment: bool = True
    #: strength of the stain augmentation (RandStainNA + HED jitter); 0 = mild colour only
    stain_augment: float = 1.0
    stain_norm: str | None = None
    stain_reference: str | None = None
    init_checkpoint: str | None = None
    #: start from the backbone's published weights (torchvision/timm cache, downloaded online)
    pretrained: bool = False
    #: start from a local weights file (plain state dict .pt/.pth or .safetensors)
    weights: str | None = None
    #: keep batch-norm statistics fixed (fine-tuning on a few, biased patches)
    freeze_norm: bool = False
    early_stopping_patience: int | None = 15
    monitor: str = "auto"
    loss: str = "auto"
    class_weights: tuple[float, ...] | None = None
    balance: bool | None = None
    grad_clip: float | None = 1.0
    amp: bool = True
    channels_last: bool = True
    num_workers: int = 0
    threads: int | None = None
    steps_per_epoch: int | None = None
    val_tile: int = 512
    center_size: int | None = None
    resume: bool = False
    preview: bool = True
    #: group k-fold cross-validation (engine.training.crossval); None = one train/val split
    folds: int | None = None
    #: how the best checkpoint is picked (see loop._monitor_value); auto = the measured default
    selection: str = "auto"

    def __post_init__(self) -> None:
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if isinstance(self.data, (str, Path)):
            fix("data", (str(self.data),))
        if not isinstance(self.data, (tuple, list)):
            raise ConfigError(f"data must be a list of folders or files, got {self.data!r}")
        fix("data", tuple(str(d) for d in self.data))
        fix("val_groups", tuple(str(g) for g in (self.val_groups or ())))
        if self.class_names is not None:
            fix("class_names", tuple(str(c) for c in self.class_names))
        if self.class_weights is not None:
            if not isinstance(self.class_weights, (tuple, list)):
                raise ConfigError(f"class_weights must be a list of numbers, got {self.class_weights!r}")
            fix("class_weights", tuple(self.class_weights))
        if not isinstance(self.model_kwargs or {}, dict):
            raise ConfigError(f"model_kwargs must be a mapping, got {self.model_kwargs!r}")
        fix("model_kwargs", dict(self.model_kwargs or {}))
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.model == "auto":
            transfer = self.pretrained is True or bool(self.weights)
            fix("model", default_model(self.task, transfer=transfer))

        if model_task(self.model) != self.task:
            raise ConfigError(f"model {self.model!r} is for task {model_task(self.model)!r}, "
                              f"not {self.task!r}")
        self._auto_sizes()
        # every number: right type, finite, in a sane range (core.limits)
        ints: dict[str, tuple[int | None, int | None, bool]] = {
            "epochs": (1, 100_000, True),
            "batch_size": (*BATCH_RANGE, False),
            "patch_size": (16, PATCH_RANGE[1], False),
            "num_classes": (*NUM_CLASSES_RANGE, True),
            "seed": (0, 2**32 - 1, False),
            "early_stopping_patience": (1, 100_000, True),
            "num_workers": (0, 64, False),
            "threads": (1, 1024, True),
            "steps_per_epoch": (1, 10_000_000, True),
            "val_tile": (16, TILE_RANGE[1], False),
            "center_size": (1, PATCH_RANGE[1], True),
            "folds": (2, 100, True),
        }
        if self.num_classes is not None and isinstance(self.num_classes, int) \
                and not isinstance(self.num_classes, bool) and self.num_classes < 2:
            raise ConfigError("num_classes must be >= 2 (binary = 2)")
        if isinstance(self.patch_size, int) and 1 <= self.patch_size < 16:
            raise ConfigError(f"patch_size {self.patch_size} is too small (>= 16 px)")
        for name, (lo, hi, optional) in ints.items():
            fix(name, integer(name, getattr(self, name), lo, hi, allow_none=optional))
        if self.center_size is not None and self.center_size > self.patch:
            raise ConfigError(f"center_size {self.center_size} must not exceed patch_size "
                              f"{self.patch_size}")
        lr = self.lr
        if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr <= 0:
            raise ConfigError(f"learning rate must be > 0, got {lr}")
        fix("lr", number("learning rate (lr)", lr, 0.0, 10.0, lo_open=True))
        fix("weight_decay", number("weight_decay", self.weight_decay, 0.0, 10.0))
        vf = self.val_fraction
        if isinstance(vf, (int, float)) and not isinstance(vf, bool) and math.isfinite(vf) \
                and not 0 <= vf < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {vf}")
        fix("val_fraction", number("val_fraction", vf, 0.0, 1.0, hi_open=True))
        for name in ("mpp", "data_mpp"):
            v = getattr(self, name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
                raise ConfigError(f"{name} must be > 0, got {v}")
            fix(name, number(name, v, *MPP_RANGE, allow_none=True))
        tl = self.time_limit_min
        if isinstance(tl, (int, float)) and not isinstance(tl, bool) and tl <= 0:
            raise ConfigError(f"time_limit_min must be > 0, got {tl}")
        fix("time_limit_min", number("time_limit_min", tl, 0.0, 525_600.0, lo_open=True,
                                     allow_none=True))
        fix("grad_clip", number("grad_clip", self.grad_clip, 0.0, 1e6, lo_open=True,
                                allow_none=True))
        if self.class_weights is not None:
            if len(self.class_weights) > NUM_CLASSES_RANGE[1]:
                raise ConfigError(f"{len(self.class_weights)} class weights; at most "
                                  f"{NUM_CLASSES_RANGE[1]} classes")
            fix("class_weights", tuple(number("class weight", w, 0.0, 1e6)
                                       for w in self.class_weights))
        for name in ("augment", "freeze_norm", "amp", "channels_last", "resume", "preview"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.balance is not None and not isinstance(self.balance, bool):
            raise ConfigError(f"balance must be true, false or null, got {self.balance!r}")
        if self.batch * self.patch**2 > MAX_BATCH_PIXELS:
            raise ConfigError(
                f"batch_size {self.batch_size} x {self.patch_size} x {self.patch_size} px is "
                f"more input than one training step may hold ({MAX_BATCH_PIXELS / 1e6:.0f} "
                "Mpx); lower batch_size or patch_size")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        fix("stain_augment", number("stain_augment", self.stain_augment, 0.0, 4.0))
        if self.stain_norm not in STAIN:
            raise ConfigError(f"stain_norm must be macenko, reinhard or None, got {self.stain_norm!r}")
        self._check_weights()
        for name in ("stain_reference", "init_checkpoint", "weights"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, Path)):
                raise ConfigError(f"{name} must be a file path, got {v!r}")
            if v is not None and Path(v).exists():  # never open a pipe or a device later
                check_regular_file(v, what=f"{name} {v}", error=ConfigError)
        if self.model_kwargs:  # network width/depth and its parameter count, before training
            from napari_histo.engine.models import check_model_budget, validate_spec

            check_model_budget(validate_spec({"name": self.model, **self.model_kwargs},
                                             where="model_kwargs"))

    @property
    def patch(self) -> int:
        """``patch_size`` as resolved by ``__post_init__`` (never None once built)."""
        assert self.patch_size is not None
        return self.patch_size

    @property
    def batch(self) -> int:
        """``batch_size`` as resolved by ``__post_init__`` (never None once built)."""
        assert self.batch_size is not None
        return self.batch_size

    def _auto_sizes(self) -> None:
        """Fill the "not given" (None) mpp, patch_size and batch_size from the task and data."""
        def given(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
                and v > 0

        if self.task == "segment" and self.mpp is None and self.data_mpp is not None \
                and given(self.data_mpp):
            object.__setattr__(self, "mpp", max(float(self.data_mpp), SEGMENT_AUTO_MPP))
        if self.patch_size is None:
            coarse = self.task == "segment" and self.mpp is not None and given(self.mpp) \
                and self.mpp >= 2.0
            object.__setattr__(self, "patch_size", 128 if coarse else 256)
        if self.batch_size is None:
            small = isinstance(self.patch_size, int) and self.patch_size <= 128
            object.__setattr__(self, "batch_size", 16 if small else 8)

    def _check_weights(self) -> None:
        """``pretrained``/``weights``: right types, a model that has such weights, no --init."""
        if not isinstance(self.pretrained, bool):
            raise ConfigError(f"pretrained must be true or false, got {self.pretrained!r}")
        if self.weights is not None and not isinstance(self.weights, (str, Path)):
            raise ConfigError(f"weights must be a file path, got {self.weights!r}")
        if self.weights is not None:
            object.__setattr__(self, "weights", str(self.weights))
        if (self.pretrained or self.weights) and not supports_pretrained(self.model):
            raise ConfigError(f"model {self.model!r} has no pretrained weights; --pretrained and "
                              f"--weights need {', '.join(pretrained_models())} or {TIMM_ENTRY}")
        if self.weights and self.init_checkpoint:
            raise ConfigError("give either weights (a backbone's weights file) or "
                              "init_checkpoint (a napari-histo checkpoint to fine-tune), not both")

    @property
    def max_epochs(self) -> int | None:
        """Epochs to run: ``epochs`` if given; else None (unbounded) with a time limit, else 20."""
        if self.epochs is not None:
            return int(self.epochs)
        return None if self.time_limit_min else DEFAULT_EPOCHS

    @property
    def scale(self) -> float:
        """Resampling factor from the data files to the training resolution (1 if unknown)."""
        if self.mpp is None or self.data_mpp is None:
            return 1.0
        return float(self.data_mpp) / float(self.mpp)

    @property
    def monitor_metric(self) -> str:
        """Validation metric used for the best checkpoint and early stopping."""
        if self.monitor != "auto":
            return self.monitor
        return "val_dice" if self.task == "segment" else "val_auc"

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), for YAML, JSON and checkpoints."""
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict, refusing unknown keys with a clear message."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown training option(s) {unknown}; known: {sorted(names)}")
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """YAML text (also written to ``path`` when given)."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_yaml(cls, source: str | Path) -> TrainConfig:
        """Read a YAML file (or YAML text): a TrainConfig mapping or a run card (its
        ``config``, see :mod:`napari_histo.engine.run_card`)."""
        import yaml

        is_path = isinstance(source, Path) or ("\n" not in str(source) and len(str(source)) < 1024
                                                and Path(str(source)).is_file())
        text = Path(source).read_text(encoding="utf-8") if is_path else str(source)
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"invalid YAML training config: {err}") from err
        if not isinstance(d, dict):
            raise ConfigError("a training config YAML must be a mapping of option: value")
        if d.get("kind") == "napari-histo train run card":  # a GUI run's card: its config
            d = d.get("config")
            if not isinstance(d, dict):
                raise ConfigError("the run card has no config mapping")
        return cls.from_dict(d)
