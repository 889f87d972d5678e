"""Shared helpers of the peer-library tests (``tests/test_peers_*.py``, run by ``make test-peers``).

The main venv has none of these libraries: there the tests skip. ``make test-peers`` sets
``DYNALAY_REQUIRE_PEERS=1``, and then a missing library fails the test instead of skipping it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def require(module: str) -> ModuleType:
    """``module`` imported; skipped where it is missing, unless ``DYNALAY_REQUIRE_PEERS=1``."""
    if os.environ.get("DYNALAY_REQUIRE_PEERS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The learning tests' synthetic model (8 epochs; depth pays on it), saved for the examples' --model."""
    from dynalay_env.datasets import load_dataset
    from dynalay_env.model import save_checkpoint
    from tests.env_fixtures import learning_synthetic_model

    dataset = load_dataset("synthetic")
    path = tmp_path_factory.mktemp("peers") / "main_model.pt"
    save_checkpoint(path, learning_synthetic_model(), {"name": dataset.name, "fingerprint": dataset.fingerprint})
    return path


def assert_example_learns(check: str, checkpoint: Path, workdir: Path) -> dict[str, Any]:
    """Run peer check ``check``'s example (``tests.learning.PEER_RUNS``) at the suite's seed and assert
    that it evaluated every val example, counted its decisions' FLOPs, and passed what
    ``tests.learning.failures`` asserts (it beats the matched random policy by ``PEER_MARGIN``).
    Returns the example's report."""
    from tests import learning

    report = learning.run_peer_example(check, checkpoint, learning.SUITE_SEED, workdir)
    assert report["episodes"] == 1250 and report["decision_flops"] > 0
    result = learning.example_versus_random(check, report, checkpoint, learning.SUITE_SEED, learning.PEER_ENV_KWARGS)
    assert not learning.failures(check, result.to_json()), (learning.failures(check, result.to_json()),
                                                             result.describe())
    return report
