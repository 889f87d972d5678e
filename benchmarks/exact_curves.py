"""Exact threshold curves (one recorded pass, every distinct threshold) against the grid of
thresholds the reports used before (one ``run_policy`` per threshold), side by side in one run.

Prints, per split: the wall time of each way and their ratio, the number of points, the confidence
hull's accuracy at a few low compute budgets from each (the grid's hull is a chord where it has
few points), and the path and prefix oracles. Writes ``benchmarks/results/exact_curves_<dataset>.json``.

    .venv/bin/python -m benchmarks exact_curves [--dataset mnist1d] [--model PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from agents.baselines import ConfidencePolicy, EntropyPolicy, OraclePolicy, oracle_search
from agents.curves import STATISTICS, exact_curve, prefix_oracle, record_core
from agents.evaluate import run_policy
from agents.records import hull_accuracy_at
from dynalay_env.atomic import atomic_write_json
from dynalay_env.env import make_core

#: The grids the reports used before the exact curves.
TAU_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.01)
ENTROPY_GRID = (-0.01, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.01)
BUDGETS = (0.03, 0.05, 0.1, 0.14, 0.2, 0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--model", default=None, help="checkpoint (default: the dataset's cached default model)")
    parser.add_argument("--slots", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = {"dataset": args.dataset, "sample_mode": "sequential", **({"model": args.model} if args.model else {})}
    out: dict = {"dataset": args.dataset, "threads": args.threads, "splits": {}}
    model = None
    for split in ("val", "test"):
        core = make_core(args.slots, **options, split=split, **({"model": model} if model is not None else {}))
        model = core.model
        order = tuple(range(1, min(core.num_layers, core.max_steps) + 1))
        start = time.perf_counter()
        record = record_core(core)
        curves = {name: exact_curve(record, name) for name in STATISTICS}
        prefix = prefix_oracle(record)
        exact_seconds = time.perf_counter() - start
        start = time.perf_counter()
        grid = {"confidence": [run_policy(core, ConfidencePolicy(t, layer_order=order)) for t in TAU_GRID],
                "entropy": [run_policy(core, EntropyPolicy(h, layer_order=order)) for h in ENTROPY_GRID]}
        grid_seconds = time.perf_counter() - start
        search = oracle_search(core.model, core.x, core.y, core.max_steps, allow_repeats=not core.mask_repeats)
        path = run_policy(core, OraclePolicy(search))
        hull = {}
        for name in ("confidence", "entropy"):
            gc = np.array([r.mean_compute for r in grid[name]])
            ga = np.array([r.accuracy for r in grid[name]])
            hull[name] = {f"{b}": {"exact": hull_accuracy_at(curves[name].mean_compute, curves[name].accuracy, b),
                                   "grid": hull_accuracy_at(gc, ga, b)} for b in BUDGETS}
            hull[name]["grid_points_below_0.14"] = int((gc < 0.14).sum())
            hull[name]["exact_points_below_0.14"] = int((curves[name].mean_compute < 0.14).sum())
        out["splits"][split] = {
            "n_examples": record.n,
            "exact_seconds_4_curves": exact_seconds, "grid_seconds_2_curves": grid_seconds,
            "grid_over_exact_time": grid_seconds / exact_seconds,
            "points": {**{name: len(c) for name, c in curves.items()},
                       "grid_confidence": len(TAU_GRID), "grid_entropy": len(ENTROPY_GRID)},
            "hull_accuracy_at_budget": hull,
            "path_oracle": {"accuracy": path.accuracy, "mean_compute": path.mean_compute},
            "prefix_oracle": {"accuracy": prefix.accuracy, "mean_compute": prefix.mean_compute},
        }
        s = out["splits"][split]
        print(f"{split}: exact 4 curves {exact_seconds:.2f} s ({', '.join(f'{k} {v}' for k, v in s['points'].items())}"
              f" points) vs grid 2 curves {grid_seconds:.2f} s: {s['grid_over_exact_time']:.1f}x")
        for name in ("confidence", "entropy"):
            cells = ", ".join(f"{b}: {hull[name][f'{b}']['exact']:.4f} vs {hull[name][f'{b}']['grid']:.4f}"
                              for b in BUDGETS)
            print(f"  {name} hull, exact vs grid, at compute {cells}")
        print(f"  path oracle {path.accuracy:.4f} at {path.mean_compute:.3f}; "
              f"prefix oracle {prefix.accuracy:.4f} at {prefix.mean_compute:.3f}")
    out["model_provenance"] = core.provenance
    path = Path(__file__).resolve().parent / "results" / f"exact_curves_{args.dataset}.json"
    atomic_write_json(path, out)
    print(f"wrote {path}")
    return 0
