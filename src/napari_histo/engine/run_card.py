"""Run cards: what a GUI run did, written next to its outputs, so it can be re-run headless.

A card is one YAML file:

* training / fine-tuning: ``RUN/run_card.yaml`` beside the checkpoints. ``config`` is the
  full :class:`~napari_histo.engine.training.TrainConfig` whose ``data`` lists the run's data
  folders *and* ``RUN/data``, where the in-memory samples the widget trained on (image
  layers + Labels layers, or painted corrections) are saved exactly
  (:mod:`napari_histo.engine.datasets.array_folder`: lossless TIFFs, groups, weights, order).
  ``command`` is the terminal line that reproduces it::

      napari-histo train --config RUN/run_card.yaml --out RUN-reproduced

  (``train --config`` reads a card's ``config``; options given on the command line override.)
* prediction / patch heatmap: ``OUT.run_card.yaml`` beside ``OUT.ome.zarr`` with the
  :class:`~napari_histo.engine.inference.InferenceConfig`, the checkpoint, the slide, the
  region and the equivalent ``napari-histo predict ...`` line.

No Qt, no napari: the widgets only call :func:`train_with_card` / :func:`write_predict_card`.
"""

from __future__ import annotations

import datetime
import hashlib
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_histo.core.progress import Message, Task

__all__ = [
    "CARD_KIND_PREDICT",
    "CARD_KIND_TRAIN",
    "CARD_NAME",
    "DATA_DIR",
    "predict_card_path",
    "predict_command",
    "read_card",
    "train_command",
    "train_with_card",
    "write_predict_card",
    "write_segment_card",
    "write_train_card",
]

CARD_NAME = "run_card.yaml"
DATA_DIR = "data"
CARD_KIND_TRAIN = "napari-histo train run card"
CARD_KIND_PREDICT = "napari-histo predict run card"
CARD_VERSION = 1


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from napari_histo import __version__

    return str(__version__)


def _sha256(path: str | Path) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def _file_facts(path: str | Path) -> dict[str, Any] | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    mtime = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)
    return {"bytes": st.st_size, "modified": mtime.isoformat(timespec="seconds")}


def _dump(card: dict[str, Any], path: Path) -> Path:
    import os

    import yaml

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)  # never a half-written card
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    """A card as a dict (``kind``, ``command``, ``config``, ...)."""
    import yaml

    from napari_histo.core.errors import ConfigError

    try:
        d = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read run card {path}: {err}") from err
    if not isinstance(d, dict) or d.get("kind") not in (CARD_KIND_TRAIN, CARD_KIND_PREDICT):
        raise ConfigError(f"{path} is not a napari-histo run card")
    return d


# ------------------------------------------------------------------------------- training
def train_command(card: str | Path, out: str | Path | None = None) -> str:
    """``napari-histo train --config CARD --out OUT`` (shell-quoted)."""
    argv = ["napari-histo", "train", "--config", str(card)]
    if out is not None:
        argv += ["--out", str(out)]
    return shlex.join(argv)


def write_train_card(cfg: Any, arrays: Sequence[Any] | None = None, *, origin: str = "gui",
                     sources: list[dict[str, Any]] | None = None) -> Path:
    """Write ``cfg.out_dir/run_card.yaml`` (and the in-memory samples to ``RUN/data``).

    ``cfg`` is the TrainConfig the run uses; ``arrays`` the ArraySamples it trains on besides
    ``cfg.data``; ``sources`` optional per-sample metadata (layer names, placement). On a
    resumed run the saved samples are kept. Returns the card's path.
    """
    from napari_histo.engine.datasets.array_folder import is_array_folder, save_array_samples

    run = Path(cfg.out_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    # absolute paths: the card's command works from any folder
    data = [str(Path(d).resolve()) if Path(d).exists() else d for d in cfg.data]
    saved: dict[str, Any] | None = None
    if arrays:
        folder = run / DATA_DIR
        if not is_array_folder(folder):
            save_array_samples(folder, list(arrays), sources)
        data.append(str(folder))  # after cfg.data: the order train(cfg, arrays) loads them in
        saved = {"folder": str(folder), "samples": len(arrays),
                 "groups": sorted({str(a.group) for a in arrays}),
                 "format": "TIFF images/ + labels/ (+ weights/) and samples.json, lossless"}
    card_cfg = cfg.replace(data=tuple(data), resume=False).to_dict()
    card_path = run / CARD_NAME
    reproduce = run.parent / f"{run.name}-reproduced"
    card: dict[str, Any] = {
        "kind": CARD_KIND_TRAIN,
        "version": CARD_VERSION,
        "origin": origin,
        "created": _now(),
        "napari_histo": _version(),
        "command": train_command(card_path, reproduce),
        "run_dir": str(run),
        "saved_data": saved,
        "init_checkpoint_sha256": _sha256(cfg.init_checkpoint) if cfg.init_checkpoint else None,
        "config": card_cfg,
    }
    return _dump(card, card_path)


def train_with_card(cfg: Any, *, arrays: list[Any] | None = None, origin: str = "gui",
                    sources: list[dict[str, Any]] | None = None) -> Task[Any]:
    """Write the run card, then train (or cross-validate when ``cfg.folds``); a Task."""
    from napari_histo.engine.training import train

    card = write_train_card(cfg, arrays, origin=origin, sources=sources)
    yield Message(f"run card: {card}")
    if cfg.folds:
        from napari_histo.engine.training.crossval import crossval

        return (yield from crossval(cfg, arrays=arrays))
    return (yield from train(cfg, arrays=arrays))


# ------------------------------------------------------------------------------- prediction
_PREDICT_FLAGS = {  # InferenceConfig field -> predict option (fields with a value)
    "mpp": "--mpp", "level": "--level", "slide_mpp": "--slide-mpp", "tile": "--tile",
    "overlap": "--overlap", "batch_size": "--batch-size", "device": "--device",
    "stride": "--stride", "context": "--context", "threshold": "--threshold",
    "prob_dtype": "--prob-dtype", "readers": "--readers", "scheduler": "--scheduler",
    "ngff_version": "--ngff",
}


def predict_command(cfg: Any, checkpoint: str | Path, source: str | Path, out: str | Path,
                    region: Sequence[int] | None = None) -> str:
    """The ``napari-histo predict ...`` line equivalent to ``predict_slide`` with ``cfg``.

    ``block_tiles`` has no option (it changes the write order, not the result).
    """
    d = cfg.to_dict()
    argv = ["napari-histo", "predict", str(source), "--model", str(checkpoint), "--out", str(out)]
    for field, flag in _PREDICT_FLAGS.items():
        v = d.get(field)
        if v is not None:
            argv += [flag, str(v)]
    for fmt in d.get("formats") or ():
        argv += ["--format", str(fmt)]
    if not d.get("tissue_only", True):
        argv.append("--all-tiles")
    for flag in ("amp", "tta", "overwrite", "resume"):
        if d.get(flag):
            argv.append(f"--{flag}")
    if region is not None:
        argv += ["--region", ",".join(str(int(round(v))) for v in region)]
    return shlex.join(argv)


def predict_card_path(out_path: str | Path) -> Path:
    """``NAME.run_card.yaml`` beside the prediction ``NAME.ome.zarr`` (or ``NAME.zarr``)."""
    p = Path(out_path)
    name = p.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(f"{name}.{CARD_NAME}")


def write_predict_card(cfg: Any, checkpoint: str | Path, source: str | Path, out_path: str | Path,
                       *, region: Sequence[int] | None = None, origin: str = "gui",
                       extra: dict[str, Any] | None = None) -> Path:
    """Write the card of a prediction beside ``out_path``; returns its path."""
    card: dict[str, Any] = {
        "kind": CARD_KIND_PREDICT,
        "version": CARD_VERSION,
        "origin": origin,
        "created": _now(),
        "napari_histo": _version(),
        "command": predict_command(cfg, checkpoint, source, out_path, region),
        "checkpoint": str(checkpoint),
        "checkpoint_file": _file_facts(checkpoint),  # size + mtime: cheap on the GUI thread
        "source": str(source),
        "output": str(out_path),
        "region": None if region is None else [int(round(v)) for v in region],
        "config": cfg.to_dict(),
    }
    if extra:
        card.update(extra)
    path = predict_card_path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _dump(card, path)


def write_segment_card(req: Any, *, origin: str = "gui") -> Path | None:
    """The card of a Segment / Patch-heatmap widget run (an ``engine.live.SegmentRequest``):
    written beside its OME-Zarr when it reads a slide file; None for an in-memory image
    (a layer with no file behind it cannot be re-run from the terminal)."""
    if not req.source or not req.out_path:
        return None
    return write_predict_card(req.cfg, req.checkpoint, req.source, req.out_path,
                              region=req.region, origin=origin)
