"""Offline RL from the env (``make test-peers``; skipped where Minari is not installed).

``train_agent.py export`` writes the episodes of a mix of policies as a Minari dataset that
``minari.load_dataset`` reads back, step for step, info included; ``examples/offline_cql.py`` learns
from oracle and random episodes with TorchRL's discrete CQL (smoke only: its margin over the random policy of
matched compute is measured, not asserted; see ``tests.learning.PEER_SMOKE_ONLY``).
"""

# Tests take the imported fixtures as parameters of the same name (pytest); not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import train_agent
from agents.baselines import oracle_search
from agents.minari_export import datasets_path
from dynalay_env.env import make_core
from tests import learning
from tests.peer_fixtures import require, synthetic_checkpoint  # noqa: F401
from tests.vec_fixtures import _one_thread, digits_model  # noqa: F401  (fixtures)

minari = require("minari")
require("jax")  # Minari's DataCollector needs it (minari[create])

EPISODES = 12
POLICIES = ["oracle", "random:0.4", "confidence:0.8", "fixed:1,2"]
LAMBDA, MU = 0.05, 0.05


@pytest.fixture(scope="module")
def digits_checkpoint(digits_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dynalay_env.model import save_checkpoint

    model, dataset = digits_model
    path = tmp_path_factory.mktemp("minari") / "digits.pt"
    save_checkpoint(path, model, {"name": dataset.name, "fingerprint": dataset.fingerprint})
    return path


def test_export_round_trips_through_minari(digits_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "minari"
    argv = ["export", "--dataset-id", "dynalay/digits/mix-v0", "--env", "DynaLay-Digits-v0", "--model",
            str(digits_checkpoint), "--episodes", str(EPISODES), "--out", str(out), "--seed", "3",
            "--env-kwargs", f"lambda_compute:{LAMBDA}", f"mu_redundant:{MU}"]
    for policy in POLICIES:
        argv += ["--policy", policy]
    assert train_agent.main(argv) == 0
    assert f"{EPISODES * len(POLICIES)} episodes" in capsys.readouterr().out
    # The same id again is refused, and nothing is overwritten.
    assert train_agent.main(argv) == 2
    assert "exists already" in capsys.readouterr().err

    with datasets_path(out):
        dataset = minari.load_dataset("dynalay/digits/mix-v0")
        assert dataset.total_episodes == EPISODES * len(POLICIES)
        assert dataset.spec.env_spec.id == "DynaLay-Digits-v0"
        episodes = list(dataset.iterate_episodes())
        env = dataset.recover_environment()  # the env spec rebuilds the env (model by its path)
    core = make_core(1, dataset="digits", model=digits_checkpoint)
    search = oracle_search(core.model, core.x, core.y, core.max_steps)
    for j, episode in enumerate(episodes):
        policy = POLICIES[j // EPISODES]
        n = len(episode.actions)
        assert episode.observations.shape == (n + 1, env.observation_space.shape[0])
        assert episode.rewards.shape == (n,) and episode.terminations[-1] and not episode.terminations[:-1].any()
        info = episode.infos
        for key in ("compute", "correct", "prediction", "label", "step", "path", "fpi_iterations", "action_mask"):
            assert len(info[key]) == n + 1, (key, policy)
        assert info["path"].shape == (n + 1, core.max_steps) and info["compute"].dtype == np.float64
        assert len(set(info["example"].tolist())) == 1  # one example per episode
        # Every action is recorded: the final path is the layers applied, in order.
        steps = int(info["step"][-1])
        np.testing.assert_array_equal(info["path"][-1][:steps], episode.actions[episode.actions > 0][:steps])
        # The return is the paper reward of the recorded episode (its info alone).
        repeats = int(info["repeated"].sum())
        expected = (1.0 if info["correct"][-1] else -1.0) - LAMBDA * (info["compute"][-1] - info["compute"][0]) \
            - MU * repeats
        assert episode.rewards.sum() == pytest.approx(expected, abs=1e-5), policy
        example = int(info["example"][0])
        if policy == "oracle":
            assert bool(info["correct"][-1]) == bool(search.solvable[example])
            assert tuple(info["path"][-1][:steps]) == search.best_path[example]
        if policy == "fixed:1,2":
            assert info["path"][-1][:steps].tolist() == [1, 2]
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_export_refuses_an_unknown_policy(digits_checkpoint: Path, tmp_path: Path, capsys) -> None:
    argv = ["export", "--dataset-id", "dynalay/digits/bad-v0", "--env", "DynaLay-Digits-v0", "--model",
            str(digits_checkpoint), "--episodes", "2", "--out", str(tmp_path), "--policy", "greedy"]
    assert train_agent.main(argv) == 2
    assert "unknown policy 'greedy'; valid forms: oracle, random:P_EXIT" in capsys.readouterr().err


@pytest.mark.slow  # about 10 s of pre-training, 80 s of recording, 40 s of CQL and 10 s of evaluation
def test_offline_cql_example_learns_from_a_minari_dataset(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    """Smoke only (``tests.learning.PEER_SMOKE_ONLY`` says why; its margins over seeds 0-4 are in
    benchmarks/results/learning_margins_peers.md): the example records, learns and evaluates every val
    example, and its policy neither exits at once (compute 0.21-0.36 at every seed measured) nor
    goes full depth everywhere."""
    report = learning.run_peer_example("offline_cql", synthetic_checkpoint, learning.SUITE_SEED, tmp_path)
    assert report["episodes"] == 1250 and report["decision_flops"] > 0
    assert 0.05 < report["mean_compute"] < 1.0, report
