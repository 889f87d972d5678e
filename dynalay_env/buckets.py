"""Bounded batch shapes: every batched kernel call runs on one of a few row counts.

The env's batched work runs on row groups whose size changes at every call: one group per chosen
layer in a step, an FPI solver's active set shrinking as samples converge, the slots a vector env
resets. oneDNN (torch's CPU convolutions) compiles and caches one primitive per input shape, so
unbounded sizes mean either a cache that grows for hours or, capped, one that recompiles on every
call. Here a group of ``n`` rows runs on ``bucket_size(n)`` rows instead, the smallest size of a
geometric table (see :func:`bucket_sizes`) that holds it. The extra rows copy
a real row and their results are dropped: each row of a convolution depends on its own input only,
so real rows get the same values (up to float rounding: a kernel may round differently at another
batch size, as it already does when a solver's active set shrinks), and the work done on padded rows
is never charged (``SolveResult.flops`` and the env's compute count real rows only). It is tallied apart,
for the benchmarks, in :func:`padding_stats`.

Who pads: the convolutions of the conv families on the CPU (the FPI layers' injections and solver
iterations, the encoder), outside autograd. Matrix products (the ``mlp`` family, the head) compile
nothing per shape, so padding them would only add work; on an accelerator nothing is padded.

The ratio trades padded work (at most ``ratio - 1`` of a group, ``(ratio - 1) / 2`` on average)
against the number of distinct shapes (about ``log(N) / log(ratio)`` per kernel up to ``N`` rows).
:data:`DEFAULT_RATIO` (1.25) pads about 10% of the work and keeps ~18 distinct row counts per kernel up
to N = 1,024, which oneDNN's default cache of 1,024 primitives holds. Measured on 2 CPU threads
(``benchmarks/results/bucket_ratio_cpu.md``, ratios taking turns in one process; and
``env_throughput_2threads_ratio*_cpu.md``, one fresh process per ratio), 1.1 and 1.25 are within
the machines' noise of each other, each ahead in one of the two measurements. ``set_bucket_ratio(1.0)``
turns padding off.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
from torch import Tensor

#: The bucket ratio used unless :func:`set_bucket_ratio` changes it.
DEFAULT_RATIO = 1.25
#: Sizes are tabulated up to this many rows; larger groups are rounded up to a multiple of it.
_TABLE_LIMIT = 1 << 24

_ratio = DEFAULT_RATIO
_table: list[int] = []


def _build_table(ratio: float) -> list[int]:
    sizes = [1]
    while sizes[-1] < _TABLE_LIMIT:
        sizes.append(max(sizes[-1] + 1, math.ceil(sizes[-1] * ratio)))
    return sizes


def set_bucket_ratio(ratio: float) -> None:
    """Set the geometric step between bucket sizes (``>= 1``; ``1.0`` = every size is a bucket,
    i.e. no padding). Applies to every later call in this process."""
    global _ratio, _table
    ratio = float(ratio)
    if not ratio >= 1.0 or not math.isfinite(ratio):
        raise ValueError(f"bucket ratio must be a finite number >= 1.0 (1.0 turns padding off), got {ratio}")
    _ratio = ratio
    _table = [] if ratio == 1.0 else _build_table(ratio)


def bucket_ratio() -> float:
    """The bucket ratio in force."""
    return _ratio


@contextmanager
def using_bucket_ratio(ratio: float) -> Iterator[None]:
    """Run a block under another bucket ratio; the previous one is restored on exit."""
    previous = _ratio
    set_bucket_ratio(ratio)
    try:
        yield
    finally:
        set_bucket_ratio(previous)


def bucket_sizes(limit: int) -> list[int]:
    """Every bucket size ``<= limit`` under the ratio in force (all of ``1..limit`` with padding off)."""
    if not _table:
        return list(range(1, limit + 1))
    return _table[:bisect.bisect_right(_table, limit)]


def bucket_size(n: int) -> int:
    """The number of rows a group of ``n`` rows runs on: the smallest bucket size ``>= n``."""
    if n <= 1 or not _table:
        return n
    if n > _TABLE_LIMIT:
        return -(-n // _TABLE_LIMIT) * _TABLE_LIMIT
    return _table[bisect.bisect_left(_table, n)]


@dataclass
class PaddingStats:
    """Work of the bucketed calls since the last :func:`reset_padding_stats`: rows evaluated and
    FLOPs (per-row cost x rows), real and padded. Padded FLOPs are never part of the env's compute."""

    real_rows: int = 0
    padded_rows: int = 0
    real_flops: int = 0
    padded_flops: int = 0

    @property
    def padded_share(self) -> float:
        """Padded FLOPs as a fraction of all FLOPs run by the bucketed calls (0 when none ran)."""
        total = self.real_flops + self.padded_flops
        return self.padded_flops / total if total else 0.0


_stats = PaddingStats()


def padding_stats() -> PaddingStats:
    """A copy of the padding tallies of this process."""
    return PaddingStats(**{f.name: getattr(_stats, f.name) for f in fields(PaddingStats)})


def reset_padding_stats() -> None:
    """Zero the padding tallies."""
    for f in fields(PaddingStats):
        setattr(_stats, f.name, 0)


@contextmanager
def untallied() -> Iterator[None]:
    """Bucketed calls inside leave :func:`padding_stats` as it was (warm-up work is nobody's)."""
    saved = padding_stats()
    try:
        yield
    finally:
        for f in fields(PaddingStats):
            setattr(_stats, f.name, getattr(saved, f.name))


def record(real_rows: int, run_rows: int, flops_per_row: int) -> None:
    """Tally one bucketed call: ``run_rows`` rows ran, ``real_rows`` of them real."""
    padded = run_rows - real_rows
    _stats.real_rows += real_rows
    _stats.padded_rows += padded
    _stats.real_flops += real_rows * flops_per_row
    _stats.padded_flops += padded * flops_per_row


def pad_index(index: Tensor, size: int) -> Tensor:
    """``index`` ``[n]`` (n >= 1) followed by ``size - n`` copies of its first entry: gathering
    with it gives the rows of ``index`` then padding rows that repeat the first."""
    n = index.shape[0]
    if size == n:
        return index
    return torch.cat([index, index[:1].expand(size - n)])


def pad_rows(t: Tensor, size: int) -> Tensor:
    """``t`` ``[n, ...]`` (n >= 1) with ``size - n`` copies of its first row appended."""
    n = t.shape[0]
    if size == n:
        return t
    return torch.cat([t, t[:1].expand(size - n, *t.shape[1:])])


def call_bucketed(fn: Callable[..., Tensor], *rows: Tensor, flops_per_row: int = 0) -> Tensor:
    """``fn(*rows)`` run on ``bucket_size(n)`` rows; returns the first ``n`` rows of its output.

    Every tensor of ``rows`` is ``[n, ...]`` and ``fn`` must treat rows independently (a layer on
    a batch). ``flops_per_row`` is the cost of one row, for :func:`padding_stats` only.
    """
    n = rows[0].shape[0]
    size = bucket_size(n)
    record(n, size, flops_per_row)
    if size == n:
        return fn(*rows)
    return fn(*(pad_rows(t, size) for t in rows))[:n]


set_bucket_ratio(DEFAULT_RATIO)
