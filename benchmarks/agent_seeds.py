"""The goal figures: several algorithms x seeds on one env, each evaluated on ``test`` against the
baselines, summarised as mean +- std over seeds.

Every (algo, seed) is a normal run folder ``ROOT/<algo>-<seed>``, trained and evaluated by the CLI as
a user runs it (``train_agent.py train``, then ``evaluate``, each in a child process), so an
interrupted study resumes where it stopped: finished runs and reports are reused.

    python -m benchmarks agent_seeds --root runs/seeds --model runs/demo/pretrain/main_model.pt

``--json FILE`` also writes the figures (every seed's report summary, training wall time and
provenance) for ``python -m benchmarks reproduce``; the committed ones, training wall time per run
included, are in ``benchmarks/results/agent_seeds_mnist1d_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks import run_cli as cli
from dynalay_env.atomic import atomic_write_json


def run(root: Path, algo: str, seed: int, env: str, model: str | None, extra: list[str]) -> dict:
    """Train (unless ``agent.zip`` exists) and evaluate (unless ``report.json`` exists) one run;
    returns its report."""
    run_dir = root / f"{algo}-{seed}"
    if not (run_dir / "agent.zip").is_file():
        args = ["train", "--algo", algo, "--env", env, "--seed", str(seed), "--run-dir", str(run_dir), "--no-progress",
                "--eval-freq", "1000000"] + (["--model", model] if model else []) + extra
        if (run_dir / "config.json").is_file():
            args.append("--resume")
        if cli(args) != 0:
            raise SystemExit(f"training {run_dir} failed")
    if not (run_dir / "report.json").is_file():
        if cli(["evaluate", "--run-dir", str(run_dir), "--no-figures"]) != 0:
            raise SystemExit(f"evaluating {run_dir} failed")
    return json.loads((run_dir / "report.json").read_text())


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="runs/seeds")
    parser.add_argument("--env", default="DynaLay-MNIST1D-v0")
    parser.add_argument("--model", default=None, help="main-model checkpoint (default: the cached default model)")
    parser.add_argument("--algos", nargs="+", default=["ppo", "dqn", "maskable_ppo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=None,
                        help="agent timesteps per run (default: the algorithm's hyperparams file)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    root = Path(args.root)
    rows = []
    for algo in args.algos:
        extra = ["--env-kwargs", "mask_repeats:true"] if algo == "maskable_ppo" else []
        if args.timesteps is not None:
            extra += ["--timesteps", str(args.timesteps)]
        reports = [run(root, algo, seed, args.env, args.model, extra) for seed in args.seeds]
        rows.append((algo, reports))
    first = rows[0][1][0]
    print(f"\n{args.env}, test split ({first['n_examples']} examples), seeds {args.seeds}; compute 1.0 = full depth")
    print("| policy | accuracy | mean compute | difficulty Spearman | agent - threshold (95% CI) per seed |")
    print("|---|---|---|---|---|")
    for algo, reports in rows:
        intervals = ", ".join(f"{r['vs_threshold']['difference']:+.4f} [{r['vs_threshold']['ci95'][0]:+.4f}, "
                              f"{r['vs_threshold']['ci95'][1]:+.4f}]" for r in reports)
        print(f"| {algo} | {mean_std([r['accuracy'] for r in reports])} | "
              f"{mean_std([r['mean_compute'] for r in reports])} | "
              f"{mean_std([r['difficulty_correlation'] for r in reports])} | {intervals} |")
    best = first["best_fixed_path"]
    print(f"| best fixed path {best['params']['path']} | {best['accuracy']:.4f} | {best['mean_compute']:.3f} | | |")
    print(f"| full depth | {first['full_depth']['accuracy']:.4f} | {first['full_depth']['mean_compute']:.3f} | | |")
    print(f"| oracle | {first['oracle']['accuracy']:.4f} | {first['oracle']['mean_compute']:.3f} | | |")
    if args.json:
        write_json(Path(args.json), args, root, rows)
    return 0


def write_json(path: Path, args: argparse.Namespace, root: Path, rows: list[tuple[str, list[dict]]]) -> None:
    """Every run's headline figures, its training wall time (``train.json``) and the baselines of
    the first report (the same main model and split for every run)."""
    keys = ("accuracy", "mean_compute", "mean_steps", "difficulty_correlation", "vs_threshold", "provenance")
    runs = {}
    for algo, reports in rows:
        runs[algo] = []
        for seed, report in zip(args.seeds, reports, strict=True):
            train = json.loads((root / f"{algo}-{seed}" / "train.json").read_text())
            runs[algo].append({"seed": seed, **{k: report.get(k) for k in keys},
                               "timesteps": train["timesteps_done"], "train_wall_seconds": train["wall_seconds"]})
    first = rows[0][1][0]
    out = {"env": args.env, "split": first["split"], "n_examples": first["n_examples"], "seeds": args.seeds,
           "runs": runs, **{k: first[k] for k in ("best_fixed_path", "full_depth", "oracle")}}
    atomic_write_json(path, out, default=float)
