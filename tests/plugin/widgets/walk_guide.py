"""Walk the README's user guide, step by step, on any slide or image, as a user would.

Each step opens the widget the way the guide says (Plugins > napari-histo > NAME, i.e.
napari's ``add_plugin_dock_widget``), presses its buttons, waits for the end state, checks
what the guide promises (layers, units, status, files) and takes a screenshot of the real
window. Run under Xvfb with a shown window::

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python \\
        tests/plugin/widgets/walk_guide.py OUT_DIR --model CKPT SLIDE_OR_IMAGE [--mpp UM]

``--mpp`` is the pixel size to set in the Pixel size widget when the file has none. Writes
``OUT_DIR/NN_step.png`` per step and ``OUT_DIR/walk.json`` (each step: ok, what was seen,
seconds); prints one line per step and exits 1 when a step failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from screenshots import _shot, _viewer, _wait  # noqa: E402


class Walk:
    """Runs the steps, records what each saw, never stops at the first failure."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.steps: list[dict[str, Any]] = []
        self.viewer: Any = None

    def step(self, name: str, fn: Callable[[], str]) -> bool:
        t0 = time.monotonic()
        try:
            seen = fn()
            ok = True
        except Exception as exc:  # a failed step is the finding; go on with the next
            seen = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            ok = False
        n = len(self.steps) + 1
        shot = self.out / f"{n:02d}_{name}.png"
        try:
            _shot(self.viewer, shot)
        except Exception as exc:  # noqa: BLE001 - a missing screenshot is reported, not fatal
            seen += f" (no screenshot: {exc})"
        rec = {"step": name, "ok": ok, "seen": seen, "seconds": round(time.monotonic() - t0, 1),
               "screenshot": shot.name}
        self.steps.append(rec)
        print(f"{'OK  ' if ok else 'FAIL'} {name}: {seen} [{rec['seconds']} s]", flush=True)
        return ok


def dock(viewer: Any, name: str) -> Any:
    """Plugins > napari-histo > NAME."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-histo", name)
    _wait(lambda: True)
    return widget


def tissue_centre(layer: Any) -> tuple[float, float]:
    """World (y, x) of the centre of the darkest (most tissue) cell of the coarsest level."""
    data = layer.data[-1] if layer.multiscale else layer.data
    small = np.asarray(data[:: max(1, data.shape[0] // 256), :: max(1, data.shape[1] // 256)])
    grey = small[..., :3].mean(axis=-1)
    k = 8
    h, w = grey.shape[0] // k * k, grey.shape[1] // k * k
    cells = grey[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    cy, cx = np.unravel_index(np.argmin(cells), cells.shape)
    fy = (cy + 0.5) * k / grey.shape[0]
    fx = (cx + 0.5) * k / grey.shape[1]
    full = layer.data[0].shape if layer.multiscale else layer.data.shape
    world = layer.data_to_world((fy * full[0], fx * full[1]))
    return float(world[-2]), float(world[-1])


def walk(path: Path, model: str, out: Path, mpp: float | None, whole: bool) -> list[dict]:
    w = Walk(out)
    w.viewer = viewer = _viewer()
    state: dict[str, Any] = {}

    def open_file() -> str:
        viewer.open(str(path), plugin="napari-histo")
        image = next(lyr for lyr in viewer.layers if type(lyr).__name__ == "Image")
        state["image"] = image
        truth = [lyr for lyr in viewer.layers if type(lyr).__name__ == "Labels"]
        state["truth"] = truth[0] if truth else None
        viewer.reset_view()
        return (f"{image.name}: {'multiscale ' if image.multiscale else ''}"
                f"{len(image.data) if image.multiscale else 1} level(s), units "
                f"{tuple(str(u) for u in image.units)}, scale {tuple(image.scale)}; "
                f"ground truth: {state['truth'].name if state['truth'] else 'none'}")

    def pixel_size() -> str:
        image = state["image"]
        ps = dock(viewer, "Pixel size")
        ps._image_combo.value = image
        before = ps._info.value
        if mpp is not None and "no pixel size" in before:
            ps._mpp_spin.value = mpp
            ps._apply_button.native.click()
            _wait(lambda: True)
            assert abs(float(image.scale[-1]) - mpp) < 1e-9, image.scale
            units = {str(u) for lyr in viewer.layers for u in lyr.units[-2:]}
            assert units == {"micrometer"}, units
        return f"before: {before!r}; after: {ps._info.value!r}"

    def segment_view() -> str:
        image = state["image"]
        seg = dock(viewer, "Segment")
        state["seg"] = seg
        assert seg._image_combo.value is image, "the picker did not pre-select the slide"
        seg.set_checkpoint(model)
        viewer.reset_view()
        viewer.camera.zoom = viewer.camera.zoom * 3
        viewer.camera.center = tissue_centre(image)
        seg._target_combo.value = "current view"
        seg._run_button.native.click()
        _wait(lambda: seg.handle is not None and seg.handle.done and seg._run_button.enabled)
        status = str(seg._status_label.value)
        assert status.startswith("done"), status
        r = seg.result
        assert r is not None and r.heatmap in viewer.layers and r.labels in viewer.layers
        return f"status {status!r}; layers {r.heatmap.name!r}, {r.labels.name!r}"

    def segment_whole() -> str:
        seg = state["seg"]
        seg._target_combo.value = "whole slide"
        seg._run_button.native.click()
        _wait(lambda: seg.handle is not None and seg.handle.done and seg._run_button.enabled,
              timeout=1800)
        status = str(seg._status_label.value)
        assert status.startswith("done"), status
        store = (seg.result.labels.metadata.get("napari_histo") or {}).get("store")
        assert store and Path(store).is_dir(), store
        state["store"] = store
        viewer.reset_view()
        return f"status {status!r}; store {store}"

    def past_predictions() -> str:
        res = dock(viewer, "Past predictions")
        res.refresh()
        listed = res._choices()
        if "store" in state:
            assert any(Path(v).resolve() == Path(state["store"]).resolve()
                       for _, v in listed), listed
        return f"{res._total.value}: {[label for label, _ in listed][:3]}"

    def correct() -> str:
        seg = state["seg"]
        viewer.camera.center = tissue_centre(state["image"])
        corr = dock(viewer, "Correct and fine-tune")
        state["corr"] = corr
        assert corr._prediction_combo.value is seg.result.labels, corr._prediction_combo.value
        corr.set_checkpoint(model)
        sess = corr.edit_visible_region()
        assert sess is not None, "no editable window"
        lab = sess.layer
        h, w_ = lab.data.shape
        lab.brush_size = max(4, min(h, w_) // 20)
        rng = np.random.default_rng(0)
        for y, x in zip(rng.integers(0, h, 12), rng.integers(0, w_, 12), strict=True):
            lab.paint((int(y), int(x)), int(1 - lab.data[y, x]))  # flip the model's answer
        corr.save_now()
        edits = int(np.count_nonzero(corr.session.edited))
        assert edits > 0
        corr._epochs_spin.value = 2
        corr._steps_spin.value = 4
        corr._finetune_button.native.click()
        _wait(lambda: corr.handle is not None and corr.handle.done
              and corr._finetune_button.enabled
              and (corr.rerun_task is None or corr.rerun_task.done), timeout=1200)
        status = str(corr._status_label.value)
        assert status.startswith("done"), status
        scores = str(corr._scores_label.value)
        assert "before" in scores and "after" in scores, scores
        return (f"{edits} px edited, saved to {Path(sess.store.path).name}; status {status!r}; "
                f"{scores!r}")

    def evaluate() -> str:
        seg = state["seg"]
        ev = dock(viewer, "Evaluate")
        truth = state["truth"] or (state["corr"].session.layer if "corr" in state else None)
        assert truth is not None, "no ground truth or corrections to score against"
        ev._pred_combo.value = seg.result.heatmap
        ev._truth_combo.value = truth
        ev._evaluate_button.native.click()
        _wait(lambda: ev.result is not None or (ev.handle is not None and ev.handle.done))
        assert ev.result is not None, ev._metrics_label.value
        js, csv = ev.export(out / "evaluation.json")
        assert js.is_file() and csv.is_file()
        m = ev.result["metrics"]
        return (f"against {truth.name!r}: Dice {m.get('dice', float('nan')):.3f}, "
                f"AUC {m.get('auc', float('nan')):.3f}; exported {js.name}, {csv.name}")

    def train() -> str:
        truth = state["truth"] or (state["corr"].session.layer if "corr" in state else None)
        assert truth is not None, "no Labels layer to train from"
        tw = dock(viewer, "Train")
        tw._image_combo.value = state["image"]
        tw._labels_combo.value = truth
        tw._model_combo.value = "unet-tiny"
        tw._epochs_spin.value = 2
        tw._steps_spin.value = 4
        tw._batch_spin.value = 4
        tw._patch_spin.value = 128
        tw._device_combo.value = "cpu"
        tw._out_edit.value = str(out / "runs")
        tw._start_button.native.click()
        _wait(lambda: tw.handle is not None and tw.handle.done and tw._start_button.enabled,
              timeout=1200)
        status = str(tw._status_label.value)
        assert status.startswith("done"), status
        seg = tw.use_model()
        assert seg is state["seg"], "Use this model docked a second Segment widget"
        ckpt = str(seg._ckpt_edit.value)
        from qtpy.QtWidgets import QDockWidget

        main = viewer.window._qt_window
        docks = [d for d in main.findChildren(QDockWidget) if not d.isHidden()]
        tabs = {d.windowTitle() for d in main.tabifiedDockWidgets(docks[-1])} if docks else set()
        assert main.height() <= 1200, f"window {main.height()} px high: past the screen"
        return (f"status {status!r}; Segment now uses {Path(ckpt).name}; {len(docks)} docks, "
                f"window {main.width()}x{main.height()}, tabs {sorted(tabs)}")

    def stain() -> str:
        image = state["image"]
        y, x = tissue_centre(image)
        side = 150 * float(image.scale[-1])
        shapes = viewer.add_shapes(name="reference region")  # as the user does: then draw
        shapes.add_rectangles(np.array([[y - side, x - side], [y + side, x + side]]),
                              edge_color="yellow", face_color=[0, 0, 0, 0])
        st = dock(viewer, "Stain normalization")
        st._image_combo.value = image
        st._ref_combo.value = image
        st._shapes_combo.value = shapes
        st._method_combo.value = "macenko"
        st.fit()
        _wait(lambda: st.layer is not None or (st.handle is not None and st.handle.done))
        assert st.layer is not None, st._status_label.value
        return f"layer {st.layer.name!r}; status {st._status_label.value!r}"

    steps: list[tuple[str, Callable[[], str]]] = [
        ("open", open_file), ("pixel_size", pixel_size), ("segment_view", segment_view)]
    if whole:
        steps += [("segment_whole", segment_whole), ("past_predictions", past_predictions)]
    steps += [("correct_finetune", correct), ("evaluate_export", evaluate), ("train", train),
              ("stain", stain)]
    for name, fn in steps:
        if not w.step(name, fn) and name in ("open", "segment_view"):
            break  # nothing after it can work
    viewer.close()
    return w.steps


def main(argv: list[str] | None = None) -> int:
    """Walk the guide on one file; exit 1 when a step failed."""
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("path", type=Path)
    p.add_argument("--model", required=True)
    p.add_argument("--mpp", type=float, default=None)
    p.add_argument("--no-whole", action="store_true", help="skip the whole-slide run")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = walk(args.path, args.model, args.out, args.mpp, not args.no_whole)
    (args.out / "walk.json").write_text(json.dumps(steps, indent=1))
    return 0 if all(s["ok"] for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
