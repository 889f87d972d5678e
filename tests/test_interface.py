"""The framework-neutral algorithm interface (agents/interface.py) and the decision cost of policies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.algorithms import ALGORITHMS, get_algorithm, load_hyperparams
from agents.interface import Agent, SB3Agent, lstm_step_flops, sb3_decision_flops
from agents.sb3_vec_env import DynaLayVecEnv
from tests.vec_fixtures import one_torch_thread

SMALL = {"ppo": dict(n_steps=16, batch_size=64, n_epochs=1),
         "dqn": dict(learning_starts=0, buffer_size=1000),
         "ppo_lstm": dict(n_steps=16, batch_size=64, n_epochs=1),
         "maskable_ppo": dict(n_steps=16, batch_size=64, n_epochs=1)}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def venv(tiny_digits_model) -> Iterator[DynaLayVecEnv]:
    env = DynaLayVecEnv(8, dataset="digits", model=tiny_digits_model)
    yield env
    env.close()


def build(name: str, env: DynaLayVecEnv) -> SB3Agent:
    return get_algorithm(name).build(env, {**load_hyperparams(name, "DynaLay-Digits-v0"), **SMALL[name]}, seed=0)


@pytest.mark.parametrize("name", list(SMALL))
def test_build_save_load_predict_through_the_interface(name: str, venv: DynaLayVecEnv, tmp_path: Path) -> None:
    agent = build(name, venv)
    assert isinstance(agent, Agent) and isinstance(agent.model, ALGORITHMS[name].cls)
    obs = venv.reset()
    masks = np.ones((venv.num_envs, venv.action_space.n), dtype=bool)
    masks[:, 1] = False  # a maskable policy must respect it; the others ignore masks
    actions, state = agent.predict(obs, None, np.ones(venv.num_envs, dtype=bool), masks)
    assert actions.shape == (venv.num_envs,)
    if ALGORITHMS[name].supports_action_masks:
        assert not np.any(actions == 1)
    assert (state is not None) == ALGORITHMS[name].recurrent
    agent.save(tmp_path / "agent.zip")
    loaded = get_algorithm(name).load(tmp_path / "agent.zip")
    assert isinstance(loaded, Agent)
    again, _ = loaded.predict(obs, None, np.ones(venv.num_envs, dtype=bool), masks)
    np.testing.assert_array_equal(actions, again)
    assert loaded.decision_flops() == agent.decision_flops() > 0


def test_sb3_agent_forwards_attribute_writes_to_the_model(venv: DynaLayVecEnv) -> None:
    agent = build("ppo", venv)
    agent._last_obs = None  # what co-training does between phases
    assert agent.model._last_obs is None and agent.num_timesteps == agent.model.num_timesteps == 0


def test_mlp_decision_flops_match_a_hand_count(venv: DynaLayVecEnv) -> None:
    """predict runs only the actor: obs -> 64 -> 64 -> actions (2 FLOPs per multiply-add)."""
    agent = build("ppo", venv)
    d, a = venv.observation_space.shape[0], venv.action_space.n
    assert agent.decision_flops() == 2 * (d * 64 + 64 * 64 + 64 * a)
    dqn = build("dqn", venv)  # the q-net, default [64, 64]
    assert dqn.decision_flops() == 2 * (d * 64 + 64 * 64 + 64 * a)


def test_lstm_step_flops_match_a_hand_computation() -> None:
    # 1 layer, in=5, h=3, biases: 4 gates x (2 x (5 + 3) x 3 + 2 x 3) + 4 x 3 elementwise
    assert lstm_step_flops(torch.nn.LSTM(5, 3)) == 4 * (48 + 6) + 12 == 228
    # 2 layers, no bias: layer 1 in=5, layer 2 in=3
    assert lstm_step_flops(torch.nn.LSTM(5, 3, num_layers=2, bias=False)) == (4 * 48 + 12) + (4 * 36 + 12)
    # bidirectional: layer 2 reads 2h = 6 inputs, both directions counted
    assert lstm_step_flops(torch.nn.LSTM(5, 3, num_layers=2, bidirectional=True)) == \
        2 * (4 * (2 * 8 * 3 + 6) + 12) + 2 * (4 * (2 * 9 * 3 + 6) + 12)


def test_recurrent_decision_flops_add_the_lstm_the_counter_misses(venv: DynaLayVecEnv) -> None:
    agent = build("ppo_lstm", venv)
    from torch.utils.flop_counter import FlopCounterMode

    lstm = agent.policy.lstm_actor
    x = torch.zeros(1, 1, lstm.input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        lstm(x)
    assert counter.get_total_flops() == 0  # why the analytic count is needed
    h, a = lstm.hidden_size, venv.action_space.n
    d = venv.observation_space.shape[0]
    mlp = agent.policy.mlp_extractor.policy_net
    widths = [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)]
    dims = [h, *widths]
    hand = lstm_step_flops(lstm) + sum(2 * i * o for i, o in zip(dims[:-1], dims[1:], strict=True)) + 2 * dims[-1] * a
    assert sb3_decision_flops(agent.model) == hand == agent.decision_flops()
    assert lstm.input_size == d
