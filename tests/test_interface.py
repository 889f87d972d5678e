"""The framework-neutral algorithm interface (agents/interface.py) and the decision cost of policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import agents.sb3_backend as sb3_backend
from agents.algorithms import ALGORITHMS, get_algorithm
from agents.hyperparams import load_hyperparams
from agents.interface import Agent
from agents.sb3_backend import SB3Agent, lstm_step_flops, sb3_decision_flops
from agents.sb3_vec_env import DynaLayVecEnv
from tests import test_algorithms

# The registry tests' fixtures: one torch thread for the module, an 8-env digits VecEnv.
_one_torch_thread = test_algorithms._one_torch_thread
venv = test_algorithms.venv

SMALL = {"ppo": dict(n_steps=16, batch_size=64, n_epochs=1),
         "dqn": dict(learning_starts=0, buffer_size=1000),
         "ppo_lstm": dict(n_steps=16, batch_size=64, n_epochs=1),
         "maskable_ppo": dict(n_steps=16, batch_size=64, n_epochs=1)}


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
    agent.learning_rate = 0.5
    assert agent.model.learning_rate == 0.5 and agent.num_timesteps == agent.model.num_timesteps == 0
    agent.model._last_obs = np.zeros(1)
    agent.reset_env_on_next_learn()  # what co-training does between phases
    assert agent.model._last_obs is None


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


def test_recurrent_decision_flops_do_not_double_count_an_lstm_the_counter_counts(venv: DynaLayVecEnv,
                                                                                  monkeypatch) -> None:

    agent = build("ppo_lstm", venv)
    lstm = agent.policy.lstm_actor
    assert not sb3_backend._counter_counts_lstm(lstm)  # this torch: the analytic count is added
    added = sb3_decision_flops(agent.model)
    # A torch whose FlopCounterMode counted LSTMs would have them in predict's count already.
    monkeypatch.setattr(sb3_backend, "_counter_counts_lstm", lambda lstm: True)
    assert sb3_decision_flops(agent.model) == added - lstm_step_flops(lstm)


# ---- decision cost (issue: count the policy's own compute) --------------------------------------


class CountingAgent:
    """Runs ``agent.predict`` under FlopCounterMode and counts the FLOPs it executed and the rows
    (observations) it decided for."""

    def __init__(self, agent: Any) -> None:
        self.agent, self.executed, self.rows = agent, 0, 0

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                action_masks: np.ndarray | None = None, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            out = self.agent.predict(observation, state, episode_start, action_masks, deterministic)
        self.executed += counter.get_total_flops()
        self.rows += observation.shape[0]
        return out

    def decision_flops(self) -> int:
        return self.agent.decision_flops()


def test_decision_flops_charged_for_an_mlp_policy_equal_those_executed(venv: DynaLayVecEnv) -> None:
    from agents.evaluate import run_policy
    from tests.agent_fixtures import seq_core

    counting = CountingAgent(build("ppo", venv))
    core = seq_core(32, "val")
    records = run_policy(core, counting)
    per_decision = counting.executed / counting.rows  # executed FLOPs per observation decided for
    assert per_decision > 0 and records.decision_flops == per_decision
    # One decision per step, EXIT included; the forced exit at max_steps is none.
    expected = records.steps + (records.steps < core.max_steps)
    np.testing.assert_array_equal(records.decisions, expected)
    np.testing.assert_allclose(records.flops - records.env_flops, expected * per_decision)
    np.testing.assert_allclose(records.compute, records.flops / core.normalizer)
    free = run_policy(core, counting, decision_flops=0)  # the same episodes, env-only
    np.testing.assert_allclose(free.flops, records.env_flops)
    assert records.summary()["mean_env_compute"] == pytest.approx(free.mean_compute)
    assert records.mean_compute > free.mean_compute


def test_threshold_rules_are_charged_their_statistic() -> None:
    from agents.baselines import ConfidencePolicy, FixedPathPolicy
    from agents.curves import exact_curve, record_core, statistic_flops
    from agents.evaluate import run_policy
    from tests.agent_fixtures import seq_core

    c = 10  # hand counts from the documented per-op formulas: softmax = 5C - 2, + 1 threshold compare
    assert statistic_flops("confidence", c) == 48 + 9 + 1
    assert statistic_flops("entropy", c) == 48 + 30 + 1
    assert statistic_flops("margin", c) == 48 + 17 + 1 + 1
    assert statistic_flops("stable_prediction", c) == 9 + 2 + 1
    with pytest.raises(ValueError, match="unknown statistic"):
        statistic_flops("median", c)
    core = seq_core(32, "val")
    cost = statistic_flops("confidence", core.num_classes)
    assert run_policy(core, FixedPathPolicy((1, 2))).decision_flops == 0
    # The exact curve charges the same decisions as playing the rule along the same order does.
    record = record_core(core)
    charged, free = exact_curve(record, "confidence", cost), exact_curve(record, "confidence")
    assert np.all(charged.mean_compute > free.mean_compute)
    point = len(charged) // 2
    records = run_policy(core, ConfidencePolicy(float(charged.threshold[point]), layer_order=record.order))
    assert records.decision_flops == cost
    assert records.accuracy == pytest.approx(charged.accuracy[point])
    assert charged.mean_compute[point] == pytest.approx(records.mean_compute, rel=1e-9)
    assert free.mean_compute[point] == pytest.approx(records.env_compute.mean(), rel=1e-9)


def test_env_decision_flops_enter_the_reward_only(tiny_digits_model) -> None:
    from dynalay_env.env import make_core

    def play(decision_flops: float) -> list[Any]:
        core = make_core(4, dataset="digits", model=tiny_digits_model, split="val", sample_mode="sequential",
                         max_steps=2, lambda_compute=0.5, mu_redundant=0.0, decision_flops=decision_flops)
        core.seed([0] * 4)
        core.reset()
        first = core.step([1, 0, 2, 1])
        second = core.step([2, 0, 1, 0], active=[True, False, True, True])  # slots 0, 2: forced exit at max_steps
        return [core.normalizer, first, second]

    normalizer, *free = play(0.0)
    _, *charged = play(12_345.0)
    step_cost = 0.5 * 12_345.0 / normalizer
    np.testing.assert_allclose(free[0].reward - charged[0].reward, step_cost, rtol=1e-5)
    np.testing.assert_allclose(free[1].reward - charged[1].reward, [step_cost, 0, step_cost, step_cost], rtol=1e-5)
    for a, b in zip(free, charged, strict=True):
        np.testing.assert_array_equal(a.info["compute"], b.info["compute"])  # info stays env-only
        np.testing.assert_array_equal(a.obs.numpy(), b.obs.numpy())


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "many"])
def test_env_refuses_a_bad_decision_flops(bad: Any, tiny_digits_model) -> None:
    from dynalay_env.env import make_core

    with pytest.raises(ValueError, match="decision_flops must be a finite number >= 0"):
        make_core(1, dataset="digits", model=tiny_digits_model, decision_flops=bad)


def test_train_charges_the_measured_decision_cost_unless_given(tmp_path: Path) -> None:
    import json

    from agents.training import load_run, train
    from tests.agent_fixtures import train_config, trained_ppo_run

    _, agent, _ = load_run(trained_ppo_run())
    assert json.loads((trained_ppo_run() / "train.json").read_text())["decision_flops"] == agent.decision_flops() > 0
    agent, run_dir = train(train_config(tmp_path / "run", timesteps=64, env_kwargs={"decision_flops": 7.0}))
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["env_kwargs"]["decision_flops"] == 7.0 and "decision_flops" not in saved  # given, never copied
    assert json.loads((run_dir / "train.json").read_text())["decision_flops"] == 7.0
    assert agent.env.venv.core.decision_flops == 7.0


def test_adaptive_classifier_counts_decisions() -> None:
    from agents.inference import AdaptiveClassifier
    from agents.training import load_run
    from tests.agent_fixtures import seq_core, trained_ppo_run

    clf = AdaptiveClassifier.from_run(trained_ppo_run())
    _, agent, _ = load_run(trained_ppo_run())
    core = seq_core(8, "val")
    result = clf.predict(core.x[:40])
    decisions = result.steps + (result.steps < core.max_steps)
    assert result.decision_flops == agent.decision_flops() > 0
    np.testing.assert_allclose(result.compute - result.env_compute,
                               decisions * agent.decision_flops() / core.normalizer)
