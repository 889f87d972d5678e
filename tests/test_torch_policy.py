"""``agents.torch_policy``: a torch module's greedy policy, as the evaluator plays it."""

# Tests take the imported fixtures as parameters of the same name (pytest); not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.evaluate import run_policy
from agents.torch_policy import GreedyTorchPolicy, evaluate_greedy
from dynalay_env.env import make_core
from tests.vec_fixtures import _one_thread, digits_model  # noqa: F401  (fixtures)


def test_greedy_policy_takes_the_best_allowed_action() -> None:
    scores = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 1.0, 0.0, 0.0]])
    policy = GreedyTorchPolicy(lambda obs: scores, obs_dim=2, num_actions=4)
    obs = np.zeros((2, 2), dtype=np.float32)
    assert policy.predict(obs)[0].tolist() == [1, 0]
    masks = np.array([[True, False, True, True], [False, True, True, False]])
    actions, state = policy.predict(obs, state="kept", action_masks=masks)
    assert actions.tolist() == [3, 1] and actions.dtype == np.int64 and state == "kept"


def test_decision_flops_are_the_modules_forward_per_observation() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    # Two matrix products of 2 x in x out multiply-adds each (FlopCounterMode counts matmuls only).
    assert GreedyTorchPolicy(net, 10, 4).decision_flops() == 2 * (10 * 32 + 32 * 4)


def test_wrong_number_of_scores_is_named() -> None:
    policy = GreedyTorchPolicy(torch.nn.Linear(3, 5), obs_dim=3, num_actions=4)
    with pytest.raises(ValueError, match="gives 5 scores per observation; the env has 4 actions"):
        policy.predict(np.zeros((1, 3), dtype=np.float32))


def test_evaluate_greedy_is_run_policy_on_val(digits_model, tmp_path) -> None:
    from dynalay_env.model import save_checkpoint

    model, dataset = digits_model
    path = tmp_path / "digits.pt"
    save_checkpoint(path, model, {"name": dataset.name, "fingerprint": dataset.fingerprint})
    core = make_core(64, dataset="digits", model=path, split="val", sample_mode="sequential")
    torch.manual_seed(0)
    net = torch.nn.Linear(core.observation_dim, core.num_actions)
    policy = GreedyTorchPolicy(net, core.observation_dim, core.num_actions)
    report = evaluate_greedy(policy, "DynaLay-Digits-v0", model=path, num_envs=64)
    records = run_policy(core, policy)
    assert report["episodes"] == core.num_examples == records.correct.size
    assert report["accuracy"] == records.accuracy and report["mean_compute"] == records.mean_compute
    assert report["decision_flops"] == 2 * core.observation_dim * core.num_actions
    assert report["env_compute"] < report["mean_compute"]  # the policy's own FLOPs are charged
    with pytest.raises(ValueError, match="needs an env id with a dataset"):
        evaluate_greedy(policy, "DynaLay-v0")
