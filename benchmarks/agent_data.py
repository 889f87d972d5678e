"""Enough data for the learner? The ``val`` margin over the confidence hull against the number of
``agent_train`` examples, with and without ``augment``, for ``value_exit`` and PPO.

MNIST-5k's ``agent_train`` split holds 834 examples. A policy reading a ~150-wide observation may
overfit them where a threshold has one parameter. This benchmark trains each learner on the first N
examples of the split's fixed permutation (env option ``agent_train_size``; N = 200, 400 and all
834 by default), with and without fresh random distortions of the images each episode (env option
``augment``), and plays every run once on the whole ``val`` and ``test`` splits (never subsampled,
never augmented). Each run is compared with the exact confidence-threshold hull at its own compute,
decisions counted (:func:`agents.curves.vs_curve`, paired bootstrap over examples). If the margin
still rises from 400 to 834 examples, more data (or augmentation) should help the learner.

The runs are the introspection study's (:mod:`benchmarks.introspection`): ``value_exit`` and PPO at
``lambda_compute`` 0.1 with the project's hyperparameters (PPO batched on 64 envs at the project's
rollout size; 200k steps; ``value_exit`` its file's 20k labelled states), trained by
``train_agent.py train`` in child processes ``--jobs`` at a time, one torch thread each. Every run
folder is resumable: a finished, evaluated run is reused.

    python -m benchmarks agent_data --run-dir runs/agent_data                       # the measurement
    python -m benchmarks agent_data --run-dir /tmp/agent-data --sizes 100 --seeds 0 \\
        --timesteps 4096 --value-exit-timesteps 2000 --out-dir /tmp/agent-data       # smoke test

Outputs: ``OUT/agent_data_<task>.json`` and ``.md`` (``--out-dir``, default ``benchmarks/results``):
every run's figures, the mean over seeds per (learner, examples, augment), the commands, the main
model's provenance and the wall time of each invocation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from agents.curves import exact_curve, record_core, statistic_flops, vs_curve
from agents.hyperparams import load_hyperparams
from benchmarks import command_words
from benchmarks.introspection import (
    EVAL_SLOTS,
    MNIST5K_TASKS,
    TASK_ENVS,
    Job,
    PolicySpec,
    load_records,
    needs_own_hyperparams,
    observation_groups,
    record_invocation,
    run_jobs,
    write_hyperparams,
)
from benchmarks.reproduce import (
    checkpoint_provenance,
    command_line,
    env_model_provenance,
    machine,
    record_by_role,
    write_json,
    write_text,
)
from dynalay_env import ENV_IDS
from dynalay_env.datasets import load_dataset
from dynalay_env.env import make_core

#: Numbers of ``agent_train`` examples the learners train on (the last: MNIST-5k's whole split).
SIZES: tuple[int, ...] = (200, 400, 834)
ALGOS: tuple[str, ...] = ("value_exit", "ppo")
SEEDS: tuple[int, ...] = (0, 1)
LAMBDA = 0.1
#: PPO's training steps (``value_exit`` takes its hyperparams file's labelled states unless told).
TIMESTEPS = 200_000
N_BOOT = 1000
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def run_name(algo: str, size: int, augment: bool) -> str:
    """The run folder stem of one configuration: ``<algo>-n<size>[-aug]``."""
    return f"{algo}-n{size}{'-aug' if augment else ''}"


class Config(NamedTuple):
    """One (learner, examples, augment) configuration and the study's spec that trains it."""

    algo: str
    size: int
    augment: bool
    spec: PolicySpec


def plan(algos: Sequence[str], sizes: Sequence[int], augments: Sequence[bool], seeds: Sequence[int],
         timesteps: int, value_exit_timesteps: int) -> list[Config]:
    """One :class:`Config` per (learner, examples, augment), its spec as the introspection study
    configures ``value_exit`` and PPO at lambda 0.1 (PPO batched)."""
    configs = []
    for algo in algos:
        for augment in augments:
            for size in sizes:
                data = (f"agent_train_size:{size}", f"augment:{str(augment).lower()}")
                name = run_name(algo, size, augment)
                if algo == "ppo":
                    spec = PolicySpec(name, "rl", "ppo", (f"lambda_compute:{LAMBDA}", observation_groups(False), *data),
                                      tuple(seeds), timesteps, batched=True)
                else:  # value_exit: lambda is its own hyperparameter (val choice); the env gets the same
                    spec = PolicySpec(name, "supervised", algo, (f"lambda_compute:{LAMBDA}", *data), tuple(seeds),
                                      value_exit_timesteps, hyperparams=(("lambda_compute", LAMBDA),))
                configs.append(Config(algo, size, augment, spec))
    return configs


def confidence_curves(task: str, model_path: str) -> dict[str, Any]:
    """The exact confidence-threshold curve (its statistic's FLOPs charged per decision) on the whole
    ``val`` and ``test`` splits: ``split -> ExactCurve``."""
    curves = {}
    for split in ("val", "test"):
        core = make_core(EVAL_SLOTS, dataset=ENV_IDS[TASK_ENVS[task]], model=model_path, split=split,
                         sample_mode="sequential")
        curves[split] = exact_curve(record_core(core), "confidence", statistic_flops("confidence", core.num_classes))
    return curves


def run_figures(root: Path, spec: PolicySpec, seed: int, curves: dict[str, Any], n_boot: int) -> dict[str, Any]:
    """One finished run: its training figures and, per split, accuracy, mean compute (decisions
    counted) and the margin over the confidence hull with its 95% paired-bootstrap interval."""
    run_dir = root / "runs" / f"{spec.name}-s{seed}"
    summary = json.loads((run_dir / "study_eval.json").read_text())
    out: dict[str, Any] = {"policy": spec.name, "seed": seed, "timesteps": summary["train"].get("timesteps_done"),
                           "train_wall_seconds": summary["train"].get("wall_seconds")}
    for split in ("val", "test"):
        records = load_records(run_dir, split, spec.name)
        margin = vs_curve(records, curves[split], n_boot=n_boot)
        out[split] = {"accuracy": records.accuracy, "mean_compute": records.mean_compute,
                      "margin": margin["difference"], "ci95": margin["ci95"]}
    return out


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(runs: list[dict[str, Any]], algos: Sequence[str], sizes: Sequence[int],
              augments: Sequence[bool]) -> list[dict[str, Any]]:
    """Per (learner, augment, examples): the seeds' mean and std of the val and test margins and of
    the val accuracy and compute; per (learner, augment) also the change of the mean val margin from
    the second-largest to the largest number of examples (``rise_at_largest``: does it still rise?)."""
    rows = []
    for algo in algos:
        for augment in augments:
            prev = None
            for size in sorted(sizes):
                mine = [r for r in runs if r["algo"] == algo and r["augment"] == augment and r["size"] == size]
                if not mine:
                    continue
                row = {"algo": algo, "augment": augment, "size": size, "seeds": [r["seed"] for r in mine],
                       **{f"{split}_{key}": _mean_std([r[split][key] for r in mine])
                          for split in ("val", "test") for key in ("margin", "accuracy", "mean_compute")}}
                row["val_margin_change"] = None if prev is None else row["val_margin"]["mean"] - prev
                prev = row["val_margin"]["mean"]
                rows.append(row)
    return rows


def _pm(v: dict[str, float]) -> str:
    return f"{v['mean']:+.4f} ± {v['std']:.4f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: one table of val (and test) margins per learner and setting."""
    model = report["model"]
    budget = {"ppo": f"PPO {report['timesteps']['ppo']} steps (batched)",
              "value_exit": f"value_exit {report['timesteps']['value_exit']} labelled states"}
    budgets = ", ".join(budget[algo] for algo in report["algos"])
    lines = [f"# Enough data for the learner? ({report['task']})", "",
             f"`{report['command']}`", "",
             f"Env `{report['env_id']}`, main model `{model['provenance']}` (weights {model['weights_hash'][:12]}, "
             f"recipe {model['recipe_version']}); `agent_train` holds {report['agent_train_examples']} examples, "
             f"`val` {report['val_examples']}, `test` {report['test_examples']}. Learners at lambda_compute "
             f"{report['lambda_compute']}: {budgets}; seeds {report['seeds']}.", "",
             "Margin = accuracy minus the exact confidence-threshold hull at the run's own mean compute "
             "(decisions counted), on the whole split; mean ± std over seeds. `augment`: fresh random "
             "shifts, rotations and elastic distortions of the `agent_train` images each episode (val and "
             "test never augmented). Change: val margin minus the previous row's (fewer examples).", "",
             "| learner | augment | agent_train examples | val margin | change | test margin | val accuracy | "
             "val compute |", "|---|---|---|---|---|---|---|---|"]
    for row in report["summary"]:
        change = "" if row["val_margin_change"] is None else f"{row['val_margin_change']:+.4f}"
        lines.append(f"| {row['algo']} | {'on' if row['augment'] else 'off'} | {row['size']} | "
                     f"{_pm(row['val_margin'])} | {change} | {_pm(row['test_margin'])} | "
                     f"{row['val_accuracy']['mean']:.4f} | {row['val_mean_compute']['mean']:.3f} |")
    lines += ["", "Every run (95% paired-bootstrap intervals over examples):", "",
              "| run | seed | val margin | test margin | train seconds |", "|---|---|---|---|---|"]
    for run in report["runs"]:
        val, test = run["val"], run["test"]
        lines.append(f"| {run['policy']} | {run['seed']} | {val['margin']:+.4f} [{val['ci95'][0]:+.4f}, "
                     f"{val['ci95'][1]:+.4f}] | {test['margin']:+.4f} [{test['ci95'][0]:+.4f}, "
                     f"{test['ci95'][1]:+.4f}] | {run['train_wall_seconds']:.0f} |")
    lines += ["", f"Wall time: {report['wall_seconds']:.0f} s this invocation; "
              f"{sum(i['wall_seconds'] for i in report['invocations']):.0f} s over "
              f"{len(report['invocations'])} invocation(s) of this run folder "
              f"({report['machine']['cpu_count']} CPUs, --jobs {report['jobs']}, one torch thread per job).", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="folder of the run folders (resumable)")
    parser.add_argument("--task", default="mnist5k", choices=MNIST5K_TASKS,
                        help="an image task (augment distorts images)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                        help="numbers of agent_train examples (at most the split's size)")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--augment", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="the augment settings to run")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--timesteps", type=int, default=TIMESTEPS, help="PPO's training steps")
    parser.add_argument("--value-exit-timesteps", type=int, default=None,
                        help="value_exit's labelled states (default: its hyperparams file's)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one torch thread each")
    parser.add_argument("--n-boot", type=int, default=N_BOOT)
    parser.add_argument("--model", default=None, help="main-model checkpoint (default: the task's pinned default model)")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR), help="where agent_data_<task>.json and .md go")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    root = Path(args.run_dir)
    record_by_role(args.run_dir, "$RUN_DIR")
    record_by_role(args.out_dir, "$OUT_DIR")
    env_id = TASK_ENVS[args.task]
    dataset = load_dataset(ENV_IDS[env_id])
    n_train = dataset.num_examples("agent_train")
    bad = [s for s in args.sizes if not 1 <= s <= n_train]
    if bad:
        parser.error(f"--sizes {bad}: agent_train of {dataset.name} has {n_train} examples; give 1..{n_train}")
    if args.model and not Path(args.model).is_file():
        parser.error(f"--model: no checkpoint file at {args.model}")
    model = checkpoint_provenance(Path(args.model), dataset) if args.model else env_model_provenance(env_id)
    augments = [setting == "on" for setting in dict.fromkeys(args.augment)]
    sizes = sorted(set(args.sizes))
    # Given explicitly (the file's value by default), so a run trained for another budget is refused.
    value_exit_timesteps = args.value_exit_timesteps or int(load_hyperparams("value_exit", env_id)["n_timesteps"])
    configs = plan(args.algos, sizes, augments, args.seeds, args.timesteps, value_exit_timesteps)
    jobs = []
    for spec in (c.spec for c in configs):
        hp_dir = root / "hyperparams" / spec.name
        if needs_own_hyperparams(spec):
            hp_dir.mkdir(parents=True, exist_ok=True)
            write_hyperparams(spec, env_id, hp_dir)
        for seed in spec.seeds:
            jobs.append(Job(args.task, spec, seed, str(root / "runs" / f"{spec.name}-s{seed}"), str(model["path"]),
                            str(hp_dir), model["provenance"]))
    run_jobs(jobs, args.jobs)

    curves = confidence_curves(args.task, str(model["path"]))
    runs = []
    for config in configs:
        for seed in config.spec.seeds:
            runs.append({"algo": config.algo, "size": config.size, "augment": config.augment,
                         **run_figures(root, config.spec, seed, curves, args.n_boot)})
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    command = command_line([*command_words("agent_data"), *argv_list])
    wall = time.perf_counter() - start
    report = {"command": command, "machine": machine(), "jobs": args.jobs, "task": args.task, "env_id": env_id,
              "model": {k: v for k, v in model.items() if k != "path"},
              "agent_train_examples": n_train, "val_examples": dataset.num_examples("val"),
              "test_examples": dataset.num_examples("test"), "lambda_compute": LAMBDA,
              "timesteps": {"ppo": args.timesteps, "value_exit": value_exit_timesteps},
              "algos": args.algos, "sizes": sizes, "seeds": args.seeds, "augment": augments, "n_boot": args.n_boot,
              "confidence_hull": {split: {"n_thresholds": int(curve.accuracy.size)} for split, curve in curves.items()},
              "plan": [c.spec._asdict() for c in configs],
              "summary": summarize(runs, args.algos, sizes, augments), "runs": runs, "wall_seconds": wall,
              "invocations": record_invocation(root, command, [args.task], wall)}
    out = Path(args.out_dir)
    write_json(out / f"agent_data_{args.task}.json", report)
    write_text(out / f"agent_data_{args.task}.md", render_markdown(report))
    print(render_markdown(report))
    return 0
