"""Tests of the bucketed row counts (dynalay_env/buckets.py): the table, the padding helpers and the
tallies of padded work. That padding changes no result is tested per layer in test_fpi.py, per env
step in test_core.py (charged = executed - padded)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dynalay_env import buckets


@pytest.mark.parametrize("ratio", [1.1, 1.25, 1.5, 2.0])
def test_bucket_sizes_are_geometric_and_cover_every_count(ratio: float) -> None:
    with buckets.using_bucket_ratio(ratio):
        sizes = buckets.bucket_sizes(100_000)
        assert sizes[0] == 1 and sizes == sorted(set(sizes))
        for small, big in itertools.pairwise(sizes):
            assert big == max(small + 1, math.ceil(small * ratio))
        # Few shapes: about log(N) / log(ratio) of them, plus the small counts that step by one.
        assert len(sizes) <= math.log(100_000) / math.log(ratio) + 1 / (ratio - 1) + 2
        for n in range(0, 3000):
            b = buckets.bucket_size(n)
            assert b >= n and (n == 0 or b in sizes) and b <= max(n, math.ceil(n * ratio) + 1)
            assert buckets.bucket_size(b) == b


def test_ratio_one_turns_padding_off_and_the_ratio_is_restored() -> None:
    before = buckets.bucket_ratio()
    with buckets.using_bucket_ratio(1.0):
        assert [buckets.bucket_size(n) for n in range(50)] == list(range(50))
        assert buckets.bucket_sizes(5) == [1, 2, 3, 4, 5]
    assert buckets.bucket_ratio() == before == buckets.DEFAULT_RATIO
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="bucket ratio must be a finite number >= 1.0"):
            buckets.set_bucket_ratio(bad)
    assert buckets.bucket_ratio() == before


def test_call_bucketed_pads_with_a_real_row_and_returns_the_real_rows_only() -> None:
    seen: list[torch.Tensor] = []

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        seen.append(a)
        return a * 2 + b

    a, b = torch.arange(6.0).view(6, 1), torch.ones(6, 1)
    buckets.reset_padding_stats()
    with buckets.using_bucket_ratio(2.0):
        out = buckets.call_bucketed(fn, a, b, flops_per_row=10)
    assert seen[0].shape == (8, 1) and seen[0][6:].eq(a[0]).all()  # padding repeats the first row
    assert torch.equal(out, a * 2 + b)
    stats = buckets.padding_stats()
    assert (stats.real_rows, stats.padded_rows, stats.real_flops, stats.padded_flops) == (6, 2, 60, 20)
    assert stats.padded_share == pytest.approx(0.25)
    buckets.reset_padding_stats()
    assert buckets.padding_stats().padded_share == 0.0


def test_pad_index_repeats_the_first_index() -> None:
    idx = torch.tensor([4, 2, 9])
    assert buckets.pad_index(idx, 3) is idx
    assert buckets.pad_index(idx, 5).tolist() == [4, 2, 9, 4, 4]
    assert buckets.pad_rows(torch.eye(2), 3).tolist() == [[1, 0], [0, 1], [1, 0]]
