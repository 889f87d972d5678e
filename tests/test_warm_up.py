"""``DynaLayCore.warm_up``: every bucketed batch size run once before a long run, with nothing else changed."""

from __future__ import annotations

import numpy as np
import torch

from dynalay_env import buckets
from dynalay_env.env import make_core
from dynalay_env.vector_env import DynaLayVectorEnv
from tests.vec_fixtures import tiny_model


def play(env: DynaLayVectorEnv, actions: list[np.ndarray]) -> list[np.ndarray]:
    out = [env.reset(seed=0)[0].copy()]
    for a in actions:
        obs, reward, terminated, _, info = env.step(a)
        out += [obs.copy(), reward.copy(), terminated.copy(), np.asarray(info["compute"]).copy()]
    return out


def test_warm_up_runs_every_bucket_size_and_changes_no_result_nor_tally():
    model, dataset = tiny_model("synthetic")  # conv1d: bucketed on the CPU
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 4, 40) for _ in range(6)]
    cold = play(DynaLayVectorEnv(40, model=model, dataset=dataset), actions)
    env = DynaLayVectorEnv(40, model=model, dataset=dataset)
    before = buckets.padding_stats()
    assert env.core.warm_up() == len(buckets.bucket_sizes(40)) > 1
    assert buckets.padding_stats() == before  # warm-up work is nobody's: never in the padding tallies
    warm = play(env, actions)
    for a, b in zip(cold, warm, strict=True):
        np.testing.assert_array_equal(a, b)


def test_nothing_to_warm_where_nothing_is_bucketed():
    model, dataset = tiny_model("digits")  # mlp: matrix products are never padded
    assert make_core(8, model=model, dataset=dataset).warm_up() == 0
    conv, synthetic = tiny_model("synthetic")
    with buckets.using_bucket_ratio(1.0):  # padding off
        assert conv.warm_bucketed_shapes(torch.zeros(2, *conv.input_shape), 16) == 0
