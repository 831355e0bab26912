"""TrainConfig: the one frozen, validated, YAML round-tripping description of a training run.

The GUI, the CLI and the tests all build this object; ``train(cfg)`` needs nothing else
(besides in-memory arrays from the GUI).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_histo.core.errors import ConfigError

TASKS = ("segment", "classify")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("onecycle", "cosine", "none")
LOSSES = ("auto", "ce", "dice", "ce+dice", "focal", "focal+dice")
STAIN = (None, "macenko", "reinhard")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (see the CLI help for each option)."""

    task: str = "segment"
    data: tuple[str, ...] = ()
    out_dir: str = "runs/train"
    model: str = "auto"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    scheduler: str = "onecycle"
    batch_size: int = 8
    patch_size: int = 256
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
    stain_norm: str | None = None
    stain_reference: str | None = None
    init_checkpoint: str | None = None
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

    def __post_init__(self) -> None:
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if isinstance(self.data, (str, Path)):
            fix("data", (str(self.data),))
        fix("data", tuple(str(d) for d in self.data))
        fix("val_groups", tuple(str(g) for g in (self.val_groups or ())))
        if self.class_names is not None:
            fix("class_names", tuple(str(c) for c in self.class_names))
        if self.class_weights is not None:
            fix("class_weights", tuple(float(c) for c in self.class_weights))
        fix("model_kwargs", dict(self.model_kwargs or {}))
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.model == "auto":
            fix("model", "unet-small" if self.task == "segment" else "cnn-small")
        from napari_histo.engine.models import model_task

        if model_task(self.model) != self.task:
            raise ConfigError(f"model {self.model!r} is for task {model_task(self.model)!r}, "
                              f"not {self.task!r}")
        for name in ("epochs", "batch_size", "patch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patch_size < 16:
            raise ConfigError(f"patch_size {self.patch_size} is too small (>= 16 px)")
        if not (self.lr > 0):
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if not (0 <= self.val_fraction < 1):
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("mpp", "data_mpp", "time_limit_min"):
            v = getattr(self, name)
            if v is not None and not (v > 0):
                raise ConfigError(f"{name} must be > 0, got {v}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.stain_norm not in STAIN:
            raise ConfigError(f"stain_norm must be macenko, reinhard or None, got {self.stain_norm!r}")
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError("num_classes must be >= 2 (binary = 2)")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError("early_stopping_patience must be >= 1 (or None to disable)")
        if self.num_workers < 0:
            raise ConfigError("num_workers must be >= 0")

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
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
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
        """Read a YAML file (or YAML text)."""
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
        return cls.from_dict(d)
