"""``mnist`` and ``fashion_mnist``: IDX files read from ``data_root`` (raw or gzipped)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from dynalay_env.datasets.base import Dataset, DatasetFormatError
from dynalay_env.datasets.files import find_files, read_bytes, require_root
from dynalay_env.datasets.registry import DatasetLoader
from dynalay_env.datasets.splits import split_official

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
    raw = read_bytes(path)
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


def make_idx_loader(name: str, torchvision_dir: str, url_hint: str) -> DatasetLoader:
    """The loader of IDX dataset ``name`` (four IDX files, flat in ``data_root`` or in torchvision's
    ``data_root/<torchvision_dir>/raw``); ``url_hint`` says where to get them."""
    def loader(data_root: Path | None, cache_dir: Path) -> Dataset:
        root = require_root(name, data_root)
        dirs = [root, root / torchvision_dir / "raw"]  # flat, or torchvision's layout
        files = find_files(
            name, list(_IDX_FILES.values()), dirs, ("", ".gz"),
            hint=f"Get the four IDX files ({url_hint}) and put them in {root} or {root / torchvision_dir / 'raw'}.",
        )
        train = _read_idx_pair(files[_IDX_FILES["train_images"]], files[_IDX_FILES["train_labels"]])
        test = _read_idx_pair(files[_IDX_FILES["test_images"]], files[_IDX_FILES["test_labels"]])
        info = {"source": "IDX files", "files": {k: str(v) for k, v in files.items()}, "scale": "pixel / 255"}
        return Dataset(name, (1, 28, 28), 10, split_official(name, train, test), info=info)

    loader.__doc__ = (
        f"{name}: IDX files in data_root or data_root/{torchvision_dir}/raw (raw or .gz); x float32 "
        "(N, 1, 28, 28) in [0, 1]; t10k -> test; train -> fixed-seed 50/25/25 % model_train/agent_train/val."
    )
    return loader
