"""TorchRL as its users call it (``make test-peers``; skipped where TorchRL is not installed).

The four ways to make a DynaLay env under TorchRL pass ``check_env_specs`` and roll out, and
``examples/torchrl_ppo.py`` (TorchRL's collector, GAE and clipped PPO loss with a masked categorical
actor) beats the random policy of matched compute on synthetic.
"""

# Tests take the imported fixtures as parameters of the same name (pytest); not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from gymnasium.vector import AutoresetMode

import dynalay_env  # noqa: F401  (registers the env ids)
from tests.peer_fixtures import assert_example_learns, require, synthetic_checkpoint  # noqa: F401
from tests.vec_fixtures import _one_thread, digits_model  # noqa: F401  (fixtures)

torchrl_envs = require("torchrl.envs")

ENV_ID = "DynaLay-Digits-v0"
N = 4
MAX_STEPS = 4  # the env's default: info["path"] is padded to this many entries


def constructions(model: Any) -> dict[str, Callable[[], Any]]:
    """The four constructions of the issue, each with the session's tiny digits model."""
    from torchrl.envs import GymEnv, GymWrapper, SerialEnv

    return {
        # TorchRL passes frameskip to every env; it drops it on Python's "unexpected keyword" wording.
        "GymEnv": lambda: GymEnv(ENV_ID, model=model),
        "GymEnv-num_envs": lambda: GymEnv(ENV_ID, num_envs=N, model=model),
        "SerialEnv": lambda: SerialEnv(2, lambda: GymEnv(ENV_ID, model=model)),
        "GymWrapper-make_vec-SAME_STEP": lambda: GymWrapper(
            gym.make_vec(ENV_ID, num_envs=N, model=model, autoreset_mode=AutoresetMode.SAME_STEP)),
        "GymWrapper-make_vec-DISABLED": lambda: GymWrapper(
            gym.make_vec(ENV_ID, num_envs=N, model=model, autoreset_mode=AutoresetMode.DISABLED)),
    }


@pytest.mark.parametrize("name", ["GymEnv", "GymEnv-num_envs", "SerialEnv", "GymWrapper-make_vec-SAME_STEP",
                                  "GymWrapper-make_vec-DISABLED"])
def test_torchrl_constructions_pass_check_env_specs_and_roll_out(digits_model, name: str) -> None:
    from torchrl.envs import check_env_specs

    model, _ = digits_model
    env = constructions(model)[name]()
    try:
        check_env_specs(env)
        env.set_seed(0)
        rollout = env.rollout(12, break_when_any_done=False)
        batch = tuple(env.batch_size)
        assert tuple(rollout.batch_size) == (*batch, 12)
        obs = rollout["next", "observation"]
        assert obs.dtype == torch.float32 and torch.isfinite(obs).all()
        done = rollout["next", "done"]
        assert done.any(), "no episode ended in 12 random steps"  # episodes last at most max_steps + 1 steps
        if "SAME_STEP" in name or name == "GymEnv-num_envs":
            # The vector env's fixed-shape info reaches the tensordict: one row per slot and step.
            assert rollout["next", "path"].shape == (*batch, 12, MAX_STEPS)
            assert rollout["next", "action_mask"].dtype == torch.bool
    finally:
        env.close()


def test_torchrl_refuses_next_step_and_says_why(digits_model) -> None:
    from torchrl.envs import GymWrapper

    with pytest.raises(RuntimeError, match="SAME_STEP or DISABLED"):
        GymWrapper(gym.make_vec(ENV_ID, num_envs=N, model=digits_model[0]))


@pytest.mark.learning
@pytest.mark.slow  # about 10 s of pre-training, 30 s of PPO and 10 s of evaluation on 2 busy cores
def test_torchrl_ppo_example_beats_matched_random(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    """At the suite's seed (``tests.learning.PEER_MARGIN``); every seed 0-4 is in
    benchmarks/results/learning_margins_peers.md."""
    assert_example_learns("torchrl_ppo", synthetic_checkpoint, tmp_path)
