"""Splits by group (patient, slide, CSV column) so no group is on both sides."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from napari_histo.core.errors import ConfigError


def split_by_group(groups: Sequence[str], *, val_fraction: float = 0.2, seed: int = 0,
                   val_groups: Sequence[str] | None = None,
                   labels: Sequence[int] | npt.NDArray[np.integer] | None = None,
                   ) -> tuple[list[int], list[int]]:
    """Return (train indices, val indices) with every group entirely on one side.

    ``val_groups`` fixes the validation groups. Otherwise whole groups are drawn at random
    until about ``val_fraction`` of the items are in validation; when ``labels`` are given,
    draws where both sides hold every class are preferred (so AUC is defined). With a single
    group, validation reuses the training items (with a warning): nothing else is honest.
    """
    groups = [str(g) for g in groups]
    uniq = sorted(set(groups))
    n = len(groups)
    idx = np.arange(n)
    garr = np.asarray(groups, dtype=object)
    if val_groups:
        missing = sorted(set(map(str, val_groups)) - set(uniq))
        if missing:
            raise ConfigError(f"validation groups {missing} not found; groups are {uniq[:20]}")
        vset = set(map(str, val_groups))
        if vset == set(uniq):
            raise ConfigError("every group is a validation group: leave some for training")
        val = [int(i) for i in idx if garr[i] in vset]
        return [int(i) for i in idx if garr[i] not in vset], val
    if val_fraction <= 0:
        return list(range(n)), []
    if len(uniq) < 2:
        warnings.warn(f"only one group ({uniq[0] if uniq else '-'}): validating on the training "
                      "data, so validation metrics are optimistic", stacklevel=2)
        return list(range(n)), list(range(n))
    rng = np.random.default_rng(seed)
    counts = {g: int((garr == g).sum()) for g in uniq}
    lab = None if labels is None else np.asarray(labels)
    all_classes = None if lab is None else set(lab.tolist())
    best: tuple[float, set[str]] | None = None
    for attempt in range(200):
        order = list(rng.permutation(uniq))
        vset = set()
        total = 0
        for g in order:
            if total >= val_fraction * n or len(vset) >= len(uniq) - 1:
                break
            vset.add(g)
            total += counts[g]
        score = abs(total / n - val_fraction)
        if lab is not None and all_classes is not None:
            vmask = np.isin(garr, list(vset))
            if set(lab[vmask].tolist()) != all_classes or set(lab[~vmask].tolist()) != all_classes:
                score += 10.0
        if best is None or score < best[0]:
            best = (score, vset)
        if lab is None and attempt == 0:
            break
    assert best is not None
    vset = best[1]
    train = [int(i) for i in idx if garr[i] not in vset]
    val = [int(i) for i in idx if garr[i] in vset]
    return train, val
