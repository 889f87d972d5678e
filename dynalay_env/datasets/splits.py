"""How the built-in readers cut their examples into the four splits (docs/design.md, "Splits")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dynalay_env.datasets.base import SPLIT_SEED, SPLITS, DatasetFormatError

#: Official train set of a file dataset -> (model_train, agent_train, val).
TRAIN_FRACTIONS = (0.5, 0.25, 0.25)


def split_sizes(n: int, fractions: Sequence[float], names: Sequence[str], what: str) -> list[int]:
    """Split n examples by ``fractions`` (largest-remainder rounding); every part gets >= 1."""
    if n < len(fractions):
        raise DatasetFormatError(
            f"{what} has only {n} examples; need at least {len(fractions)} to split into {list(names)}"
        )
    raw = [n * f / sum(fractions) for f in fractions]
    sizes = [int(r) for r in raw]
    # Hand the leftover examples to the largest fractional parts (ties -> earlier split).
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - sizes[i]), i))
    for i in order[: n - sum(sizes)]:
        sizes[i] += 1
    # Tiny n: steal from the largest split so no split is empty.
    for i in range(len(sizes)):
        if sizes[i] == 0:
            j = max(range(len(sizes)), key=lambda k: sizes[k])
            sizes[j] -= 1
            sizes[i] += 1
    return sizes


def cut(
    x: np.ndarray, y: np.ndarray, sizes: Sequence[int], names: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Consecutive slices of (x, y) with the given sizes, keyed by split name."""
    out, start = {}, 0
    for name, size in zip(names, sizes, strict=True):
        out[name] = (x[start : start + size], y[start : start + size])
        start += size
    return out


def split_official(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """File-dataset rule: official test -> ``test``; official train, permuted with a fixed seed, is
    cut 50/25/25 % into model_train/agent_train/val (e.g. 60000 -> 30000/15000/15000)."""
    x_tr, y_tr = train
    if len(test[1]) == 0:
        raise DatasetFormatError(f"{name}: the official test set is empty")
    names = SPLITS[:3]
    sizes = split_sizes(len(y_tr), TRAIN_FRACTIONS, names, f"{name} official train set")
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y_tr))
    splits = cut(x_tr[perm], y_tr[perm], sizes, names)
    splits["test"] = test
    return splits
