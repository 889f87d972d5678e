"""Frozen against co-trained main model, at the same agent budget, side by side in one run.

For each dataset, two PPO agents are trained with the same seed, hyperparameters and number of
agent timesteps from the same pre-trained main model: one against the frozen model, one with
``train --cotrain`` (agent phases alternating with main-model phases on the current policy's paths).
Each run is then evaluated on ``test`` (:func:`agents.pipelines.run_evaluation`, what ``train_agent.py
evaluate`` runs: each example once, thresholds chosen on ``val``) and the table shows accuracy, mean
compute (1.0 = full depth) and the difficulty correlations (Spearman of the compute spent against the
oracle's minimum compute to a right answer, and, on ``synthetic``, against the known noise level).

To say *why* co-training helps or not, it also measures:

* the main model alone, before and after co-training: accuracy by depth (in-order prefix) on
  ``agent_train`` (where co-training learns and the agent trains) and on ``test``, and the mean
  top-1 probability at the encoder state on both (over-confidence on the agent's own split teaches
  the agent to exit early);
* the cross replay: the co-trained agent's test paths run on the initial model, and the frozen
  agent's test paths run on the co-trained model, which splits the change in accuracy into the part
  the model brings and the part the policy brings.

    python -m benchmarks cotrain_vs_frozen --model mnist1d=/tmp/pt_mnist1d/main_model.pt \\
        --model synthetic=/tmp/pt_syn/main_model.pt --timesteps 196608 --out-dir runs/cotrain_vs_frozen

Results: printed, and written to ``<out-dir>/results_t<T>_seed<S>.json``. ``--aggregate-only --json FILE``
writes the mean and sd over every seed run so far (for ``python -m benchmarks reproduce``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.evaluate import replay_paths
from agents.pipelines import run_evaluation
from agents.records import hull_accuracy_at
from agents.training import TrainConfig, train
from dynalay_env.atomic import atomic_write_json
from dynalay_env.datasets import load_dataset
from dynalay_env.model import load_checkpoint
from dynalay_env.paths import depth_accuracies

ENV_OF = {"mnist1d": "DynaLay-MNIST1D-v0", "synthetic": "DynaLay-Synthetic-v0", "digits": "DynaLay-Digits-v0"}


def model_figures(model: Any, dataset: Any) -> dict[str, Any]:
    """Accuracy by depth (in-order prefixes), accuracy of each one-layer path and mean top-1
    probability at the encoder state, on agent_train and test."""
    out: dict[str, Any] = {}
    for split in ("agent_train", "test"):
        x, y = dataset.as_tensors(split)
        with torch.no_grad():
            top1 = torch.softmax(model.classify(model.encode(x)), 1).amax(1).mean()
            single = [float((model(x, [k]).argmax(1) == y).double().mean()) for k in range(model.num_layers)]
        out[split] = {"accuracy_by_depth": depth_accuracies(model, x, y), "encoder_top1_prob": float(top1),
                      "one_layer_path_accuracy": single}
    return out


def top_path(report: dict[str, Any]) -> tuple[str, float]:
    """The agent's most frequent test path and its share of the examples."""
    counts = Counter(tuple(p) for p in report["examples"]["path"])
    path, n = counts.most_common(1)[0]
    return str(list(path)), n / sum(counts.values())


def replay_accuracy(model: Any, dataset: Any, report: dict[str, Any]) -> tuple[float, float]:
    """(accuracy, mean normalised compute) of the report's recorded test paths replayed on ``model``."""
    x, y = dataset.as_tensors(report["split"])
    examples = np.asarray(report["examples"]["example"])
    predictions, flops = replay_paths(model, x[torch.as_tensor(examples)], report["examples"]["path"])
    return float((predictions == y.numpy()[examples]).mean()), float(flops.mean() / model.cost_table().normalizer)


def variant_name(lr: float, model_phase: int, every: int) -> str:
    return f"cotrain_lr{lr:g}_phase{model_phase}x{every}"


def run_one(dataset: str, model_path: str, variant: tuple[float, int] | None, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse: a finished run folder is evaluated again) and evaluate one run. ``variant``:
    None = frozen, else (cotrain_lr, model_phase)."""
    name = "frozen" if variant is None else variant_name(variant[0], variant[1], args.cotrain_every)
    run_dir = Path(args.out_dir) / f"{dataset}-seed{args.seed}-t{args.timesteps}" / name
    env_kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if variant is not None:
        env_kwargs = {"cotrain_lr": variant[0], "cotrain_every": args.cotrain_every}
        extra = {"cotrain": True, "agent_phase": args.agent_phase, "model_phase": variant[1]}
    config = TrainConfig(algo="ppo", env_id=ENV_OF[dataset], model=model_path, env_kwargs=env_kwargs,
                         timesteps=args.timesteps, seed=args.seed, run_dir=str(run_dir),
                         checkpoint_freq=args.timesteps, eval_freq=args.timesteps, progress_bar=False, **extra)
    start = time.perf_counter()
    resume = (run_dir / "config.json").is_file()
    if not (run_dir / "agent.zip").is_file():
        train(config, resume=resume)
    train_seconds = time.perf_counter() - start
    report = run_evaluation(run_dir, "test", n_envs=512, n_boot=args.n_boot, figures=False)
    return {"name": name, "run_dir": str(run_dir), "train_seconds": train_seconds, "report": report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", metavar="DATASET=PATH",
                        help="pre-trained main model of a dataset (repeat per dataset; sets the datasets compared)")
    parser.add_argument("--timesteps", type=int, default=196_608, help="agent budget of both runs")
    parser.add_argument("--agent-phase", type=int, default=49_152)
    parser.add_argument("--model-phase", type=int, nargs="+", default=[16],
                        help="main-model steps per model phase; several values = several co-trained variants")
    parser.add_argument("--cotrain-lr", type=float, nargs="+", default=[1e-4],
                        help="main-model Adam step size (one per --model-phase value, or one for all)")
    parser.add_argument("--cotrain-every", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out-dir", default="runs/cotrain_vs_frozen")
    parser.add_argument("--aggregate-only", action="store_true",
                        help="only summarise the seed runs already in --out-dir (no training)")
    parser.add_argument("--json", default=None, help="also write the summary over seeds to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.aggregate_only:
        aggregate(Path(args.out_dir), args.timesteps, args.json)
        return 0
    if not args.model:
        parser.error("give --model DATASET=PATH at least once (or --aggregate-only)")

    lrs = args.cotrain_lr * len(args.model_phase) if len(args.cotrain_lr) == 1 else args.cotrain_lr
    if len(lrs) != len(args.model_phase):
        parser.error("give one --cotrain-lr, or one per --model-phase value")
    variants = list(zip(lrs, args.model_phase, strict=True))
    results: dict[str, Any] = {"settings": vars(args), "datasets": {}}
    rows = []
    for item in args.model:
        dataset, _, model_path = item.partition("=")
        runs = {"frozen": run_one(dataset, model_path, None, args)}
        for variant in variants:
            run = run_one(dataset, model_path, variant, args)
            runs[run["name"]] = run
        ds = load_dataset(dataset)
        initial = load_checkpoint(model_path).model
        entry: dict[str, Any] = {"model_initial": model_figures(initial, ds), "cotrained": {}}
        for name, run in runs.items():
            if name == "frozen":
                continue
            cotrained = load_checkpoint(Path(run["run_dir"]) / "main_model.pt").model
            entry["cotrained"][name] = {
                "model": model_figures(cotrained, ds),
                "cotrained_agent_paths_on_initial_model": replay_accuracy(initial, ds, run["report"]),
                "frozen_agent_paths_on_cotrained_model": replay_accuracy(cotrained, ds, runs["frozen"]["report"]),
            }
        # One yardstick for every run: the initial model's confidence-threshold hull on test (the
        # frozen run's curve), at each agent's own compute.
        curve = runs["frozen"]["report"]["curves"]["confidence"]
        curve_c, curve_a = np.array(curve["mean_compute"]), np.array(curve["accuracy"])
        for run in runs.values():
            r = run["report"]
            r["vs_initial_threshold_hull"] = r["accuracy"] - hull_accuracy_at(curve_c, curve_a, r["mean_compute"])
        for mode, run in runs.items():
            r = run["report"]
            entry[mode] = {k: r.get(k) for k in ("accuracy", "mean_compute", "mean_steps", "difficulty_correlation",
                                                 "known_difficulty_correlation", "action_frequencies", "full_depth",
                                                 "best_fixed_path", "oracle", "vs_threshold", "vs_initial_threshold_hull",
                                                 "provenance")}
            entry[mode]["top_path"] = top_path(r)
            entry[mode]["train_seconds"] = run["train_seconds"]
            entry[mode]["run_dir"] = run["run_dir"]
            rows.append((dataset, mode, r))
        results["datasets"][dataset] = entry
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / f"results_t{args.timesteps}_seed{args.seed}.json", results, default=float)

    def fmt(v: Any) -> str:
        return "n/a" if v is None or v != v else f"{v:+.3f}"

    print(f"\nPPO, {args.timesteps} agent timesteps, seed {args.seed}; test split")
    print("| dataset | main model | accuracy | compute | Spearman vs oracle difficulty | Spearman vs known noise "
          "| full depth | agent - own model's threshold (95% CI) | agent - initial model's threshold hull |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dataset, mode, r in rows:
        v = r["vs_threshold"]
        print(f"| {dataset} | {mode} | {r['accuracy']:.4f} | {r['mean_compute']:.3f} | "
              f"{fmt(r['difficulty_correlation'])} | {fmt(r['known_difficulty_correlation'])} | "
              f"{r['full_depth']['accuracy']:.4f} | {v['difference']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] | "
              f"{r['vs_initial_threshold_hull']:+.4f} |")
    for dataset, entry in results["datasets"].items():
        for name, c in entry["cotrained"].items():
            print(f"\n{dataset}, {name}: main model before -> after co-training")
            for split in ("agent_train", "test"):
                before, after = entry["model_initial"][split], c["model"][split]
                acc = " ".join(f"{a:.3f}->{b:.3f}" for a, b in zip(before["accuracy_by_depth"],
                                                                    after["accuracy_by_depth"], strict=True))
                single = " ".join(f"[{k + 1}] {a:.3f}->{b:.3f}" for k, (a, b) in enumerate(zip(
                    before["one_layer_path_accuracy"], after["one_layer_path_accuracy"], strict=True)))
                print(f"  {split:11s} accuracy by depth 0..K: {acc}; one-layer paths: {single}; encoder top-1 prob "
                      f"{before['encoder_top1_prob']:.3f}->{after['encoder_top1_prob']:.3f}")
            a, b = c["cotrained_agent_paths_on_initial_model"], c["frozen_agent_paths_on_cotrained_model"]
            print(f"  co-trained agent's paths on the initial model: accuracy {a[0]:.4f} (compute {a[1]:.3f})")
            print(f"  frozen agent's paths on the co-trained model:  accuracy {b[0]:.4f} (compute {b[1]:.3f})")
            path, share = entry[name]["top_path"]
            path0, share0 = entry["frozen"]["top_path"]
            print(f"  most frequent test path: co-trained agent {path} ({share:.0%}), frozen agent {path0} ({share0:.0%})")
    print(f"\nresults: {Path(args.out_dir) / f'results_t{args.timesteps}_seed{args.seed}.json'}")
    aggregate(Path(args.out_dir), args.timesteps, args.json)
    return 0


def aggregate(out_dir: Path, timesteps: int, json_path: str | None = None) -> None:
    """Mean and standard deviation over every seed run so far (``results_t<T>_seed*.json``),
    printed and, with ``json_path``, written as JSON (every cell's per-seed values, mean and sd)."""
    files = sorted(out_dir.glob(f"results_t{timesteps}_seed*.json"))
    table: dict[tuple[str, str], dict[str, list[float]]] = {}
    for f in files:
        for dataset, entry in json.loads(f.read_text())["datasets"].items():
            for name, run in entry.items():
                if not isinstance(run, dict) or "accuracy" not in run:
                    continue
                cell = table.setdefault((dataset, name), {})
                for key in ("accuracy", "mean_compute", "difficulty_correlation", "known_difficulty_correlation",
                            "vs_initial_threshold_hull"):
                    value = run.get(key)
                    cell.setdefault(key, []).append(float("nan") if value is None else float(value))
                cell.setdefault("own_threshold", []).append(run["vs_threshold"]["difference"])
                cell.setdefault("top_path_share", []).append(run.get("top_path", (None, float("nan")))[1])
                if name != "frozen" and "one_layer_path_accuracy" in entry["model_initial"]["test"]:
                    c = entry["cotrained"][name]
                    cell.setdefault("model_effect", []).append(run["accuracy"] - c["cotrained_agent_paths_on_initial_model"][0])
                    cell.setdefault("test_full_depth_change", []).append(
                        c["model"]["test"]["accuracy_by_depth"][-1] - entry["model_initial"]["test"]["accuracy_by_depth"][-1])
                    cell.setdefault("agent_train_full_depth_change", []).append(
                        c["model"]["agent_train"]["accuracy_by_depth"][-1]
                        - entry["model_initial"]["agent_train"]["accuracy_by_depth"][-1])
                    for split in ("test", "agent_train"):
                        before = np.asarray(entry["model_initial"][split]["one_layer_path_accuracy"])
                        after = np.asarray(c["model"][split]["one_layer_path_accuracy"])
                        for k, d in enumerate(after - before):
                            cell.setdefault(f"{split}_layer{k + 1}_change", []).append(float(d))

    def ms(values: list[float] | None, digits: int = 4) -> str:
        if not values:
            return "-"
        v = np.asarray(values, dtype=float)
        if np.all(np.isnan(v)):
            return "n/a"
        return f"{np.nanmean(v):+.{digits}f} ± {np.nanstd(v):.{digits}f}"

    print(f"\nmean ± sd over {len(files)} seed(s) ({', '.join(f.stem.split('_')[-1] for f in files)}), test split")
    print("| dataset | main model | accuracy | compute | Spearman vs oracle difficulty | Spearman vs known noise | "
          "agent - initial model's threshold hull | agent - own model's threshold | share of the top path | "
          "model's share of the accuracy (co-trained agent: co-trained - initial model, same paths) | "
          "full-depth accuracy change test / agent_train |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (dataset, name), cell in table.items():
        print(f"| {dataset} | {name} | {ms(cell['accuracy'])} | {ms(cell['mean_compute'], 3)} | "
              f"{ms(cell['difficulty_correlation'], 3)} | {ms(cell['known_difficulty_correlation'], 3)} | "
              f"{ms(cell['vs_initial_threshold_hull'])} | {ms(cell['own_threshold'])} | {ms(cell['top_path_share'], 2)} | "
              f"{ms(cell.get('model_effect'))} | "
              f"{ms(cell.get('test_full_depth_change'))} / {ms(cell.get('agent_train_full_depth_change'))} |")
    if json_path:
        def stats(values: list[float]) -> dict[str, Any]:
            v = np.asarray(values, dtype=float)
            nan = bool(np.all(np.isnan(v)))
            return {"values": [None if x != x else x for x in v.tolist()],
                    "mean": None if nan else float(np.nanmean(v)), "sd": None if nan else float(np.nanstd(v))}

        summary = {"timesteps": timesteps, "seeds": [int(f.stem.split("seed")[-1]) for f in files],
                   "rows": [{"dataset": dataset, "main_model": name, **{k: stats(v) for k, v in cell.items()}}
                            for (dataset, name), cell in table.items()]}
        atomic_write_json(json_path, summary)
    print("\naccuracy change of each one-layer path [k], co-trained - initial model, test / agent_train")
    for (dataset, name), cell in table.items():
        if name == "frozen":
            continue
        layers = sorted({key.split("_")[1] for key in cell if key.startswith("test_layer")})
        print(f"  {dataset} {name}: " + "; ".join(
            f"[{layer[5:]}] {ms(cell[f'test_{layer}_change'])} / {ms(cell[f'agent_train_{layer}_change'])}"
            for layer in layers))
