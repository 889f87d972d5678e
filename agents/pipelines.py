"""Steps on a run folder that the CLI (``train_agent.py``) and the benchmarks both run.

:func:`run_evaluation` is ``train_agent.py evaluate`` without its printing: it loads the run
(config, agent, main model), plays the agent once on every example of a split and compares it with
every baseline (:func:`agents.evaluate.evaluate`), and writes ``report.json`` / ``report.md`` (and
figures) into the run folder.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from agents.evaluate import evaluate
from agents.runs import env_options, resolved_model_options
from agents.training import load_run
from dynalay_env.env import make_core


def run_evaluation(run_dir: str | Path, split: str = "test", n_envs: int = 512, n_boot: int = 1000,
                   figures: bool = True, device: str | None = None) -> dict[str, Any]:
    """Evaluate the run in ``run_dir`` on ``split`` and write its report; returns the report.

    ``n_envs``: episodes played side by side (each example of the split once, in order);
    ``n_boot``: bootstrap resamples of the paired comparison with the threshold hull; ``figures``:
    also write the report's figures; ``device``: the main model's device (default: the run's).
    """
    run_dir = Path(run_dir)
    config, agent, model_path = load_run(run_dir)
    options = env_options(config, str(model_path))
    if device:
        options["device"] = device
    provenance_options = {**options, **resolved_model_options(make_core(1, **options))}

    def make_eval_core(split_name: str) -> Any:
        return make_core(n_envs, **{**provenance_options, "split": split_name, "sample_mode": "sequential"})

    reward = make_eval_core("val").reward.describe()
    metadata = {"env_id": config.env_id, "dataset": config.dataset_name(), "algo": config.algo,
                "reward": reward, "env_kwargs": config.env_kwargs, "train_config": asdict(config)}
    return evaluate(make_eval_core, agent, agent_name=config.algo, split=split, seed=config.seed, n_boot=n_boot,
                    metadata=metadata, run_dir=run_dir, figures=figures)
