"""skrl as its users call it (``make test-peers``; skipped where skrl is not installed):
``examples/skrl_ppo.py`` on the single env and on the SAME_STEP vector env beats the random policy of
matched compute on synthetic."""

# Tests take the imported fixtures as parameters of the same name (pytest); not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peer_fixtures import assert_example_learns, require, synthetic_checkpoint  # noqa: F401

require("skrl")

@pytest.mark.learning
# About 10 s of pre-training and 10 s of evaluation, and PPO: 10-15 s on the vector env, 30-40 s on the
# single env (on 2 busy cores).
@pytest.mark.slow
@pytest.mark.parametrize(("check", "num_envs"), [("skrl_ppo_vector", 32), ("skrl_ppo_single", 1)],
                         ids=["vector", "single"])
def test_skrl_ppo_example_beats_matched_random(synthetic_checkpoint: Path, tmp_path: Path, check: str,
                                               num_envs: int) -> None:
    """At the suite's seed (``tests.learning.PEER_MARGIN``, by face: the single env learns from half the
    vector's samples); every seed 0-4 is in benchmarks/results/learning_margins_peers.md."""
    report = assert_example_learns(check, synthetic_checkpoint, tmp_path)
    assert report["args"]["num_envs"] == num_envs
