"""Ray RLlib backend (``train_agent.py train --framework rllib``), end to end through the CLI.

Skipped where Ray is not installed (the main venv: ray 2.60 pins gymnasium==1.2.2); ``make
test-rllib`` runs it in ``.venv-rllib``. For PPO and DQN: train into a run folder (checkpoint),
resume to a larger total, evaluate (report written), load through ``load_run`` and
``AdaptiveClassifier.from_run``, and beat the matched-compute random policy of the report (the
``random`` baseline, calibrated on val to the agent's compute, played on test) by
``tests.learning.RLLIB_MARGIN``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.rllib", reason="Ray RLlib is not installed (pip install -e \".[rllib]\")")

from agents.rllib_backend import RLLIB_DIR, RLlibAgent, list_rllib_checkpoints  # noqa: E402
from tests import learning  # noqa: E402

ENV_ID = learning.RLLIB_ENV_ID


@pytest.fixture(scope="module")
def synthetic_checkpoint() -> Path:
    """The default synthetic main model (the package's cache; pre-trained once, about 35 s on 2
    cores): on test the head is right 43% of the time on the encoder state, 66% after layers 1-2 and
    70% after 1-3, so a learned path pays clearly over random ones."""
    from dynalay_env.cache import cached_default_model
    from dynalay_env.datasets import load_dataset

    return Path(cached_default_model(load_dataset("synthetic"), progress=False))


@pytest.fixture(scope="module", autouse=True)
def _ray():
    """One small local Ray for the module (the CLI joins it), shut down at the end."""
    import ray

    from agents.rllib_backend import init_ray

    init_ray(None, 0)
    yield
    ray.shutdown()


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_train_checkpoint_resume_evaluate_and_beat_random(algo: str, synthetic_checkpoint: Path, tmp_path: Path):
    from agents.inference import AdaptiveClassifier
    from agents.training import load_run
    from dynalay_env.datasets import load_dataset

    run = tmp_path / "run"
    legs = learning.rllib_train_resume_evaluate(algo, learning.SUITE_SEED, synthetic_checkpoint, run)
    config = json.loads((run / "config.json").read_text())
    assert config["framework"] == "rllib" and "decision_flops" not in config and config["seed"] == learning.SUITE_SEED
    first = legs.first_leg_checkpoints
    assert first and (run / RLLIB_DIR / "dynalay_state.json").is_file()
    summary = json.loads((run / "train.json").read_text())
    assert summary["decision_flops"] > 0
    assert summary["resumed_from"] == int(first[-1].name.split("_")[1]) and summary["timesteps_done"] >= learning.RLLIB_BUDGET[algo][1]
    assert list_rllib_checkpoints(run)[-1] != first[-1]
    assert len(json.loads((run / "val_history.json").read_text())) >= 2  # kept across the resume

    report = legs.report
    assert (run / "report.md").is_file() and report["algo"] == algo
    # benchmarks/results/learning_margins.md: seeds 0-4 (`.venv-rllib/bin/python -m benchmarks
    # learning_margins --checks rllib_ppo rllib_dqn`).
    result = learning.report_margin(f"rllib_{algo}", learning.SUITE_SEED, report)
    print(result.describe())
    assert not learning.failures(result.check, result.to_json()), (
        learning.failures(result.check, result.to_json()), result.describe())

    # Loaded through the algorithm interface: the RLModule alone, masks respected, FLOPs measured.
    _, agent, _ = load_run(run)
    assert isinstance(agent, RLlibAgent) and agent.num_timesteps >= learning.RLLIB_BUDGET[algo][1]
    assert report["decision_flops"] == agent.decision_flops() > 0
    obs = np.zeros((3, agent.module.observation_space.shape[0]), dtype=np.float32)
    only_exit = np.zeros((3, agent.module.action_space.n), dtype=bool)
    only_exit[:, 0] = True
    actions, state = agent.predict(obs, action_masks=only_exit)
    assert state is None and actions.tolist() == [0, 0, 0]
    x, _ = load_dataset("synthetic").as_tensors("test")
    result = AdaptiveClassifier.from_run(run).predict(x[:64])
    assert result.prediction.shape == (64,) and result.decision_flops == agent.decision_flops()
