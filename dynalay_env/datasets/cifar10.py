"""``cifar10``: the ``cifar-10-batches-py`` pickles read from ``data_root`` (restricted unpickling)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dynalay_env.datasets.base import Dataset, DatasetFormatError
from dynalay_env.datasets.files import find_files, read_bytes, require_root
from dynalay_env.datasets.splits import split_official

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
        obj = _CifarUnpickler(io.BytesIO(read_bytes(path)), encoding="bytes").load()
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


def load_cifar10(data_root: Path | None, cache_dir: Path) -> Dataset:
    """CIFAR-10 from ``cifar-10-batches-py``: x float32 (N, 3, 32, 32) in [0, 1] (not standardised:
    the per-channel mean/std of model_train are in ``info['channel_mean'/'channel_std']`` for models
    that want to standardise); test_batch -> test; data_batch_1..5 -> fixed-seed 50/25/25 %."""
    del cache_dir
    root = require_root("cifar10", data_root)
    dirs = [root / "cifar-10-batches-py", root]
    hint = "Extract cifar-10-python.tar.gz so that cifar-10-batches-py/ lies in data_root."
    if (root / "cifar-10-python.tar.gz").is_file():
        hint = f"Found {root / 'cifar-10-python.tar.gz'}: extract it (tar xzf) in {root}."
    files = find_files("cifar10", [*_CIFAR_TRAIN, _CIFAR_TEST], dirs, ("",), hint)
    batches = [_read_cifar_batch(files[f]) for f in _CIFAR_TRAIN]
    train = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    test = _read_cifar_batch(files[_CIFAR_TEST])
    splits = split_official("cifar10", train, test)
    x_mt = splits["model_train"][0]
    info: dict[str, Any] = {
        "source": "cifar-10-batches-py",
        "files": {k: str(v) for k, v in files.items()},
        "scale": "pixel / 255, not standardised",
        "channel_mean": x_mt.mean(axis=(0, 2, 3), dtype=np.float64).tolist(),  # model_train only
        "channel_std": x_mt.std(axis=(0, 2, 3), dtype=np.float64).tolist(),
    }
    return Dataset("cifar10", (3, 32, 32), 10, splits, info=info)
