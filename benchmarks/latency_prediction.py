"""Does the latency table predict wall time? Charged latency ratio against measured wall-time ratio of
adaptive inference, side by side in one process.

On a dataset's default main model (``--dataset``, MNIST-1D by default), for each torch thread count
(``--threads``), this profiles a latency table (``dynalay_env.latency.profile_latency``, batch sizes up
to ``--batch-size``), then runs ``AdaptiveClassifier`` with ``cost="latency"`` on the ``--split``
inputs at ``--batch-size`` for

- the confidence rule at ``--tau`` (layers 1..K in order),
- the trained agent of ``--run-dir`` if given (a ``train_agent.py train`` run on the same model), and
- full depth through the same classifier (``FixedPathPolicy``: layers 1..K),

and times each against full-depth inference on the bare model (``AdaptiveClassifier.predict_full_depth``),
interleaved, ``--repeats`` times (medians). Per policy it reports the charged latency ratio
(table-estimated, decisions counted, 1.0 = full depth), the charged FLOPs ratio of the same
episodes (executed), the measured wall-time ratio, and charged / measured (1.0: the table predicts
the saving exactly; the target is within 1.25x either way). The table itself, the machine load
(``os.getloadavg()``) before and after, and the model's provenance go into the results files.

The agent's observations include its compute so far, which under ``cost="latency"`` is
table-estimated; ``paths_same_as_flops`` is the share of inputs on which it takes the same path as
under ``cost="flops"`` (its training cost), so a changed behaviour shows.

    python -m benchmarks latency_prediction --threads 1 2 --run-dir runs/demo/agent
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.baselines import ConfidencePolicy, FixedPathPolicy
from agents.inference import AdaptiveClassifier, InferenceResult
from agents.training import load_run
from benchmarks import command_words
from benchmarks.adaptive_inference import timed
from dynalay_env.atomic import atomic_write_json, atomic_write_text
from dynalay_env.cache import cached_default_model
from dynalay_env.data import load_dataset
from dynalay_env.latency import DEFAULT_BATCH_SIZES, DeviceFingerprint, LatencyTable, profile_latency
from dynalay_env.model import load_checkpoint, provenance_of, weights_hash

#: The largest allowed charged / measured ratio either way (the issue's target).
TARGET = 1.25
#: The full-depth run through the classifier: the wall-time reference (1.0), as the table's 1.0 is full depth.
FULL = "full depth (classifier)"
#: Full depth on the bare model (encoder, layers 1..K, one head call): what a user deploys without a policy.
BARE = "full depth (bare model)"
RESULTS = Path(__file__).resolve().parent / "results"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages of this machine (empty where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def within(quotient: float) -> bool:
    """Whether charged / measured is within :data:`TARGET` either way."""
    return bool(max(quotient, 1.0 / quotient) <= TARGET)


def figures(name: str, result: InferenceResult, flops_normalizer: float, y: np.ndarray, seconds: list[float],
            base: float, bare: float, flops_paths: np.ndarray | None) -> dict[str, Any]:
    """One policy's row: accuracy, charged ratios, measured wall ratios (against full depth through
    the classifier, ``base`` seconds, and on the bare model, ``bare`` seconds) and the quotients."""
    wall = statistics.median(seconds)
    latency_ratio = float(np.mean(result.compute))
    wall_ratio, bare_ratio = wall / base, wall / bare
    row = {"policy": name, "accuracy": float((result.prediction == y).mean()),
           "charged_latency_ratio": latency_ratio, "charged_latency_ratio_env_only": float(np.mean(result.env_compute)),
           "charged_flops_ratio": float(np.mean(result.flops)) / flops_normalizer,
           "charged_seconds_per_input": float(np.mean(result.cost)),
           "measured_seconds": wall, "measured_seconds_per_input": wall / len(y), "measured_seconds_all": seconds,
           "measured_wall_ratio": wall_ratio, "charged_over_measured": latency_ratio / wall_ratio,
           "within_target": within(latency_ratio / wall_ratio),
           "measured_wall_ratio_vs_bare": bare_ratio, "charged_over_measured_vs_bare": latency_ratio / bare_ratio,
           "within_target_vs_bare": within(latency_ratio / bare_ratio),
           "flops_over_measured": float(np.mean(result.flops)) / flops_normalizer / wall_ratio,
           "mean_steps": float(np.mean(result.steps))}
    if flops_paths is not None:
        row["paths_same_as_flops"] = float((flops_paths == result.path).all(1).mean())
    return row


def measure(threads: int, model: Any, x: torch.Tensor, y: np.ndarray, x_val: torch.Tensor,
            args: argparse.Namespace, agent_run: Path | None) -> dict[str, Any]:
    """Profile the table on ``x_val`` and time every policy on ``x`` (labels ``y``) at ``threads``
    torch threads."""
    torch.set_num_threads(threads)
    sizes = sorted({b for b in DEFAULT_BATCH_SIZES if b <= args.batch_size} | {args.batch_size})
    load_before = load_average()
    start = time.perf_counter()
    table: LatencyTable = profile_latency(model, x_val, batch_sizes=sizes, repeats=args.profile_repeats,
                                          warmup=args.profile_warmup)
    profile_seconds = time.perf_counter() - start
    flops_normalizer = float(model.cost_table().normalizer)
    k = model.num_layers
    classifiers: dict[str, AdaptiveClassifier] = {
        f"confidence(tau={args.tau})": AdaptiveClassifier(model, ConfidencePolicy(args.tau),
                                                          batch_size=args.batch_size, cost="latency",
                                                          latency_table=table),
        FULL: AdaptiveClassifier(model, FixedPathPolicy(tuple(range(1, k + 1))),
                                                      batch_size=args.batch_size, cost="latency", latency_table=table),
    }
    flops_paths: dict[str, np.ndarray] = {}
    if agent_run is not None:
        clf = AdaptiveClassifier.from_run(agent_run, batch_size=args.batch_size, cost="latency", latency_table=table)
        classifiers = {"agent": clf, **classifiers}
        flops_paths["agent"] = AdaptiveClassifier.from_run(agent_run, batch_size=args.batch_size).predict(x).path
    reference = next(iter(classifiers.values()))
    calls: dict[str, Any] = {**{name: clf.predict for name, clf in classifiers.items()},
                             BARE: reference.predict_full_depth}
    results = {name: fn(x) for name, fn in calls.items()}  # warm-up: caches, allocator, the policy's first call
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):  # interleaved, so a change of machine load hits every policy alike
        for name, fn in calls.items():
            seconds, results[name] = timed(fn, x)
            times[name].append(seconds)
    bare = statistics.median(times[BARE])
    base = statistics.median(times[FULL])
    rows = [figures(name, results[name], flops_normalizer, y, times[name], base, bare, flops_paths.get(name))
            for name in classifiers]
    return {"threads": threads, "load_before": load_before, "load_after": load_average(),
            "profile_seconds": profile_seconds, "table": table.to_json(), "table_markdown": table.markdown(),
            "full_depth_bare_seconds": bare, "full_depth_bare_seconds_all": times[BARE],
            "full_depth_seconds": base, "full_depth_seconds_per_input": base / len(y),
            "table_full_depth_seconds_per_input": table.cost_table(model.cost_table(), args.batch_size).normalizer,
            "rows": rows}


def render(out: dict[str, Any]) -> str:
    """The results as Markdown: one table per thread count, then the latency tables."""
    lines = [f"<!-- generated by `{out['command']}` -->", "",
             f"# Latency table against measured wall time ({out['dataset']}/{out['split']}, batch {out['batch_size']})",
             "",
             f"Model: provenance `{out['model']['provenance']}`, weights `{out['model']['weights_hash']}`"
             f"{', agent: ' + out['agent']['description'] if out.get('agent') else ', no agent run given'}. "
             f"Machine: {out['machine']['cpu']}, {out['machine']['cpus']} CPUs, torch {out['machine']['torch']}. "
             f"Medians of {out['repeats']} interleaved runs. *Measured wall ratio*: against full depth through the "
             f"same classifier (layers 1..K, the head at every state, as the table's 1.0 is); *vs bare*: against "
             f"full depth on the bare model (encoder, layers, one head call). Charged ratios are table-estimated "
             f"(latency) or executed (FLOPs), decisions counted; charged / measured within {TARGET}x either way is "
             f"the target.", ""]
    for m in out["measurements"]:
        lines += [f"## {m['threads']} torch thread(s)", "",
                  f"Load average (1, 5, 15 min) before {m['load_before']}, after {m['load_after']}. Full depth on the "
                  f"bare model: {m['full_depth_bare_seconds']:.4f} s for {out['n_examples']} inputs.", "",
                  "| policy | accuracy | charged latency ratio (table-estimated) | charged FLOPs ratio (executed) | "
                  "measured wall ratio | latency charged / measured | FLOPs charged / measured | "
                  "wall ratio vs bare | latency charged / measured vs bare |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in m["rows"]:
            lines.append(f"| {r['policy']} | {r['accuracy']:.4f} | {r['charged_latency_ratio']:.3f} | "
                         f"{r['charged_flops_ratio']:.3f} | {r['measured_wall_ratio']:.3f} | "
                         f"{r['charged_over_measured']:.2f} ({'within' if r['within_target'] else 'outside'} 1.25x) | "
                         f"{r['flops_over_measured']:.2f} | {r['measured_wall_ratio_vs_bare']:.3f} | "
                         f"{r['charged_over_measured_vs_bare']:.2f} |")
        lines += ["", f"Table-estimated full depth: {m['table_full_depth_seconds_per_input'] * 1e6:.2f} us per input; "
                      f"measured through the classifier: {m['full_depth_seconds_per_input'] * 1e6:.2f} us; on the bare "
                      f"model: {m['full_depth_bare_seconds'] / out['n_examples'] * 1e6:.2f} us."]
        agent = next((r for r in m["rows"] if "paths_same_as_flops" in r), None)
        if agent is not None:
            lines += ["", f"The agent takes the same path as under `cost=\"flops\"` on "
                          f"{agent['paths_same_as_flops']:.3f} of the inputs."]
        lines += ["", m["table_markdown"], ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist1d", help="its default cached model is measured (default: %(default)s)")
    parser.add_argument("--run-dir", default=None, help="a `train_agent.py train` run on that model: its agent is timed")
    parser.add_argument("--split", default="test", help="inputs classified (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=2000, help="inputs per batch (default: %(default)s)")
    parser.add_argument("--tau", type=float, default=0.98, help="the confidence rule's threshold (default: %(default)s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default: 1 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per policy (default: %(default)s)")
    parser.add_argument("--profile-repeats", type=int, default=15, help="latency table repeats (default: %(default)s)")
    parser.add_argument("--profile-warmup", type=int, default=3, help="latency table warm-up (default: %(default)s)")
    parser.add_argument("--out", default=str(RESULTS / "latency_prediction_cpu"),
                        help="results path without suffix: .json and .md are written (default: %(default)s)")
    args = parser.parse_args(argv)

    dataset = load_dataset(args.dataset)
    checkpoint = cached_default_model(dataset, progress=False)
    model = load_checkpoint(checkpoint, expected_dataset=dataset.name).model.eval()
    agent_run = Path(args.run_dir) if args.run_dir else None
    agent: dict[str, Any] | None = None
    if agent_run is not None:
        config, _, model_path = load_run(agent_run)
        run_hash = weights_hash(load_checkpoint(model_path).model)
        if run_hash != weights_hash(model):
            raise SystemExit(f"the run {agent_run} uses another main model (weights {run_hash}) than the default "
                             f"{dataset.name} model (weights {weights_hash(model)})")
        agent = {"run_dir": str(agent_run), "algo": config.algo, "timesteps": config.timesteps, "seed": config.seed,
                 "description": f"{config.algo} seed {config.seed}, {config.timesteps} timesteps ({agent_run.name})"}
    x, y = dataset.as_tensors(args.split)
    x_val, _ = dataset.as_tensors("val")
    y_np = y.numpy()
    provenance = provenance_of(model, dataset)
    out: dict[str, Any] = {
        "command": " ".join(command_words("latency_prediction") + (argv if argv is not None else [])),
        "dataset": dataset.name, "split": args.split, "n_examples": len(y_np), "batch_size": args.batch_size,
        "tau": args.tau, "repeats": args.repeats, "target": TARGET,
        "model": {"provenance": provenance["id"], "weights_hash": provenance["weights_hash"],
                  "config_hash": provenance["config_hash"], "dataset_fingerprint": dataset.fingerprint,
                  "recipe_version": provenance["recipe_version"], "cache_key": checkpoint.parent.name},
        "agent": agent,
        "machine": {"cpu": DeviceFingerprint.current("cpu").device, "arch": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "nice": os.nice(0)},
        "measurements": [],
    }
    for threads in args.threads:
        out["measurements"].append(measure(threads, model, x, y_np, x_val, args, agent_run))
        m = out["measurements"][-1]
        print(f"# {threads} thread(s): load {m['load_before']} -> {m['load_after']}")
        for r in m["rows"]:
            print(f"{r['policy']:<28} acc {r['accuracy']:.4f}  latency {r['charged_latency_ratio']:.3f}  "
                  f"flops {r['charged_flops_ratio']:.3f}  wall {r['measured_wall_ratio']:.3f}  "
                  f"charged/measured {r['charged_over_measured']:.2f}  (vs bare: wall "
                  f"{r['measured_wall_ratio_vs_bare']:.3f}, {r['charged_over_measured_vs_bare']:.2f})")
    target = Path(args.out)
    atomic_write_json(target.with_suffix(".json"), out)
    atomic_write_text(target.with_suffix(".md"), render(out))
    print(f"results: {target.with_suffix('.json')} {target.with_suffix('.md')}")
    return 0
