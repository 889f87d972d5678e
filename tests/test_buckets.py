"""Tests of the bucketed row counts (dynalay_env/buckets.py): the table, the padding helpers and the
tallies of padded work. That padding changes no result is tested per layer in test_fpi.py, per env
step in test_core.py (charged = executed - padded)."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from dynalay_env import buckets
from dynalay_env.core import DynaLayCore
from dynalay_env.env import make_core
from dynalay_env.model import LayerSpec, MainModel, default_config
from dynalay_env.paths import enumerate_paths
from tests.env_fixtures import check_charged_equals_executed
from tests.vec_fixtures import tiny_model


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


def small_conv_model() -> tuple[MainModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    layers = (LayerSpec(2, 3, max_iter=20), LayerSpec(4, 3, max_iter=20))
    model = MainModel(default_config((1, 16), 5, channels=6, head_hidden=8, layers=layers)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(37, 1, 16, generator=g), torch.randint(0, 5, (37,), generator=g)
    model.calibrate_normalizer(x)
    return model, x, y


def test_path_enumeration_pads_and_gives_the_exact_rows_table() -> None:
    """Pre-training's path enumeration goes through the bucketed layers: same table as exact rows."""
    model, x, y = small_conv_model()
    with buckets.using_bucket_ratio(1.0):
        exact = enumerate_paths(model, x, y, max_steps=2)
    buckets.reset_padding_stats()
    padded = enumerate_paths(model, x, y, max_steps=2)
    assert buckets.padding_stats().padded_rows > 0  # 37 rows run as 38, active sets as buckets
    assert padded.paths == exact.paths
    assert torch.equal(padded.correct, exact.correct) and torch.equal(padded.flops, exact.flops)
    for k in exact.iterations:
        assert torch.equal(padded.iterations[k], exact.iterations[k])


def test_vector_core_steps_alike_with_and_without_padding() -> None:
    """The batched core under the default buckets and with padding off: same rewards, terminations,
    charged compute and paths; observations equal up to float32 rounding."""
    model, x, y = small_conv_model()
    rng = np.random.default_rng(0)
    actions = rng.integers(0, model.num_layers + 1, size=(12, 23))

    def play(ratio: float) -> list[tuple[np.ndarray, ...]]:
        out = []
        with buckets.using_bucket_ratio(ratio):
            core = DynaLayCore(model, None, 23, max_steps=3, examples=(x, y))
            core.seed(list(range(23)))
            obs = core.reset()
            out.append((obs.numpy(),))
            for a in actions:
                step = core.step(a)
                info = core.info_arrays()
                out.append((step.obs.numpy(), step.reward.numpy(), step.terminated.numpy(),
                            info["flops"], info["path"]))
                done = np.flatnonzero(step.terminated.numpy())
                if done.size:
                    core.reset(done)
        return out

    buckets.reset_padding_stats()
    padded = play(buckets.DEFAULT_RATIO)
    assert buckets.padding_stats().padded_rows > 0
    exact = play(1.0)
    for t, (a, b) in enumerate(zip(padded, exact, strict=True)):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6, err_msg=f"step {t}")
        for u, v in zip(a[1:], b[1:], strict=True):
            np.testing.assert_array_equal(u, v, err_msg=f"step {t}")


@pytest.mark.parametrize("mode", ["frozen", "cotrain"])
def test_a_conv_core_charges_what_ran_less_the_padding(mode: str) -> None:
    """Executed (FlopCounterMode) = charged + padding rows, also while co-training updates the model
    between steps (the update's own padded solves are neither charged nor counted twice)."""
    if mode == "cotrain":  # co-training learns from a dataset's agent_train split: a conv1d one
        model, dataset = tiny_model("synthetic")
        core = make_core(11, dataset=dataset, model=copy.deepcopy(model), mode="cotrain", cotrain_lr=1e-3,
                         cotrain_every=4, max_steps=3)
    else:
        model, x, y = small_conv_model()
        core = DynaLayCore(model, None, 11, max_steps=3, examples=(x, y))
    buckets.reset_padding_stats()
    with buckets.using_bucket_ratio(3.0):  # sizes 1, 2, 6, 18, ...: the update's small groups pad too
        assert check_charged_equals_executed(core, steps=10, seed=2, exit_prob=0.4) > 0
    if mode == "cotrain":
        assert core.cotrainer.updates >= 1
