"""The dataset registry: :func:`register_dataset`, :func:`get_dataset` (also :func:`load_dataset`),
:func:`list_datasets`, and the in-process cache of loaded datasets."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import platformdirs

from dynalay_env.datasets.base import CACHE_DIR_ENV, DATA_ROOT_ENV, DEFAULT_DATASET, Dataset
from dynalay_env.registry import register, unknown_name

#: ``loader(data_root, cache_dir) -> Dataset``. ``data_root`` is the resolved folder of local files
#: (None when neither the argument nor DYNALAY_DATA_ROOT is set); ``cache_dir`` is always a Path.
DatasetLoader = Callable[[Path | None, Path], Dataset]

DATASETS: dict[str, DatasetLoader] = {}


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)




def register_dataset(name: str, loader: DatasetLoader, *, overwrite: bool = False) -> None:
    """Add a dataset to the registry.

    Args:
        name: Registry name used by :func:`get_dataset`.
        loader: ``loader(data_root, cache_dir) -> Dataset``.
        overwrite: Replace an existing entry (refused by default so built-ins are not shadowed by accident).
    """
    register("dataset", DATASETS, name, loader, overwrite=overwrite)
    clear_cache()  # a cached Dataset may belong to the loader being replaced


def default_cache_dir() -> Path:
    """Cache folder for generated datasets: $DYNALAY_CACHE_DIR, else ``user_cache_dir('dynalay_env')/datasets``."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("dynalay_env")) / "datasets"


def get_dataset(
    name: str = DEFAULT_DATASET,
    data_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load a registered dataset by name.

    Args:
        name: One of :func:`list_datasets` (default ``"mnist1d"``).
        data_root: Folder with local files (mnist, fashion_mnist, cifar10); default $DYNALAY_DATA_ROOT.
        cache_dir: Where generated datasets are cached; default :func:`default_cache_dir`.

    Repeated calls with the same (resolved) arguments return the same object from an in-process cache
    (:func:`clear_cache` empties it).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        DatasetNotFoundError: a required file is missing.
        DatasetFormatError: a file is corrupt.
    """
    if name not in DATASETS:
        raise unknown_name("dataset", name, list_datasets())
    if data_root is None:
        data_root = os.environ.get(DATA_ROOT_ENV) or None
    root = Path(data_root).expanduser().resolve() if data_root is not None else None
    cache = Path(cache_dir).expanduser().resolve() if cache_dir is not None else default_cache_dir().resolve()
    return _load_cached(name, DATASETS[name], root, cache)


#: :func:`get_dataset` under the name most callers use.
load_dataset = get_dataset


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, loader: DatasetLoader, data_root: Path | None, cache_dir: Path) -> Dataset:
    # The loader is part of the key so that re-registering a name can never return a stale dataset.
    ds = loader(data_root, cache_dir)
    if not isinstance(ds, Dataset):
        raise TypeError(f"loader for dataset {name!r} returned {type(ds).__name__}, expected Dataset")
    return ds


def clear_cache() -> None:
    """Forget every dataset held by the in-process cache (files on disk are kept)."""
    _load_cached.cache_clear()
