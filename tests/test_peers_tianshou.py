"""Tianshou as its users call it (``make test-peers``; skipped where Tianshou is not installed): its
vector envs and collector run a policy through DynaLay's single env, and the episodes, returns and
info match the project's own evaluation of the same policy."""

# Tests take the imported fixtures as parameters of the same name (pytest); not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from agents.evaluate import run_policy
from agents.torch_policy import GreedyTorchPolicy
from dynalay_env.env import DynaLayEnv, make_core
from tests.peer_fixtures import require
from tests.vec_fixtures import _one_thread, digits_model  # noqa: F401  (fixtures)

require("tianshou")

#: The paper reward's prices (the env's defaults).
LAMBDA, MU = 0.1, 0.05


def fixed_policy(obs_dim: int, num_actions: int) -> GreedyTorchPolicy:
    """A deterministic greedy policy from a seeded, untrained MLP: it exits, applies and repeats layers."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(obs_dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, num_actions))
    return GreedyTorchPolicy(net, obs_dim, num_actions)


def tianshou_policy(policy: GreedyTorchPolicy, action_space: Any) -> Any:
    """``policy`` as a Tianshou ``Policy``: the action mask comes from the stacked ``info``."""
    from tianshou.algorithm.algorithm_base import Policy
    from tianshou.data import Batch

    class Greedy(Policy):
        def forward(self, batch: Any, state: Any = None, **kwargs: Any) -> Any:
            masks = np.asarray(batch.info["action_mask"], dtype=bool)
            return Batch(act=policy.predict(np.asarray(batch.obs), action_masks=masks)[0], state=state)

    return Greedy(action_space=action_space)


def test_tianshou_collector_matches_our_evaluation(digits_model) -> None:
    """Every example of ``val`` once, in order, through Tianshou's ``DummyVectorEnv`` and ``Collector``:
    the episodes' lengths, returns and final info equal what :func:`agents.evaluate.run_policy` gives."""
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv

    model, dataset = digits_model
    options = {"dataset": dataset, "model": model, "split": "val", "sample_mode": "sequential", "mask_repeats": True}
    envs = DummyVectorEnv([lambda: DynaLayEnv(**options)])
    single = envs.get_env_attr("unwrapped", 0)[0]
    n = single.core.num_examples
    policy = fixed_policy(single.observation_space.shape[0], int(single.action_space.n))
    buffer = VectorReplayBuffer(total_size=8 * n, buffer_num=1)
    collector = Collector(tianshou_policy(policy, single.action_space), envs, buffer)
    collector.reset()
    stats = collector.collect(n_episode=n)
    assert stats.n_collected_episodes == n

    ours = run_policy(make_core(64, **options), policy, decision_flops=0.0)
    # The buffer's terminal transitions, in episode order: one per example of the split.
    data = buffer.sample(0)[0]
    last = np.flatnonzero(data.terminated)
    assert last.size == n
    info = data.info
    np.testing.assert_array_equal(info["example"][last], np.arange(n))
    np.testing.assert_array_equal(info["correct"][last], ours.correct)
    np.testing.assert_array_equal(info["step"][last], ours.steps)
    np.testing.assert_array_equal(info["path"][last], ours.path)  # fixed-shape info stacks in the buffer
    np.testing.assert_allclose(info["compute"][last], ours.compute, rtol=1e-9)
    # Episode lengths: one decision per step, plus the EXIT unless max_steps forced it.
    forced = ours.steps == single.core.max_steps
    np.testing.assert_array_equal(stats.lens, ours.steps + ~forced)
    # Returns: the paper reward summed over the episode, from our evaluation's own records.
    repeats = ((ours.path[:, 1:] == ours.path[:, :-1]) & (ours.path[:, 1:] > 0)).sum(1)
    fresh = make_core(1, **options)
    fresh.reset()
    start = float(fresh.info_arrays()["compute"][0])  # the encoder and the first head, before any step
    expected = np.where(ours.correct, 1.0, -1.0) - LAMBDA * (ours.compute - start) - MU * repeats
    np.testing.assert_allclose(stats.returns, expected, atol=1e-5)
    assert ours.steps.min() == 0 and ours.steps.max() >= 2  # the policy exits and also goes deep
    envs.close()


@pytest.mark.parametrize("vector", ["DummyVectorEnv", "SubprocVectorEnv"])
def test_tianshou_vector_envs_collect_steps(digits_model, vector: str) -> None:
    import tianshou.env
    from tianshou.data import Collector, VectorReplayBuffer

    model, dataset = digits_model
    envs = getattr(tianshou.env, vector)([lambda: DynaLayEnv(dataset=dataset, model=model) for _ in range(3)])
    envs.seed(0)
    obs_dim, num_actions = envs.observation_space[0].shape[0], int(envs.action_space[0].n)
    policy = tianshou_policy(fixed_policy(obs_dim, num_actions), envs.action_space[0])
    buffer = VectorReplayBuffer(total_size=600, buffer_num=3)
    collector = Collector(policy, envs, buffer)
    collector.reset()
    stats = collector.collect(n_step=150)
    assert stats.n_collected_steps >= 150 and stats.n_collected_episodes > 10
    data = buffer.sample(0)[0]
    assert data.info["path"].shape == (len(data), 4) and data.info["action_mask"].shape == (len(data), num_actions)
    envs.close()
