"""Check the image recipe: pre-train on MNIST-5k (seeds 0, 1, 2) and on IDX image sets it was not
tuned on, and collect the figures in one file.

Each run is ``train_agent.py pretrain`` exactly as a user types it (one thread), into
``RUN_DIR/m5k_s<seed>`` or ``RUN_DIR/idx_<set>``; a run whose ``pretrain.json`` exists is reused
(resumable). The IDX sets are written by ``python -m benchmarks image_datasets`` into ``RUN_DIR/idx``
when missing. ``--out`` gets, per run: full-depth accuracy, accuracy by depth, both oracles, the
oracle's per-episode compute spread, train seconds, epochs, and the lowest validation full-depth
accuracy from the second epoch on. Written atomically.

    python -m benchmarks image_recipe_check --run-dir runs/image-check --out benchmarks/results/image_recipe_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import command_words, subprocess_argv
from dynalay_env.model import atomic_write_bytes

REPO = Path(__file__).resolve().parent.parent
IDX_SETS = ("mnist5k", "mnist5k_shifted", "mnist5k_inverted", "mnist5k_rotated", "digits28")


def summarise(report: dict[str, Any], command: list[str]) -> dict[str, Any]:
    history = report["history"]
    return {
        "command": " ".join(command),
        "n_test": report["n_examples"],
        "full_depth_accuracy": report["full_depth_accuracy"],
        "accuracy_by_depth": report["accuracy_by_depth"],
        "depth_gap": report["full_depth_accuracy"] - report["accuracy_by_depth"][0],
        "oracle_accuracy": report["oracle_accuracy"],
        "prefix_oracle_accuracy": report.get("prefix_oracle_accuracy"),
        "episode_compute_oracle": report.get("episode_compute", {}).get("oracle"),
        "train_seconds": report["train_seconds"],
        "epochs_run": report["epochs_run"],
        "min_val_full_depth_from_second_epoch": min(h["val_full_depth_accuracy"] for h in history[1:]),
        "provenance": report["provenance"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/image-check")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "image_recipe_check.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="*", default=list(IDX_SETS), help="IDX sets (image_datasets.py names)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs: dict[str, list[str]] = {}
    for seed in args.seeds:
        jobs[f"mnist5k seed {seed}"] = ["pretrain", "--dataset", "mnist5k", "--run-dir", str(run_dir / f"m5k_s{seed}"),
                                        "--seed", str(seed), "--quiet"]
    for name in args.sets:
        folder = run_dir / "idx" / name
        if not folder.is_dir():
            subprocess.run([*subprocess_argv("image_datasets"), "--out", str((run_dir / "idx").resolve()), name],
                           check=True, cwd=REPO, env=env)
        jobs[f"idx {name} (--dataset mnist)"] = ["pretrain", "--dataset", "mnist", "--data-root", str(folder),
                                                 "--run-dir", str(run_dir / f"idx_{name}"), "--quiet"]
    results: dict[str, Any] = {}
    for label, cli in jobs.items():
        out_dir = Path(cli[cli.index("--run-dir") + 1])
        if not (out_dir / "pretrain.json").is_file():
            subprocess.run([sys.executable, str(REPO / "train_agent.py"), *cli], check=True, cwd=REPO, env=env)
        report = json.loads((out_dir / "pretrain.json").read_text())
        results[label] = summarise(report, ["python", "train_agent.py", *cli])

    payload = {"command": " ".join([*command_words("image_recipe_check"), *(argv or sys.argv[1:])]),
               "runs": results}
    atomic_write_bytes(args.out, (json.dumps(payload, indent=2) + "\n").encode())
    print(f"wrote {args.out}")
    return 0
