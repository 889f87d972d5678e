"""Files from a stranger: what the project loads safely, and what it refuses (docs/security.md).

Main models and the supervised agents load with ``torch.load(weights_only=True)``: a file whose pickle
would run code (here: create a folder) is refused with an error naming it, and the code never runs.
``evaluate`` and ``AdaptiveClassifier.from_run`` refuse such files, and an ``agent.zip`` that is not
one, with a one-line error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.inference import AdaptiveClassifier
from dynalay_env.model import CheckpointError
from tests.agent_fixtures import copy_run
from train_agent import main


class Hostile:
    """Pickles as a call to ``os.mkdir(marker)``: loading it with plain pickle creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def _refused_by_evaluate(capsys: pytest.CaptureFixture[str], run_dir: Path) -> str:
    """``train_agent.py evaluate --run-dir RUN``: exit status 2 and one line on stderr (returned)."""
    code = main(["evaluate", "--run-dir", str(run_dir), "--no-figures"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("error: "), err
    return err


def test_a_main_model_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path, capsys):
    run_dir = copy_run(tmp_path / "run")
    marker = tmp_path / "code-ran"
    torch.save({"format_version": 1, "config": Hostile(marker)}, run_dir / "main_model.pt")
    with pytest.raises(CheckpointError, match="is not a readable DynaLay checkpoint") as info:
        AdaptiveClassifier.from_run(run_dir)
    assert str(run_dir / "main_model.pt") in str(info.value)
    assert str(run_dir / "main_model.pt") in _refused_by_evaluate(capsys, run_dir)
    assert not marker.exists()


def test_a_supervised_agent_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path, capsys):
    run_dir = copy_run(tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "algo": "bc", "hyperparams": {}}))
    marker = tmp_path / "code-ran"
    torch.save({"algo": "bc", "policy": Hostile(marker)}, run_dir / "agent.zip")
    with pytest.raises(ValueError, match="is not a readable 'bc' agent: it may hold only tensors") as info:
        AdaptiveClassifier.from_run(run_dir)
    assert str(run_dir / "agent.zip") in str(info.value) and "mkdir" in str(info.value)
    assert "is not a readable 'bc' agent" in _refused_by_evaluate(capsys, run_dir)
    assert not marker.exists()
    torch.save(torch.zeros(3), run_dir / "agent.zip")  # loads, but is no agent
    with pytest.raises(ValueError, match="holds a 'Tensor' agent, not 'bc'"):
        AdaptiveClassifier.from_run(run_dir)


def test_an_agent_zip_that_is_not_one_is_refused(tmp_path, capsys):
    run_dir = copy_run(tmp_path / "run")
    (run_dir / "agent.zip").write_bytes(b"not a zip file\n")
    with pytest.raises(ValueError, match="agent.zip"):
        AdaptiveClassifier.from_run(run_dir)
    assert "agent.zip" in _refused_by_evaluate(capsys, run_dir)
