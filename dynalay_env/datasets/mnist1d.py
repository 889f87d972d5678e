"""``mnist1d``: 12,000 signals generated locally by the ``mnist1d`` package, cached on disk (and
shipped with the package under the cache's name)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import logging
import os
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dynalay_env.atomic import atomic_path
from dynalay_env.datasets.base import SPLITS, Dataset, DatasetFormatError
from dynalay_env.datasets.splits import cut

logger = logging.getLogger(__name__)

# Bump when the on-disk cache layout or the generation recipe changes: old files are then ignored.
_CACHE_FORMAT = 1

_MNIST1D_SIZES = (6000, 2000, 2000, 2000)
_MNIST1D_OVERRIDES = {"num_samples": 12000, "train_split": 1.0, "seed": 42}


def _mnist1d_version() -> str:
    try:
        return importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _generate_mnist1d() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Run mnist1d's generator: x float32 [12000, 1, 40], y int64 [12000], generator args.

    ``make_dataset`` reseeds the global ``random`` and ``np.random`` streams; both are saved and
    restored so loading data never changes anyone else's randomness.
    """
    try:
        # Imported lazily: mnist1d pulls in matplotlib and requests. Only make_dataset is used,
        # never get_dataset (which may download).
        from mnist1d.data import get_dataset_args, make_dataset
        from mnist1d.utils import ObjectView
    except ImportError as e:  # pragma: no cover - mnist1d is a declared dependency
        raise ImportError("dataset 'mnist1d' needs the 'mnist1d' package: pip install mnist1d") from e

    args = get_dataset_args(as_dict=True)
    args.update(_MNIST1D_OVERRIDES)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(ObjectView(args))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.asarray(raw["x"], dtype=np.float32)[:, None, :]  # (N, 40) -> (N, 1, 40): one channel
    y = np.asarray(raw["y"], dtype=np.int64)
    if len(y) != sum(_MNIST1D_SIZES):
        raise RuntimeError(f"mnist1d generated {len(y)} examples, expected {sum(_MNIST1D_SIZES)}")
    args.pop("url", None)
    return np.ascontiguousarray(x), y, args


def _mnist1d_cache_path(cache_dir: Path) -> Path:
    # Recipe and package version are in the name: a change makes a new file instead of a stale hit.
    key = f"{_CACHE_FORMAT}|{sorted(_MNIST1D_OVERRIDES.items())}|{_MNIST1D_SIZES}|{_mnist1d_version()}"
    return cache_dir / f"mnist1d_n12000_seed42_{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"


def _dataset_to_npz(ds: Dataset) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {"fingerprint": np.array(ds.fingerprint), "format": np.array(_CACHE_FORMAT)}
    for split in SPLITS:
        arrays[f"{split}_x"], arrays[f"{split}_y"] = ds.splits[split]
    return arrays


def _write_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically, so a reader never sees a half-written file (even
    with several processes generating at once)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # a file object, so numpy does not append ".npz" to the temp name


def _read_mnist1d_cache(path: Path) -> Dataset:
    """Load a cache file; any defect (truncated zip, missing key, wrong shape, fingerprint) raises."""
    # Open the file ourselves: np.load leaks its own handle when a truncated zip fails to parse.
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        if int(z["format"]) != _CACHE_FORMAT:
            raise DatasetFormatError(f"{path}: cache format {int(z['format'])}, expected {_CACHE_FORMAT}")
        splits = {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in SPLITS}
        fingerprint = str(z["fingerprint"])
    for split, size in zip(SPLITS, _MNIST1D_SIZES, strict=True):
        if splits[split][0].shape != (size, 1, 40):
            raise DatasetFormatError(f"{path}: split {split!r} has shape {splits[split][0].shape}")
    # Passing the stored fingerprint makes Dataset verify the bytes it just read.
    return Dataset("mnist1d", (1, 40), 10, splits, fingerprint=fingerprint, info=_mnist1d_info(path))


def _mnist1d_info(path: Path) -> dict[str, Any]:
    return {"generator": "mnist1d.data.make_dataset", "mnist1d_version": _mnist1d_version(),
            "overrides": dict(_MNIST1D_OVERRIDES), "cache_file": str(path)}


#: Generated datasets shipped in the package (``make models``), named as their cache files are: a file
#: is used only where the generator's recipe and version give the same name, so that a first
#: ``gym.make`` need not generate MNIST-1D.
SHIPPED_DATA_DIR = Path(str(importlib.resources.files("dynalay_env").joinpath("data_files")))


def ship_mnist1d(target_dir: str | os.PathLike = SHIPPED_DATA_DIR) -> Path:
    """Generate MNIST-1D afresh and write it into ``target_dir`` under its cache name (compressed),
    for the package to ship; returns the file. Any older shipped MNIST-1D file there is removed."""
    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    x, y, _ = _generate_mnist1d()
    ds = Dataset("mnist1d", (1, 40), 10, cut(x, y, _MNIST1D_SIZES, SPLITS))
    path = _mnist1d_cache_path(target)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **_dataset_to_npz(ds))
    for old in target.glob("mnist1d_*.npz"):
        if old != path:
            old.unlink()
    return path


def load_mnist1d(data_root: Path | None, cache_dir: Path) -> Dataset:
    """MNIST-1D: 12,000 generated signals, x float32 (N, 1, 40), 10 classes, split 6000/2000/2000/2000
    in generation order (make_dataset already shuffles). Read from the user's cache, else from the
    package's shipped copy of the same recipe (:data:`SHIPPED_DATA_DIR`), else generated and cached."""
    del data_root  # generated, nothing to read
    path = _mnist1d_cache_path(cache_dir)
    for candidate in (path, _mnist1d_cache_path(SHIPPED_DATA_DIR)):
        if not candidate.exists():
            continue
        try:
            return _read_mnist1d_cache(candidate)
        # Corrupt in any way -> regenerate: the cache is never a source of truth.
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            logger.warning("mnist1d cache %s is unreadable (%s: %s); regenerating it", candidate, type(e).__name__, e)

    x, y, args = _generate_mnist1d()
    info = _mnist1d_info(path)
    info["args"] = args
    ds = Dataset("mnist1d", (1, 40), 10, cut(x, y, _MNIST1D_SIZES, SPLITS), info=info)
    try:
        _write_npz_atomic(path, _dataset_to_npz(ds))
    except OSError as e:  # read-only or full disk: still usable, just not cached
        logger.warning("could not write mnist1d cache %s (%s); continuing without it", path, e)
    return ds
