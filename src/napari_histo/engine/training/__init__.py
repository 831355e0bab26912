"""Training engine: ``TrainConfig`` + ``train(cfg, arrays=None) -> Task[TrainResult]``.

Events: ``Progress(done, total, "train"|"val")`` per batch, ``EpochEnd(epoch, metrics,
checkpoint)`` per epoch. The run folder gets ``best.pt``, ``last.pt``, ``config.yaml``,
``metrics.csv``/``metrics.json``, ``plots/`` and ``previews/``.
"""

from __future__ import annotations

from napari_histo.engine.datasets import IGNORE_INDEX, ArraySample
from napari_histo.engine.training.config import TrainConfig
from napari_histo.engine.training.loop import TrainingError, TrainResult, train

__all__ = ["IGNORE_INDEX", "ArraySample", "TrainConfig", "TrainResult", "TrainingError", "train"]
