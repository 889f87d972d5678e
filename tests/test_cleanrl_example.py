"""``examples/cleanrl_ppo.py``, the single-file PPO (torch + gymnasium only): it learns, on synthetic,
to beat the random policy of matched compute on ``val`` (``tests.learning.CLEANRL_MARGIN``), it never
imports Stable-Baselines3, and its minibatches never leave a sample that cannot be normalised."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests import learning
from tests.env_fixtures import no_default_model_training  # noqa: F401

SCRIPT = learning.CLEANRL_SCRIPT


@pytest.mark.learning
@pytest.mark.slow  # about 10 s of pre-training and 20 s of PPO on 2 busy cores
def test_cleanrl_ppo_beats_matched_random_without_sb3(tmp_path: Path) -> None:
    """At the suite's seed; every seed 0-4 under two kernel settings is in
    benchmarks/results/learning_margins.md. The runner fails if any RL framework got imported."""
    checkpoint = learning.save_learning_model(tmp_path / "main_model.pt")
    done, report = learning.run_cleanrl(checkpoint, learning.SUITE_SEED, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "eval on val (1250 examples)" in done.stdout
    assert report["episodes"] == 1250 and report["decision_flops"] > 0
    assert report["mean_compute"] > 0.05, f"the agent learned to EXIT at once: {report}"
    result = learning.example_versus_random("cleanrl_ppo", report, checkpoint, learning.SUITE_SEED,
                                            learning.CLEANRL_ENV_KWARGS)
    assert not learning.failures("cleanrl_ppo", result.to_json()), (
        learning.failures("cleanrl_ppo", result.to_json()), result.describe())


def _example_module() -> Any:
    """The example imported as a module (its dataclasses need it in ``sys.modules``)."""
    if "cleanrl_ppo_example" not in sys.modules:
        spec = importlib.util.spec_from_file_location("cleanrl_ppo_example", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["cleanrl_ppo_example"]


@pytest.mark.parametrize(("n", "size"), [(769, 256), (1025, 256), (257, 256), (3, 256), (2, 1), (512, 256)])
def test_minibatches_never_leave_a_sample_that_cannot_be_normalised(n: int, size: int) -> None:
    """The valid-sample count varies by rollout: 769 samples in slices of 256 left a last minibatch of
    one, whose advantage std was NaN (and NaN weights after the step)."""
    batches = _example_module().minibatches(n, size)
    assert sorted(torch.cat(batches).tolist()) == list(range(n))  # every sample once
    assert min(len(b) for b in batches) >= 2
    assert max(len(b) for b in batches) - min(len(b) for b in batches) <= 1
    advantages = torch.randn(n)
    assert all(torch.isfinite(advantages[b].std()) for b in batches)


def test_minibatches_of_fewer_than_two_samples_are_skipped() -> None:
    assert _example_module().minibatches(1, 256) == [] and _example_module().minibatches(0, 256) == []
