"""Wall-clock time of adaptive inference against full-depth inference, side by side in one run.

The paper's claim is *reduced computational time*; this measures it on the CPU for the same inputs
(a split of the run's dataset): ``AdaptiveClassifier.predict`` with the run's learned policy (and,
for reference, the confidence-threshold policy chosen on ``val``) against the full-depth path
(layers 1..K) at the same batch size. Each is timed ``--repeats`` times, interleaved, and the
median is reported, with the wall-time ratio over the compute ratio (1.0: the compute saved is all
saved in wall time). ``mean compute`` counts the policy's decisions (its measured FLOPs per
decision); ``mean_env_compute`` in the JSON is the main model alone.

A second table times each layer's step (injection, solve, head) on the whole batch at the depth the
full-depth path reaches it, beside the FLOPs it executes: wall time per FLOP differs between layers
(a layer of low rank spends its time moving the state, not multiplying), and where a policy spends
its compute on the cheap layers, its wall-time ratio exceeds its compute ratio by that much.

    python -m benchmarks adaptive_inference --run-dir runs/demo/agent
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from agents.baselines import ConfidencePolicy
from agents.inference import AdaptiveClassifier
from agents.training import env_options, load_run
from dynalay_env.atomic import atomic_write_json
from dynalay_env.datasets import load_dataset
from dynalay_env.model import FPIModel


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def layer_costs(model: FPIModel, x: torch.Tensor, repeats: int) -> list[dict[str, float]]:
    """Per layer ``k``: its step (injection, solve, head) on all of ``x`` at full depth, timed
    (median of ``repeats``), with the FLOPs it executed (``CostTable.step_flops``)."""
    costs = model.cost_table()
    rows = []
    with torch.no_grad():
        x_emb = model.encode(x)
        z = x_emb
        for k in range(model.num_layers):
            def step(z_in: torch.Tensor = z, k: int = k):
                result = model.apply_layer(k, z_in, x_emb)
                model.classify(result.state)
                return result
            seconds = []
            for _ in range(repeats):
                t, result = timed(step)
                seconds.append(t)
            flops = float(costs.step_flops(k, result.flops).sum())
            t = statistics.median(seconds)
            rows.append({"layer": k + 1, "seconds": t, "gflops": flops / 1e9, "ms_per_gflop": 1e3 * t / (flops / 1e9),
                         "mean_iterations": float(result.iterations.float().mean())})
            z = result.state
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a `train_agent.py train` run folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tau", type=float, default=None, help="also time ConfidencePolicy(tau)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    config, _, model_path = load_run(args.run_dir)
    clf = AdaptiveClassifier.from_run(args.run_dir, batch_size=args.batch_size)
    dataset = load_dataset(env_options(config, str(model_path))["dataset"], data_root=config.data_root)
    x, y = dataset.as_tensors(args.split)
    y_np = y.numpy()
    candidates = {"agent": clf}
    if args.tau is not None:
        candidates[f"confidence(tau={args.tau})"] = AdaptiveClassifier(clf.model, ConfidencePolicy(args.tau),
                                                                       batch_size=args.batch_size, **{
                                                                           k: v for k, v in clf.options.items()})
    times: dict[str, list[float]] = {name: [] for name in candidates}
    times["full depth"] = []
    results = {}
    for _ in range(args.repeats):
        for name, c in candidates.items():
            seconds, results[name] = timed(c.predict, x)
            times[name].append(seconds)
        seconds, full = timed(clf.predict_full_depth, x)
        times["full depth"].append(seconds)
    full_acc = float((full.numpy() == y_np).mean())
    base = statistics.median(times["full depth"])
    print(f"# {len(y_np)} {dataset.name}/{args.split} examples, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'policy':<24} | {'accuracy':>8} | {'mean compute':>12} | {'seconds':>8} | {'time vs full depth':>18} | "
          f"{'time ratio / compute ratio':>26}")
    rows = []
    for name, result in results.items():
        t = statistics.median(times[name])
        acc = float((result.prediction == y_np).mean())
        compute = float(np.mean(result.compute))
        # mean_compute counts the policy's decisions; mean_env_compute is the main model alone.
        rows.append({"policy": name, "accuracy": acc, "mean_compute": compute,
                     "mean_env_compute": float(np.mean(result.env_compute)), "seconds": t,
                     "time_vs_full_depth": t / base, "time_ratio_over_compute_ratio": t / base / compute})
        print(f"{name:<24} | {acc:>8.4f} | {compute:>12.3f} | {t:>8.3f} | {t / base:>17.3f}x | "
              f"{t / base / compute:>25.2f}x")
    print(f"{'full depth':<24} | {full_acc:>8.4f} | {1.0:>12.3f} | {base:>8.3f} | {1.0:>17.3f}x | {1.0:>25.2f}x")
    layers = layer_costs(clf.model, x[:args.batch_size], args.repeats)
    total_t, total_f = sum(r["seconds"] for r in layers), sum(r["gflops"] for r in layers)
    print(f"\n# each layer's step at full depth on {min(args.batch_size, len(y_np))} inputs (injection, solve, head)")
    print(f"{'layer':>5} | {'mean iterations':>15} | {'GFLOPs':>7} | {'share of FLOPs':>14} | {'seconds':>8} | "
          f"{'share of time':>13} | {'ms per GFLOP':>12}")
    for r in layers:
        print(f"{r['layer']:>5} | {r['mean_iterations']:>15.2f} | {r['gflops']:>7.3f} | {r['gflops'] / total_f:>14.3f} | "
              f"{r['seconds']:>8.4f} | {r['seconds'] / total_t:>13.3f} | {r['ms_per_gflop']:>12.1f}")
    if args.json:
        rows.append({"policy": "full depth", "accuracy": full_acc, "mean_compute": 1.0, "seconds": base,
                     "time_vs_full_depth": 1.0, "time_ratio_over_compute_ratio": 1.0})
        out = {"dataset": dataset.name, "split": args.split, "n_examples": len(y_np), "batch_size": args.batch_size,
               "repeats": args.repeats, "torch_threads": torch.get_num_threads(), "rows": rows, "layers": layers}
        atomic_write_json(args.json, out)
    return 0
