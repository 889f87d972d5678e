"""``synthetic``: a generated 4-class signal dataset whose per-example difficulty is known."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dynalay_env.datasets.base import SPLITS, Dataset
from dynalay_env.datasets.splits import cut

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
    iterations) before its class is clear, so a classifier's accuracy falls as ``difficulty`` grows.

    Returns a Dataset with x float32 (N, 1, length), y int64, ``difficulty`` float32 (N,) per split;
    splits are consecutive slices of ``sizes`` (model_train/agent_train/val/test). Deterministic
    in ``seed``.
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
    splits = cut(x, y, sizes, SPLITS)
    diff = dict(zip(SPLITS, np.split(d.astype(np.float32), np.cumsum(sizes)[:-1]), strict=True))
    info = {"generator": "make_synthetic", "sizes": [int(s) for s in sizes], "length": length,
            "noise_range": [lo, hi], "max_shift": max_shift, "seed": seed, "difficulty": "noise std"}
    return Dataset(name, (1, length), len(templates), splits, difficulty=diff, info=info)


def load_synthetic(data_root: Path | None, cache_dir: Path) -> Dataset:
    """The registered ``synthetic`` dataset: :func:`make_synthetic` with its defaults."""
    del data_root, cache_dir
    return make_synthetic()
