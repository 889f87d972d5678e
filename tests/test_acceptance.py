"""End-to-end behaviour a demanding user checks first: does a trained agent really adapt its depth?

On ``synthetic`` the difficulty of every example is known (its noise level). An agent trained here
must spend more compute on harder inputs, and at the same compute it must beat a random policy.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from agents.baselines import calibrate_random
from agents.evaluate import run_policy
from agents.training import TrainConfig, train
from dynalay_env.data import load_dataset
from dynalay_env.env import make_core
from dynalay_env.pretrain import run_pretraining

#: PPO env steps (128 envs x 64 steps: 8 updates). Seed 0 (this test's) on the default synthetic model:
#: Spearman 0.60 and +0.097 accuracy over the matched random policy at 65,536 steps, 0.57 and +0.097 at
#: 131,072 (thresholds 0.3 and +0.02). A longer run does not buy a steadier Spearman: at seeds 1 / 2 it was
#: 0.44 / 0.23 at 65,536 steps and 0.29 / 0.39 at 250,000 (the accuracy margin +0.09 to +0.12 throughout).
PPO_STEPS = 65_536


@pytest.mark.slow
def test_agent_spends_more_compute_on_harder_synthetic_inputs(tmp_path):
    checkpoint, _ = run_pretraining("synthetic", run_dir=tmp_path / "pretrain", seed=0, progress=False)
    agent, _ = train(TrainConfig(algo="ppo", env_id="DynaLay-Synthetic-v0", model=str(checkpoint), timesteps=PPO_STEPS,
                                 n_envs=128, seed=0, run_dir=str(tmp_path / "agent"), checkpoint_freq=10**9,
                                 eval_freq=10**9, progress_bar=False,
                                 # 8 PPO updates in this budget: a larger step size than the YAML's 3e-4
                                 # lets the policy get past "one fixed path for everyone".
                                 hyperparams={"n_steps": 64, "learning_rate": 1e-3}))

    def core(split: str):
        return make_core(512, dataset="synthetic", model=str(checkpoint), split=split, sample_mode="sequential")

    test = core("test")
    records = run_policy(test, agent)
    difficulty = load_dataset("synthetic").difficulty["test"]
    rho = spearmanr(difficulty[records.example], records.compute).statistic
    assert rho > 0.3, f"compute does not rise with difficulty: Spearman {rho:.3f}"

    val = core("val")
    random_policy = calibrate_random(lambda p: run_policy(val, p).mean_compute, records.mean_compute)
    random_records = run_policy(test, random_policy)
    assert abs(random_records.mean_compute - records.mean_compute) < 0.05 * max(records.mean_compute, 0.05)
    assert records.accuracy > random_records.accuracy + 0.02, (
        f"agent {records.accuracy:.3f} vs random {random_records.accuracy:.3f} at compute "
        f"{records.mean_compute:.3f} / {random_records.mean_compute:.3f}")
    assert np.isfinite(records.compute).all()
