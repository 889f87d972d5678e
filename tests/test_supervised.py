"""The learned non-RL baselines ``value_exit``, ``bc`` and ``dagger`` (agents/supervised.py).

Quick tests run them through the whole pipeline on the tiny digits model (train into a run folder,
save/load, the evaluation report, ``AdaptiveClassifier.from_run``, the sweep's search space, the
refusal of a too large search, decision FLOPs). The learn tests (slow) check on the synthetic
dataset, over seeds 0-2, that they learn: ``value_exit`` beats the exact confidence hull at about
0.1 compute and ``bc`` / ``dagger`` beat the random policy of matched compute, decisions counted.
``max_steps=3`` there (40 searched paths, not 121 for 4): the same full depth with 3 layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.algorithms import get_algorithm
from agents.baselines import matched_random
from agents.curves import exact_curve, record_core, statistic_flops, vs_curve
from agents.evaluate import run_policy
from agents.hyperparams import load_hyperparams
from agents.interface import Agent
from agents.sb3_vec_env import DynaLayVecEnv
from agents.supervised import LEARNERS, MAX_SEARCH_PATHS, OracleTable, search_path_count, work_core
from dynalay_env.env import make_core
from tests.agent_fixtures import ENV_ID, digits_checkpoint, digits_dataset, digits_model
from tests.env_fixtures import synthetic_model
from tests.vec_fixtures import one_torch_thread

#: A few hundred states, a few epochs: what the pipeline tests need.
TINY: dict[str, dict] = {"value_exit": dict(n_epochs=2, n_envs_collect=128),
                         "bc": dict(n_epochs=2, n_envs_collect=128, n_snapshots=2),
                         "dagger": dict(n_epochs=1, n_envs_collect=128, n_iterations=2)}


def _build(name: str, env, seed: int = 0, **overrides):
    hp = {**load_hyperparams(name, ENV_ID), **TINY[name], **overrides}
    return get_algorithm(name).build(env, hp, seed=seed)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny networks: torch's intra-op threads cost more than they give (restored after)."""
    with one_torch_thread():
        yield


@pytest.mark.parametrize("name", LEARNERS)
def test_run_folder_save_load_evaluate_and_serve(name: str, tmp_path: Path) -> None:
    """train() writes a run a second backend's agent round-trips through: load_run gives the same
    actions, the evaluation report lists it with decisions counted, AdaptiveClassifier serves it."""
    from agents.inference import AdaptiveClassifier
    from agents.training import TrainConfig, load_run, train
    from train_agent import run_evaluation

    config = TrainConfig(algo=name, env_id=ENV_ID, model=str(digits_checkpoint()), timesteps=300, n_envs=8,
                         run_dir=str(tmp_path / name), checkpoint_freq=10_000, eval_freq=10_000,
                         hyperparams=TINY[name], progress_bar=False)
    agent, run_dir = train(config)
    assert isinstance(agent, Agent) and agent.num_timesteps >= 300
    assert agent.selection["split"] == "val"
    saved = json.loads((run_dir / "train.json").read_text())
    assert saved["decision_flops"] == agent.decision_flops() > 0
    _, loaded, _ = load_run(run_dir)
    assert type(loaded) is type(agent) and loaded.num_timesteps == agent.num_timesteps
    val = make_core(64, dataset=digits_dataset(), model=digits_model(), split="val", sample_mode="sequential")
    a, b = run_policy(val, agent), run_policy(val, loaded)
    assert np.array_equal(a.path, b.path) and a.decision_flops == b.decision_flops == agent.decision_flops()
    if name == "value_exit":  # the report goes through load_run like any run's (one learner suffices)
        report = run_evaluation(run_dir, n_boot=50, figures=False)
        assert report["policy"] == name and report["algo"] == name
        assert report["vs_threshold"]["agent_mean_compute"] == pytest.approx(run_policy(
            make_core(512, dataset=digits_dataset(), model=digits_model(), split="test", sample_mode="sequential"),
            loaded).mean_compute)
    clf = AdaptiveClassifier.from_run(run_dir)
    x, _ = digits_dataset().as_tensors("val")
    served = clf.predict(x)
    assert np.array_equal(served.path, a.path) and np.allclose(served.compute, a.compute)


def test_decision_flops_are_the_forward_pass() -> None:
    """bc's network is PPO's actor (same widths, same activation) and is charged its forward's FLOPs."""
    from stable_baselines3 import PPO

    env = DynaLayVecEnv(4, dataset=digits_dataset(), model=digits_model())
    agent = _build("bc", env)
    ppo = get_algorithm("ppo").build(env, load_hyperparams("ppo", ENV_ID))
    assert isinstance(ppo.model, PPO)
    widths = [m.out_features for m in agent.policy if isinstance(m, torch.nn.Linear)]
    assert widths == [m.out_features for m in ppo.model.policy.mlp_extractor.policy_net
                      if isinstance(m, torch.nn.Linear)] + [env.action_space.n]
    assert agent.decision_flops() == ppo.decision_flops()
    obs_dim = env.observation_space.shape[0]
    assert agent.decision_flops() == sum(2 * m.in_features * m.out_features for m in agent.policy
                                         if isinstance(m, torch.nn.Linear))
    assert obs_dim == agent.policy[0].in_features


@pytest.mark.parametrize("name", LEARNERS)
def test_lambda_compute_is_the_env_rewards_unless_overridden(name: str, tmp_path: Path) -> None:
    """One home for the price of compute: the env's reward, unless the learner is given its own."""
    env = DynaLayVecEnv(4, dataset=digits_dataset(), model=digits_model(), lambda_compute=0.3)
    agent = _build(name, env)
    assert agent.lambda_compute == 0.3 and agent.lambda_override is None
    assert agent.val_score(0.9, 0.5) == pytest.approx(0.9 - 0.3 * 0.5)
    agent.set_env(DynaLayVecEnv(4, dataset=digits_dataset(), model=digits_model(), lambda_compute=0.05))
    assert agent.lambda_compute == 0.05  # follows the env it is attached to
    chosen = _build(name, env, lambda_compute=0.2)
    assert chosen.lambda_compute == 0.2 == chosen.hyperparams()["lambda_compute"]  # on purpose: kept
    chosen.save(tmp_path / "agent.pt")
    assert get_algorithm(name).load(tmp_path / "agent.pt", env=env).lambda_compute == 0.2


@pytest.mark.parametrize("name", ["bc", "dagger"])
def test_too_large_search_is_refused_with_the_limit(name: str) -> None:
    env = DynaLayVecEnv(2, dataset=digits_dataset(), model=digits_model(), max_steps=9)
    paths = search_path_count(env.core.num_layers, 9)
    assert paths > MAX_SEARCH_PATHS
    with pytest.raises(ValueError, match=rf"{name}: max_steps=9 .* {paths:,} paths .*MAX_SEARCH_PATHS=") as info:
        _build(name, env)
    assert "max_steps <=" in str(info.value)


def test_oracle_targets_are_the_exhaustive_minimum() -> None:
    """From every reachable state, the table's action starts a continuation whose cost equals the
    minimum over all continuations, replayed in the env."""
    from dynalay_env.paths import enumerate_paths

    model, dataset = digits_model(), digits_dataset()
    core = make_core(8, dataset=dataset, model=model, split="agent_train", sample_mode="sequential", max_steps=2)
    lam = 0.3
    table = OracleTable(core, lam)
    x, y = core.x[:8], core.y[:8]
    full = enumerate_paths(model, x, y, 2)
    cost = (~full.correct).double() + lam * full.flops / core.normalizer
    for node, row in table.index.items():
        below = [r for r, p in enumerate(full.paths) if p[:len(node)] == node]
        best = cost[below].min(0).values
        for e in range(8):
            act = table.first[row, e]
            chosen = node + ((act - 1,) if act else ())
            below_chosen = [r for r, p in enumerate(full.paths) if p[:len(chosen)] == chosen and (act or p == node)]
            assert cost[below_chosen, e].min() == pytest.approx(float(best[e]))


def test_sweep_searches_lambda_not_a_reward() -> None:
    import optuna

    from agents.sweep import SweepConfig, suggest

    config = SweepConfig(algos=("bc", "value_exit", "ppo"), exit_threshold="0,1").validate()
    bc = suggest(optuna.trial.FixedTrial({"algo": "bc", "lambda_compute": 0.2}), config)
    assert (bc.reward, bc.reward_params, bc.hyperparams) == ("none", {}, {"lambda_compute": 0.2})
    ve = suggest(optuna.trial.FixedTrial({"algo": "value_exit", "lambda_compute": 0.05, "exit_threshold": 0.3}), config)
    assert ve.hyperparams == {"lambda_compute": 0.05, "threshold": 0.3} and ve.reward == "none"
    drawn = suggest(optuna.trial.FixedTrial({"algo": "dagger", "lambda_compute": 0.1}),
                    SweepConfig(algos=("dagger",)).validate())
    assert set(drawn.hyperparams) == {"lambda_compute"}


# ---- learning on synthetic ----------------------------------------------------------------------

SEEDS = (0, 1, 2)
LEARN_ENV = {"max_steps": 3}
#: value_exit's threshold is fixed here (its val choice by lambda is skipped): the test picks 0.1 compute on val.
LEARN: dict[str, dict] = {"value_exit": dict(n_epochs=30, threshold=0.5), "bc": dict(n_epochs=20),
                          "dagger": dict(n_epochs=10, n_iterations=3)}
#: States per run: value_exit walks 4 agent_train passes (1,500 examples x 3 depths, 4 times over).
LEARN_STATES = {"value_exit": 6000, "bc": 3000, "dagger": 3000}
#: value_exit's accuracy over the confidence hull at about 0.1 compute, on test; bc / dagger over the
#: matched random policy. Measured (seeds 0-2, test, 1,250 examples): value_exit +0.097..+0.110 over the
#: hull at 0.091-0.096 compute; bc +0.076..+0.122 and dagger +0.086..+0.115 over random (0.07-0.13 compute).
VALUE_EXIT_MARGIN = 0.03
IMITATION_MARGIN = 0.05


def _synthetic():
    from dynalay_env.datasets import load_dataset

    return synthetic_model(), load_dataset("synthetic")


@pytest.mark.learning
@pytest.mark.slow
def test_value_exit_beats_the_confidence_hull_at_low_compute() -> None:
    model, dataset = _synthetic()
    env = DynaLayVecEnv(8, dataset=dataset, model=model, **LEARN_ENV)
    test = make_core(512, dataset=dataset, model=model, split="test", sample_mode="sequential", **LEARN_ENV)
    confidence = exact_curve(record_core(test), "confidence", statistic_flops("confidence", test.num_classes))
    for seed in SEEDS:
        agent = get_algorithm("value_exit").build(env, {**load_hyperparams("value_exit", "DynaLay-Synthetic-v0"),
                                                        **LEARN["value_exit"]}, seed=seed)
        agent.learn(LEARN_STATES["value_exit"])
        curve = agent.exit_curve(work_core(env.core, "val", 512))  # one model, a whole curve: pick 0.1 on val
        agent.threshold = float(curve["threshold"][np.argmin(np.abs(curve["mean_compute"] - 0.1))])
        records = run_policy(test, agent)
        assert records.decision_flops == agent.decision_flops() > 0 and records.decisions.min() >= 1
        versus = vs_curve(records, confidence, n_boot=20)
        assert abs(records.mean_compute - 0.1) < 0.04
        assert versus["difference"] >= VALUE_EXIT_MARGIN, (seed, versus["difference"], records.mean_compute)


@pytest.mark.learning
@pytest.mark.slow
@pytest.mark.parametrize("name", ["bc", "dagger"])
def test_imitation_beats_the_matched_compute_random_policy(name: str) -> None:
    model, dataset = _synthetic()
    env = DynaLayVecEnv(8, dataset=dataset, model=model, **LEARN_ENV)
    test = make_core(512, dataset=dataset, model=model, split="test", sample_mode="sequential", **LEARN_ENV)
    for seed in SEEDS:
        agent = get_algorithm(name).build(env, {**load_hyperparams(name, "DynaLay-Synthetic-v0"), **LEARN[name]},
                                          seed=seed)
        agent.learn(LEARN_STATES[name])
        learned = run_policy(test, agent)
        match = matched_random(lambda p: run_policy(test, p), learned.mean_compute)
        random = match.records
        assert learned.mean_compute > 0.02, f"{name} learned to EXIT at once"
        assert match.matched, match.note
        assert learned.accuracy >= random.accuracy + IMITATION_MARGIN, (seed, learned.accuracy, random.accuracy)


# ---- regressions: checkpoints, resuming, thresholds, masks ---------------------------------------


class _Snapshots:
    """An SB3 callback (built lazily: SB3 is imported by the learners anyway) recording, at each
    rollout end (where checkpoints are written), the step count, the network and the val choice."""

    def __new__(cls):
        from stable_baselines3.common.callbacks import BaseCallback

        class Snapshots(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.seen: list[tuple[int, dict, dict, float | None]] = []

            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                m = self.model
                self.seen.append((m.num_timesteps, {k: v.clone() for k, v in m.policy.state_dict().items()},
                                  dict(m.selection), getattr(m, "threshold", None)))

        return Snapshots()


def _tiny_env(**options) -> DynaLayVecEnv:
    return DynaLayVecEnv(4, dataset=digits_dataset(), model=digits_model(), **options)


@pytest.mark.parametrize("name", LEARNERS)
def test_a_checkpoint_holds_the_fitted_network_of_its_step_count(name: str) -> None:
    """The callbacks run after the fit and the val choice: what a checkpoint would save at the last
    round (num_timesteps == the total) is the network, threshold and selection the run ends with."""
    agent = _build(name, _tiny_env(), n_envs_collect=64)
    start = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    snapshots = _Snapshots()
    agent.learn(200, callback=snapshots)
    steps, net, selection, threshold = snapshots.seen[-1]
    assert steps == agent.num_timesteps >= 200
    assert all(torch.equal(net[k], v) for k, v in agent.policy.state_dict().items())
    assert not all(torch.equal(net[k], start[k]) for k in net)  # fitted, not the initial network
    assert selection == agent.selection and selection["split"] == "val" and threshold == getattr(agent, "threshold", None)


def test_a_resumed_dagger_keeps_its_seed_random_state_and_iteration(tmp_path: Path) -> None:
    """Saved and loaded: the seed, the random state (the next draw is the one the uninterrupted run
    makes) and the DAgger iteration; a run resumed from its first round's checkpoint continues at
    iteration 1 (beta ** 1), and selection names that real iteration."""
    from stable_baselines3.common.callbacks import BaseCallback

    class SaveFirst(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            if not (tmp_path / "first.pt").exists():
                self.model.save(tmp_path / "first.pt")

    env = _tiny_env()
    agent = _build("dagger", env, seed=7, n_envs_collect=64)
    agent.learn(200, callback=SaveFirst())
    assert agent.iterations_done == 2 and agent.selection["iteration"] in (0, 1)
    agent.save(tmp_path / "agent.pt")
    loaded = type(agent).load(tmp_path / "agent.pt", env=env)
    assert loaded.seed == 7 and loaded.iterations_done == 2
    assert np.array_equal(loaded._draw_examples(50), agent._draw_examples(50))
    resumed = type(agent).load(tmp_path / "first.pt", env=env)
    assert resumed.iterations_done == 1 and resumed.num_timesteps < 200
    resumed.learn(200 - resumed.num_timesteps, reset_num_timesteps=False)
    assert resumed.selection["iteration"] == 1 and resumed.selection["of"] == 1 and resumed.iterations_done == 2


def test_value_exit_compares_its_threshold_in_float64() -> None:
    """A threshold one float64 ulp above a float32 gain exits (gain < threshold), as exit_curve's
    thresholds assume; in float32 the two would be equal (NumPy 2 rounds the Python float)."""
    agent = _build("value_exit", _tiny_env(), threshold=0.5)
    obs = np.zeros((1, agent.observation_space.shape[0]), np.float32)
    gain = np.float64(agent._forward(obs)[0, 0].item())
    agent.threshold = float(np.nextafter(gain, np.inf))
    assert np.float32(agent.threshold) == np.float32(gain)  # the case float32 cannot tell apart
    assert agent.predict(obs)[0][0] == 0
    agent.threshold = float(gain)
    assert agent.predict(obs)[0][0] == agent.order[0]


def test_value_exit_under_a_compute_budget_is_what_the_env_plays() -> None:
    """With compute_budget=2.22 the digits model's masks stop the order at depth 1 for some examples
    and depth 2 for others: the walk never applies a masked layer and every point of exit_curve is
    what the agent at that threshold scores in the env with those masks."""
    env = _tiny_env(compute_budget=2.22)
    agent = _build("value_exit", env, threshold=0.5, n_envs_collect=128)
    agent.learn(400)
    val = work_core(env.core, "val", 128)
    data, infos = agent._walk(val, np.arange(val.num_examples))
    reach = agent._reach(infos, val.num_examples)
    assert set(reach.tolist()) == {1, 2}  # the budget cuts the order of 3 layers, unevenly
    curve = agent.exit_curve(val)
    for k in (0, curve["threshold"].size // 2, curve["threshold"].size - 1):
        agent.threshold = float(curve["threshold"][k])
        records = run_policy(val, agent)
        assert records.accuracy == pytest.approx(curve["accuracy"][k])
        assert records.mean_compute == pytest.approx(curve["mean_compute"][k])
        assert np.all(records.steps <= reach)


def test_bad_options_learn_zero_and_a_mismatched_env(tmp_path: Path) -> None:
    """A learning-rate schedule or a pi/vf net_arch is refused naming what is accepted; learn(0) is
    a no-op; loading into an env of other max_steps names both values."""
    env = _tiny_env()
    with pytest.raises(ValueError, match=r"learning_rate must be a constant number > 0 .*'lin_1e-3'"):
        _build("bc", env, learning_rate="lin_1e-3")
    with pytest.raises(ValueError, match=r"value_exit: net_arch must be a list of hidden layer widths"):
        _build("value_exit", env, net_arch={"pi": [64]})
    for name in ("bc", "dagger"):
        agent = _build(name, env)
        before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
        agent.learn(0)
        assert agent.num_timesteps == 0 and all(torch.equal(before[k], v) for k, v in agent.policy.state_dict().items())
    agent = _build("value_exit", env)
    agent.save(tmp_path / "agent.pt")
    with pytest.raises(ValueError, match=r"max_steps: saved 4, env 2; .*order: saved \(1, 2, 3\), env \(1, 2\)"):
        type(agent).load(tmp_path / "agent.pt", env=_tiny_env(max_steps=2))
