"""The MNIST-5k results (docs/results.md): run the demo on ``mnist5k`` and collect its figures in one file.

Runs ``train_agent.py demo --dataset mnist5k --run-dir RUN`` (pre-train the main model, train PPO on
``agent_train``, evaluate on ``test`` against the baselines), then writes ``--out`` (JSON) with the
command, the model's provenance, accuracy by depth, both oracles, the per-episode compute spread and
the agent against the baselines. Resumable: the demo reuses what ``RUN`` already holds (the
pre-trained model, the trained agent), so an interrupted run continues where it stopped; ``--out``
is written atomically, so a reader never sees half a file.

    python -m benchmarks mnist5k_demo --run-dir runs/mnist5k-demo --out benchmarks/results/mnist5k_demo.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import dynalay_env
from dynalay_env.atomic import atomic_write_json

REPO = Path(__file__).resolve().parent.parent


def collect(run_dir: Path, command: list[str]) -> dict[str, Any]:
    """The results file's content from a finished demo run folder."""
    pretrain = json.loads((run_dir / "pretrain" / "pretrain.json").read_text())
    report = json.loads((run_dir / "agent" / "report.json").read_text())
    keep_pretrain = ("dataset", "split", "n_examples", "full_depth_accuracy", "accuracy_by_depth", "oracle_accuracy",
                     "prefix_oracle_accuracy", "oracle_max_steps", "episode_compute", "train_seconds", "epochs_run",
                     "provenance", "model_provenance", "pretrain_config", "model_config", "costs_flops",
                     "iterations_full_depth_path")
    keep_report = ("split", "n_examples", "provenance", "accuracy", "mean_compute", "full_depth", "best_fixed_path",
                   "thresholds_chosen_on_val", "oracle", "vs_threshold", "episode_compute", "difficulty_correlation",
                   "baselines", "policy", "mean_env_compute", "decision_flops", "mean_decisions",
                   "prefix_oracle")
    return {
        "command": " ".join(command),
        "pretrain": {k: pretrain[k] for k in keep_pretrain if k in pretrain},
        "agent_report": {k: report[k] for k in keep_report if k in report},
    }


def run_is_current(run_dir: Path, recipe_version: int) -> bool:
    """Whether the demo in ``run_dir`` pre-trained its model with ``recipe_version`` (so it may be reused)."""
    pretrain = json.loads((run_dir / "pretrain" / "pretrain.json").read_text())
    return (pretrain.get("model_provenance") or {}).get("recipe_version") == recipe_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/mnist5k-demo", help="demo run folder (reused when present)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "mnist5k_demo.json"),
                        help="results file to write (JSON)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timesteps", type=int, default=None, help="PPO timesteps (default: the demo's)")
    args = parser.parse_args(argv)

    run_dir = Path(args.run_dir)
    command = [sys.executable, str(REPO / "train_agent.py"), "demo", "--dataset", "mnist5k", "--run-dir",
               str(run_dir), "--seed", str(args.seed)]
    if args.timesteps is not None:
        command += ["--timesteps", str(args.timesteps)]

    if (run_dir / "agent" / "report.json").is_file() and not run_is_current(run_dir, dynalay_env.RECIPE_VERSION):
        raise SystemExit(f"{run_dir} holds a demo of another recipe version than the current "
                         f"{dynalay_env.RECIPE_VERSION}: give a fresh --run-dir")
    if not (run_dir / "agent" / "report.json").is_file():
        subprocess.run(command, check=True, cwd=REPO)
    results = collect(run_dir, ["python", "train_agent.py", *command[2:]])
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0
