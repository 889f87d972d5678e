"""Shared helpers of the peer-library tests (``tests/test_peers_*.py``, run by ``make test-peers``).

The main venv has none of these libraries: there the tests skip. ``make test-peers`` sets
``DYNALAY_REQUIRE_PEERS=1``, and then a missing library fails the test instead of skipping it.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def require(module: str) -> ModuleType:
    """``module`` imported; skipped where it is missing, unless ``DYNALAY_REQUIRE_PEERS=1``."""
    if os.environ.get("DYNALAY_REQUIRE_PEERS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The learning tests' synthetic model (8 epochs; depth pays on it), saved for the examples' --model."""
    from dynalay_env.data import load_dataset
    from dynalay_env.model import save_checkpoint
    from tests.env_fixtures import learning_synthetic_model

    dataset = load_dataset("synthetic")
    path = tmp_path_factory.mktemp("peers") / "main_model.pt"
    save_checkpoint(path, learning_synthetic_model(), {"name": dataset.name, "fingerprint": dataset.fingerprint})
    return path


def run_example(script: str, args: list[str], cwd: Path, timeout: int = 420) -> dict[str, Any]:
    """Run ``examples/<script>`` as a user would (one thread), with ``--results``; its JSON report."""
    results = cwd / "eval.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "examples" / script), *args, "--results", str(results)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(results.read_text())


def assert_beats_matched_random(report: dict[str, Any], checkpoint: Path, margin: float, **env_options: Any) -> None:
    """The report's accuracy on ``val`` beats, by ``margin``, the random policy calibrated to spend
    the same mean compute (decisions included) on the same split, model and env options."""
    from agents.baselines import calibrate_random
    from agents.evaluate import run_policy
    from dynalay_env.env import make_core

    assert report["episodes"] == 1250 and report["decision_flops"] > 0
    assert report["mean_compute"] > 0.05, f"the agent learned to EXIT at once: {report}"
    core = make_core(256, dataset="synthetic", model=checkpoint, split="val", sample_mode="sequential",
                     **env_options)
    random = run_policy(core, calibrate_random(lambda p: run_policy(core, p).mean_compute, report["mean_compute"]))
    assert random.mean_compute == pytest.approx(report["mean_compute"], rel=0.02), "compute not matched"
    assert report["accuracy"] >= random.accuracy + margin, (
        f"accuracy {report['accuracy']:.3f} at compute {report['mean_compute']:.3f}, random "
        f"{random.accuracy:.3f} at {random.mean_compute:.3f}")
