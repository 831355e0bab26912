"""Review queue benchmark (issue 12 point 4): a simulated annotator, the oracle's masks.

From a weak model (trained with the engine's loop on a few images, best checkpoint on a
held-out part), each round the oracle corrects the next K tiles of a strategy's order (its
mask replaces the prediction there) and the model is fine-tuned on every corrected tile by
the product's ``finetune_reviewed_job`` (anchored on confident unreviewed tiles) with a
fixed budget, then the slide is predicted again. Strategies, at equal K and
equal fine-tune budget: ``ranked`` (the engine's default review order: score, spatial diversity), ``random`` (a seeded
order of the same tissue tiles), ``lowest-confidence`` (mean uncertainty only). Cases: GlaS
patients the weak model never saw, stitched into one slide; a CAMELYON16 mosaic of real
tumour/normal patches (mask = tumour patches). See ``review_sim.py`` for the loop.

Reported per case and strategy: mean over seeds of the Dice gain over round 0 after each
round, with a 95 % percentile-bootstrap interval over seeds (engine.uncertainty), of the
user's result (corrected tiles = oracle, elsewhere the model) and of the model alone on the
unreviewed part; the corrected area; and ranked/random gain after the last round (paired
bootstrap over seeds of the ratio of mean gains), against the target 1.5x.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_review.py [--quick] [--seeds 3]
        [--cases glas,camelyon] [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import review_sim as sim  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_HISTO_SHARED_DATA", REPO.parent / "shared" / "data"))
TARGET = 1.5


def _mean_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds and its 95 % percentile-bootstrap interval (resampling seeds)."""
    from napari_histo.engine.uncertainty import bootstrap_ci

    v = np.asarray(values, float)
    lo, hi = bootstrap_ci(v, None, lambda st, w: (w @ st) / w.sum(axis=1), n=2000, seed=seed)
    return float(v.mean()), lo, hi


def ratio_ci(ranked: np.ndarray, random: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """mean(ranked gain) / mean(random gain) and its paired bootstrap interval over seeds
    (resamples whose random gain is not positive are undefined and dropped)."""
    from napari_histo.engine.uncertainty import bootstrap_ci

    st = np.stack([np.asarray(ranked, float), np.asarray(random, float)], axis=1)

    def fn(s: np.ndarray, w: np.ndarray) -> np.ndarray:
        num, den = w @ s[:, 0], w @ s[:, 1]
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    den = float(st[:, 1].mean())
    point = float(st[:, 0].mean() / den) if den > 0 else float("nan")
    lo, hi = bootstrap_ci(st, None, fn, n=2000, seed=seed)
    return point, lo, hi


def gains(runs: list[sim.Run], key: str) -> np.ndarray:
    """(seeds, rounds + 1) gains of ``key`` over round 0, seeds in run order."""
    return np.array([[getattr(r, key) - getattr(run.rounds[0], key) for r in run.rounds]
                     for run in runs])


def report(runs: list[sim.Run], rounds: int) -> tuple[list[str], dict[str, Any]]:
    """Table lines per case and strategy, and the summary numbers (JSON-able)."""
    lines: list[str] = []
    summary: dict[str, Any] = {}
    cases = sorted({r.case for r in runs}, key=[r.case for r in runs].index)
    all_ranked, all_random = [], []
    for case in cases:
        lines.append(f"\n{case}: Dice gain over round 0, mean over seeds [95% bootstrap CI]")
        head = "strategy           " + "".join(f"  round {i} user         " for i in
                                                 range(1, rounds + 1))
        lines.append(head + f"  model-unreviewed r{rounds}     corrected r{rounds}"
                     f"        corrections alone r{rounds}")
        summary[case] = {}
        for strat in sim.STRATEGIES:
            rs = [r for r in runs if r.case == case and r.strategy == strat]
            if not rs:
                continue
            gu, gm = gains(rs, "dice_user"), gains(rs, "dice_model_unreviewed")
            ga = gains(rs, "dice_corrections_only")
            row = f"{strat:<19}"
            per_round = []
            for i in range(1, rounds + 1):
                m, lo, hi = _mean_ci(gu[:, i])
                per_round.append([m, lo, hi])
                row += f"  {m:+.3f} [{lo:+.3f},{hi:+.3f}]"
            m, lo, hi = _mean_ci(gm[:, rounds])
            area = np.mean([r.rounds[rounds].area_pct for r in rs])
            px = np.mean([r.rounds[rounds].area_px for r in rs])
            row += f"  {m:+.3f} [{lo:+.3f},{hi:+.3f}]   {px:.0f} px ({area:.1f}%)"
            ma, alo, ahi = _mean_ci(ga[:, rounds])
            row += f"   {ma:+.3f} [{alo:+.3f},{ahi:+.3f}]"
            lines.append(row)
            summary[case][strat] = {
                "dice0": rs[0].rounds[0].dice_user, "gain_user": per_round,
                "gain_model_unreviewed_last": [m, lo, hi], "area_px_last": float(px),
                "area_pct_last": float(area), "seeds": [r.seed for r in rs],
                "gain_corrections_only_last": [ma, alo, ahi],
                "anchors_last": float(np.mean([r.rounds[rounds].anchors for r in rs]))}
        rk = [r for r in runs if r.case == case and r.strategy == "ranked"]
        rd = [r for r in runs if r.case == case and r.strategy == "random"]
        if rk and rd:
            a, b = gains(rk, "dice_user")[:, rounds], gains(rd, "dice_user")[:, rounds]
            all_ranked.append(a)
            all_random.append(b)
            x, lo, hi = ratio_ci(a, b)
            summary[case]["ratio_ranked_random"] = [x, lo, hi]
            lines.append(f"{case}: ranked/random Dice gain after {rounds} rounds: "
                         f"{x:.2f} [{lo:.2f}, {hi:.2f}]; round-0 Dice "
                         f"{rk[0].rounds[0].dice_user:.3f}")
    if all_ranked:
        # both cases pooled: per seed, the mean gain over cases (seeds pair across cases)
        n = min(len(a) for a in all_ranked + all_random)
        a = np.mean([v[:n] for v in all_ranked], axis=0)
        b = np.mean([v[:n] for v in all_random], axis=0)
        x, lo, hi = ratio_ci(a, b)
        summary["ratio_ranked_random"] = [x, lo, hi]
        lines.append(f"\nranked/random Dice gain after {rounds} rounds: {x:.2f} "
                     f"[{lo:.2f}, {hi:.2f}] (target >= {TARGET})")
    return lines, summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes (smoke test, < 1 min): 1 round, 2 seeds, small slides")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=None, help="regions corrected per round")
    ap.add_argument("--ft-lr", type=float, default=None, help="fine-tune learning rate")
    ap.add_argument("--ft-steps", type=int, default=None, help="fine-tune steps per epoch")
    ap.add_argument("--ft-epochs", type=int, default=None, help="fine-tune epochs")
    ap.add_argument("--batch", type=int, default=None, help="fine-tune batch size")
    ap.add_argument("--cases", default="glas,camelyon")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write runs and summary here")
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args(argv)
    budget = sim.Budget()
    if args.quick:
        budget = sim.Budget(k=2, rounds=1, weak_steps=3, weak_epochs=2, ft_epochs=1,
                            ft_steps=2, batch=4, weak_batch=4)
        args.seeds = min(args.seeds, 2)
    else:
        budget.rounds = args.rounds
    for opt, attr in (("k", "k"), ("ft_lr", "ft_lr"), ("ft_steps", "ft_steps"),
                      ("ft_epochs", "ft_epochs"), ("batch", "batch")):
        if getattr(args, opt) is not None:
            setattr(budget, attr, getattr(args, opt))
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    t_all = time.perf_counter()
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_review_")
        out = Path(tmp.name)
    else:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    makers = {"glas": sim.glas_case, "camelyon": sim.camelyon_case}
    runs: list[sim.Run] = []
    notes = []
    try:
        for name in args.cases.split(","):
            t0 = time.perf_counter()
            case = makers[name](Path(args.data), out / name / "slide", quick=args.quick)
            weak = sim.train_weak(case, budget, out / name / "weak")
            store0 = out / name / "round0.ome.zarr"
            store = sim.predict(case, weak, store0)
            sim.rank(store, budget)
            n_regions = len(store.regions())
            notes.append(f"{name}: {case.note}; {n_regions} tissue tiles of {budget.region} px "
                         f"at {case.model_mpp} um/px; K = {budget.k} per round")
            print(notes[-1] + f" (setup {time.perf_counter() - t0:.0f} s)", flush=True)
            for seed in range(args.seeds):
                for strat in sim.STRATEGIES:
                    runs.append(sim.run_strategy(case, budget, strat, seed, weak, store0,
                                                 out / name / f"{strat}-{seed}",
                                                 log=lambda s: print(s, flush=True)))
        lines, summary = report(runs, budget.rounds)
    finally:
        if tmp is not None:
            tmp.cleanup()
    minutes = (time.perf_counter() - t_all) / 60
    print(f"\nbudget: {asdict(budget)}; {args.seeds} seeds; {minutes:.1f} min; "
          f"load average {open('/proc/loadavg').read().split()[:3]}")
    for line in lines:
        print(line)
    result = {"budget": asdict(budget), "seeds": args.seeds, "minutes": minutes,
              "notes": notes, "summary": summary, "runs": [asdict(r) for r in runs]}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
