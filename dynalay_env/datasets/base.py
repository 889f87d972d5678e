"""The :class:`Dataset` container (four shared splits, validated, read-only, fingerprinted), the
split names and the errors every reader raises."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS: tuple[str, ...] = ("model_train", "agent_train", "val", "test")
DEFAULT_DATASET = "mnist1d"

#: Env var naming the folder with local dataset files (MNIST IDX files, CIFAR pickles).
DATA_ROOT_ENV = "DYNALAY_DATA_ROOT"
#: Env var naming the folder where generated datasets are cached (files go directly in it).
CACHE_DIR_ENV = "DYNALAY_CACHE_DIR"

#: One fixed seed for every deterministic shuffle and split of the built-in readers, so splits never drift.
SPLIT_SEED = 20231220


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing; the message names the file and every path that was searched."""


class DatasetFormatError(ValueError):
    """A dataset file (or cache file) exists but is corrupt or not in the expected format."""


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
