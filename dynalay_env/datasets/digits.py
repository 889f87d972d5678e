"""``digits``: scikit-learn's 8x8 digits (embedded in scikit-learn, nothing to read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dynalay_env.datasets.base import SPLIT_SEED, SPLITS, Dataset
from dynalay_env.datasets.splits import cut, split_sizes

_DIGITS_FRACTIONS = (0.4, 0.2, 0.2, 0.2)


def load_digits(data_root: Path | None, cache_dir: Path) -> Dataset:
    """sklearn's 8x8 digits: 1797 examples, x float32 (N, 64) in [0, 1] (pixel / 16), 10 classes.
    Fixed-seed shuffle, then 40/20/20/20 % -> 719/360/359/359."""
    del data_root, cache_dir  # embedded in sklearn, cheap to load
    from sklearn.datasets import load_digits as sklearn_digits  # lazy: sklearn is slow to import

    bunch = sklearn_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)  # pixel counts are 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    sizes = split_sizes(len(y), _DIGITS_FRACTIONS, SPLITS, "digits")
    return Dataset("digits", (64,), 10, cut(x[perm], y[perm], sizes, SPLITS),
                   info={"source": "sklearn.datasets.load_digits", "scale": "pixel / 16"})
