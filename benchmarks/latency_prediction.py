"""Does the latency table predict wall time? Charged latency ratio against measured wall-time ratio of
adaptive inference, side by side in one process.

On a dataset's default main model (``--dataset``, MNIST-1D by default), for each torch thread count
(``--threads``), this profiles a latency table (``dynalay_env.latency.profile_latency``, batch sizes up
to ``--batch-size``), then runs ``AdaptiveClassifier`` with ``cost="latency"`` on the ``--split``
inputs at ``--batch-size`` for

- the confidence rule at ``--tau`` (layers 1..K in order),
- each trained agent of ``--agent NAME=RUN_DIR`` (a ``train_agent.py train`` run on the same model), and
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

    python -m benchmarks latency_prediction --threads 1 2 --agent flops=runs/demo/agent \\
        --agent latency=runs/demo-latency/agent
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

from agents.baselines import BaselinePolicy, ConfidencePolicy, FixedPathPolicy
from agents.curves import ExactCurve, exact_curve, record_depths, statistic_flops
from agents.inference import AdaptiveClassifier, InferenceResult
from agents.training import load_run
from benchmarks import command_words
from benchmarks.adaptive_inference import timed
from dynalay_env.atomic import atomic_write_json, atomic_write_text
from dynalay_env.cache import cached_default_model
from dynalay_env.core import DynaLayCore
from dynalay_env.datasets import load_dataset
from dynalay_env.latency import DEFAULT_BATCH_SIZES, DeviceFingerprint, LatencyTable, latency_costs, profile_latency
from dynalay_env.model import load_checkpoint, provenance_of, weights_hash

#: The largest allowed charged / measured ratio either way (the issue's target).
TARGET = 1.25
#: The full-depth run through the classifier: the wall-time reference (1.0), as the table's 1.0 is full depth.
FULL = "full depth (classifier)"
#: Full depth on the bare model (encoder, layers 1..K, one head call): what a user deploys without a policy.
BARE = "full depth (bare model)"
#: Accuracy within this much (0.5 points) counts as matched.
MATCH_POINTS = 0.005
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


@torch.no_grad()
def decision_seconds(clf: AdaptiveClassifier, x: torch.Tensor, table: LatencyTable, repeats: int) -> float:
    """Measured seconds per input of one decision of ``clf``'s policy: its ``predict`` on the reset
    observations of all of ``x`` at once (median of ``repeats``, after one warm-up call)."""
    core = DynaLayCore(clf.model, None, x.shape[0], sample_mode="sequential", examples=(x, torch.zeros(
        x.shape[0], dtype=torch.long)), cost="latency", latency_table=table, **clf.options)
    everything = np.arange(x.shape[0])
    obs = core.reset(everything, examples=everything).cpu().numpy()
    policy = clf.policy
    if isinstance(policy, BaselinePolicy):
        policy.bind(core)
    start = np.ones(x.shape[0], dtype=bool)
    policy.predict(obs, state=None, episode_start=start, deterministic=True)
    times = [timed(policy.predict, obs, None, start, True)[0] for _ in range(repeats)]
    return statistics.median(times) / x.shape[0]


def figures(name: str, result: InferenceResult, flops_normalizer: float, y: np.ndarray, seconds: list[float],
            base: float, bare: float, flops_paths: np.ndarray | None, per_decision: float,
            max_steps: int) -> dict[str, Any]:
    """One policy's row: accuracy, charged ratios, measured wall ratios (against full depth through
    the classifier, ``base`` seconds, and on the bare model, ``bare`` seconds) and the quotients.
    ``per_decision``: the policy's measured seconds per decision and input, for the variant that
    charges decisions their measured latency instead of their FLOPs' share."""
    wall = statistics.median(seconds)
    latency_ratio = float(np.mean(result.compute))
    wall_ratio, bare_ratio = wall / base, wall / bare
    normalizer = float(np.mean(result.cost / result.compute))
    decisions = result.steps + (result.steps < max_steps)  # the forced exit at max_steps is no decision
    measured_decisions = float(np.mean(result.env_compute)) + float(np.mean(decisions)) * per_decision / normalizer
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
           "decision_seconds_per_input": per_decision, "mean_decisions": float(np.mean(decisions)),
           "charged_latency_ratio_measured_decisions": measured_decisions,
           "measured_decisions_over_measured": measured_decisions / wall_ratio,
           "mean_steps": float(np.mean(result.steps))}
    if flops_paths is not None:
        row["paths_same_as_flops"] = float((flops_paths == result.path).all(1).mean())
    return row


def confidence_curves(model: Any, x: torch.Tensor, y: torch.Tensor, table: LatencyTable,
                      max_steps: int) -> dict[str, ExactCurve]:
    """The confidence rule's exact curve on ``x`` under each cost (``"flops"``, ``"latency"``), each
    decision charged the statistic's FLOPs."""
    decision = statistic_flops("confidence", model.num_classes)
    latency = latency_costs(table, model)
    return {"flops": exact_curve(record_depths(model, x, y, max_steps), "confidence", decision),
            "latency": exact_curve(record_depths(model, x, y, max_steps, costs=latency), "confidence", decision)}


def matched_taus(curves: dict[str, ExactCurve], result: InferenceResult, flops_normalizer: float,
                 y: np.ndarray) -> dict[str, float]:
    """Confidence thresholds matched to an agent's episodes on the same inputs: ``accuracy`` (the
    cheapest, in table-estimated latency, within :data:`MATCH_POINTS` of its accuracy; else the
    nearest accuracy), ``latency`` and ``flops`` (the charged compute nearest its own under that cost)."""
    accuracy = float((result.prediction == y).mean())
    lat = curves["latency"]
    close = np.flatnonzero(np.abs(lat.accuracy - accuracy) <= MATCH_POINTS)
    j = close[np.argmin(lat.mean_compute[close])] if close.size else int(np.argmin(np.abs(lat.accuracy - accuracy)))
    own = {"latency": float(np.mean(result.compute)), "flops": float(np.mean(result.flops)) / flops_normalizer}
    taus = {"accuracy": float(lat.threshold[j])}
    for cost, compute in own.items():
        taus[cost] = float(curves[cost].threshold[int(np.argmin(np.abs(curves[cost].mean_compute - compute)))])
    return taus


def measure(threads: int, model: Any, x: torch.Tensor, y: np.ndarray, x_val: torch.Tensor,
            args: argparse.Namespace, agents: dict[str, Path]) -> dict[str, Any]:
    """Profile the table on ``x_val`` and time every policy on ``x`` (labels ``y``) at ``threads``
    torch threads: the confidence rule at ``args.tau``, each agent, and the confidence rule at the
    thresholds matched to each agent."""
    torch.set_num_threads(threads)
    sizes = sorted({b for b in DEFAULT_BATCH_SIZES if b <= args.batch_size} | {args.batch_size})
    load_before = load_average()
    start = time.perf_counter()
    table: LatencyTable = profile_latency(model, x_val, batch_sizes=sizes, repeats=args.profile_repeats,
                                          warmup=args.profile_warmup)
    profile_seconds = time.perf_counter() - start
    flops_normalizer = float(model.cost_table().normalizer)
    k = model.num_layers

    def confidence(tau: float) -> AdaptiveClassifier:
        return AdaptiveClassifier(model, ConfidencePolicy(tau), batch_size=args.batch_size, cost="latency",
                                  latency_table=table)

    classifiers: dict[str, AdaptiveClassifier] = {}
    flops_paths: dict[str, np.ndarray] = {}
    for name, run in agents.items():
        classifiers[name] = AdaptiveClassifier.from_run(run, batch_size=args.batch_size, cost="latency",
                                                        latency_table=table)
        flops_paths[name] = AdaptiveClassifier.from_run(run, batch_size=args.batch_size, cost="flops").predict(x).path
    classifiers[f"confidence(tau={args.tau})"] = confidence(args.tau)
    classifiers[FULL] = AdaptiveClassifier(model, FixedPathPolicy(tuple(range(1, k + 1))), batch_size=args.batch_size,
                                           cost="latency", latency_table=table)
    results = {name: clf.predict(x) for name, clf in classifiers.items()}  # also the warm-up
    matched: dict[str, dict[str, str]] = {}
    if agents:
        curves = confidence_curves(model, x, torch.as_tensor(y), table, classifiers[FULL].options["max_steps"])
        for name in agents:
            taus = matched_taus(curves, results[name], flops_normalizer, y)
            matched[name] = {}
            for how, tau in taus.items():
                label = f"confidence(tau={tau:.6g})"
                matched[name][how] = label
                if label not in classifiers:
                    classifiers[label] = confidence(tau)
                    results[label] = classifiers[label].predict(x)
    reference = classifiers[FULL]
    calls: dict[str, Any] = {**{name: clf.predict for name, clf in classifiers.items()},
                             BARE: reference.predict_full_depth}
    reference.predict_full_depth(x)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):  # interleaved, so a change of machine load hits every policy alike
        for name, fn in calls.items():
            seconds, out = timed(fn, x)
            if name != BARE:
                results[name] = out
            times[name].append(seconds)
    bare = statistics.median(times[BARE])
    base = statistics.median(times[FULL])
    max_steps = reference.options["max_steps"]
    rows = [figures(name, results[name], flops_normalizer, y, times[name], base, bare, flops_paths.get(name),
                    decision_seconds(clf, x, table, args.repeats), max_steps) for name, clf in classifiers.items()]
    return {"threads": threads, "load_before": load_before, "load_after": load_average(),
            "profile_seconds": profile_seconds, "table": table.to_json(), "table_markdown": table.markdown(),
            "full_depth_bare_seconds": bare, "full_depth_bare_seconds_all": times[BARE],
            "full_depth_seconds": base, "full_depth_seconds_per_input": base / len(y),
            "table_full_depth_seconds_per_input": table.cost_table(model.cost_table(), args.batch_size).normalizer,
            "rows": rows, "matched": matched}


def render(out: dict[str, Any]) -> str:
    """The results as Markdown: one table per thread count, then the latency tables."""
    lines = [f"<!-- generated by `{out['command']}` -->", "",
             f"# Latency table against measured wall time ({out['dataset']}/{out['split']}, batch {out['batch_size']})",
             "",
             f"Model: provenance `{out['model']['provenance']}`, weights `{out['model']['weights_hash']}`"
             f"{'; agents: ' + '; '.join(a['description'] for a in out['agents'].values()) if out['agents'] else ''}. "
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
                  "wall ratio vs bare | latency charged / measured vs bare | latency, decisions measured / measured |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in m["rows"]:
            lines.append(f"| {r['policy']} | {r['accuracy']:.4f} | {r['charged_latency_ratio']:.3f} | "
                         f"{r['charged_flops_ratio']:.3f} | {r['measured_wall_ratio']:.3f} | "
                         f"{r['charged_over_measured']:.2f} ({'within' if r['within_target'] else 'outside'} 1.25x) | "
                         f"{r['flops_over_measured']:.2f} | {r['measured_wall_ratio_vs_bare']:.3f} | "
                         f"{r['charged_over_measured_vs_bare']:.2f} | {r['measured_decisions_over_measured']:.2f} |")
        lines += ["", "*latency, decisions measured*: the table's charge for the model with each decision charged the "
                      "policy's measured `predict` time per input (at this batch) instead of its FLOPs' share of full "
                      "depth; an estimate beside the env's charge, not what the env charges.", ""]
        table = m["table"]
        clamped = sum(v == 0.0 for rows in (table["injection"], table["iteration"]) for row in rows for v in row)
        if clamped:
            lines += ["", f"**{clamped} fitted piece(s) of this table are 0**: the 1- and 9-iteration probes timed in the "
                          f"wrong order, so timing noise (other processes on these cores) swamped the difference; "
                          f"its figures are not a measurement of this model."]
        lines += ["", f"Table-estimated full depth: {m['table_full_depth_seconds_per_input'] * 1e6:.2f} us per input; "
                      f"measured through the classifier: {m['full_depth_seconds_per_input'] * 1e6:.2f} us; on the bare "
                      f"model: {m['full_depth_bare_seconds'] / out['n_examples'] * 1e6:.2f} us."]
        for r in m["rows"]:
            if "paths_same_as_flops" in r:
                lines += ["", f"{r['policy']} takes the same path under `cost=\"latency\"` (its observed compute is "
                              f"table-estimated) as under `cost=\"flops\"` on {r['paths_same_as_flops']:.3f} of the "
                              f"inputs."]
        if m["matched"]:
            by_name = {r["policy"]: r for r in m["rows"]}
            lines += ["", f"Confidence thresholds matched to each agent on these inputs (thresholds chosen on this split, "
                          f"which favours them): at its accuracy (within {MATCH_POINTS * 100:.1f} points, the cheapest "
                          f"in table-estimated latency), at its charged latency, at its charged FLOPs. Speed-up = "
                          f"full depth through the classifier / measured wall time.", "",
                      "| agent | policy | accuracy | measured wall ratio | speed-up | charged latency ratio | "
                      "charged FLOPs ratio |", "|---|---|---:|---:|---:|---:|---:|"]
            for name, taus in m["matched"].items():
                for how, label in (("the agent", name), *((f"matched {k}", v) for k, v in taus.items())):
                    r = by_name[label]
                    lines.append(f"| {name} | {how}: {label} | {r['accuracy']:.4f} | {r['measured_wall_ratio']:.3f} | "
                                 f"{1 / r['measured_wall_ratio']:.2f}x | {r['charged_latency_ratio']:.3f} | "
                                 f"{r['charged_flops_ratio']:.3f} |")
        lines += ["", m["table_markdown"], ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist1d", help="its default cached model is measured (default: %(default)s)")
    parser.add_argument("--agent", action="append", default=[], metavar="NAME=RUN_DIR",
                        help="a `train_agent.py train` run on that model, timed as NAME; repeat for several")
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
    agent_runs: dict[str, Path] = {}
    agents: dict[str, dict[str, Any]] = {}
    for spec in args.agent:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--agent expects NAME=RUN_DIR, got {spec!r}")
        config, _, model_path = load_run(path)
        run_hash = weights_hash(load_checkpoint(model_path).model)
        if run_hash != weights_hash(model):
            raise SystemExit(f"the run {path} uses another main model (weights {run_hash}) than the default "
                             f"{dataset.name} model (weights {weights_hash(model)})")
        agent_runs[name] = Path(path)
        cost = config.env_kwargs.get("cost", "flops")
        agents[name] = {"run_dir": path, "algo": config.algo, "timesteps": config.timesteps, "seed": config.seed,
                        "trained_with_cost": cost, "env_kwargs": config.env_kwargs,
                        "description": f"{name}: {config.algo} seed {config.seed}, {config.timesteps} timesteps, "
                                       f"trained with cost={cost}"}
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
        "agents": agents,
        "machine": {"cpu": DeviceFingerprint.current("cpu").device, "arch": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "nice": os.nice(0)},
        "measurements": [],
    }
    for threads in args.threads:
        out["measurements"].append(measure(threads, model, x, y_np, x_val, args, agent_runs))
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
