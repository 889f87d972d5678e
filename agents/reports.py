"""Reports as Markdown: the evaluation report (:func:`render_evaluation`, ``report.md``) and the
sweep report (:func:`render_sweep`, ``sweep.md``), and the helpers their JSON shares. Computing them
is :mod:`agents.evaluate` and :mod:`agents.sweep`; their figures are :mod:`agents.plots`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from agents.records import FLOPS_UNIT
from dynalay_env.model import format_provenance


def jsonable(obj: Any) -> Any:
    """``obj`` with NumPy scalars as Python numbers, NaN as None and tuples as lists (for ``json``)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def baseline_points(entry: Any) -> list[tuple[float, float]]:
    """(compute, accuracy) points of a baseline in ``sweep.json``: a list of summaries or an exact
    curve's columns (``mean_compute``, ``accuracy``)."""
    if isinstance(entry, dict):
        return list(zip(entry["mean_compute"], entry["accuracy"], strict=True))
    return [(b["mean_compute"], b["accuracy"]) for b in entry]


def format_choice(choice: dict[str, Any] | None) -> str:
    """One line for a trial's choice (algorithm, reward and its parameters); empty for None."""
    if not choice:
        return ""
    params = ", ".join(f"{k}={v:.3g}" for k, v in choice["reward_params"].items())
    extra = ", ".join(f"{k}={v:.2g}" for k, v in choice.get("hyperparams", {}).items())
    if choice["reward"] == "none":  # a learned non-RL baseline: no reward, its own lambda
        return f"{choice['algo']} {extra}"
    return f"{choice['algo']} {choice['reward']}({params}){' ' + extra if extra else ''}"


def cost_note(report: dict[str, Any]) -> str:
    """One sentence naming what a report's compute is charged in (its ``cost`` entry; FLOPs when absent)."""
    cost = report.get("cost") or {"name": "flops", "unit": FLOPS_UNIT}
    if cost["name"] == "latency":
        return (f"Compute is charged in {cost['unit']}: seconds from a latency table measured on one device "
                f"(`dynalay profile`), table-estimated, not measured per episode; decisions are priced at the same "
                f"share of the full-depth model as their FLOPs, and every FLOPs figure is still the FLOPs executed.")
    return f"Compute is charged in {cost['unit']}."


def render_evaluation(report: dict[str, Any]) -> str:
    """The evaluation report as Markdown: the table of every policy, the agent against thresholding, provenance."""
    lines = [f"# DynaLay evaluation: {report.get('policy')} on {report.get('dataset', '?')} / {report['split']}",
             "", f"{report['n_examples']} examples, each once. Compute is normalised: 1.0 = full-depth model. "
                 "*mean compute* counts the policy's own decisions (FLOPs per decision x decisions: each step, EXIT "
                 "included, not the forced exit at max_steps); *env only* is the main model alone. "
                 + cost_note(report), "",
             *([format_provenance(report["model_provenance"]), ""] if report.get("model_provenance") else []),
             "| policy | params | accuracy | mean compute | env only | FLOPs / decision |",
             "|---|---|---:|---:|---:|---:|"]

    def row(name: str, params: str, entry: dict[str, Any]) -> str:
        env_only = entry.get("mean_env_compute", entry["mean_compute"])
        return (f"| {name} | {params} | {entry['accuracy']:.4f} | {entry['mean_compute']:.3f} | {env_only:.3f} | "
                f"{entry.get('decision_flops', 0):,.0f} |")

    if "vs_threshold" in report:
        lines.append(row(f"**{report['policy']}**", "", report))
    for b in report["baselines"]:
        lines.append(row(b["name"], ", ".join(f"{k}={v}" for k, v in b["params"].items()), b))
    if "vs_threshold" in report:
        v = report["vs_threshold"]
        lines += ["", f"**Against confidence thresholding at the same compute (decisions counted on both sides):** {v['difference']:+.4f} accuracy "
                      f"(95% paired bootstrap CI [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]); "
                      + ("beats thresholding." if v["beats_threshold"] else "does not beat thresholding.")]
    if "random_match" in report and not report["random_match"]["matched"]:
        lines += ["", f"**The random row is not at matched compute:** {report['random_match']['note']}."]
    oracles = [(label, report[key]) for key, label in (("oracle", "path oracle"), ("prefix_oracle", "prefix oracle"))
               if key in report]
    if oracles:
        lines += ["", "| oracle | accuracy | mean compute | no correct answer |", "|---|---:|---:|---:|"]
        lines += [f"| {label} | {o['accuracy']:.4f} | {o['mean_compute']:.3f} | {o['unsolvable_share']:.4f} |"
                  for label, o in oracles]
    if "curves" in report:
        lines += ["", "| threshold rule | distinct thresholds | chosen on val |", "|---|---:|---:|"]
        chosen = report.get("thresholds_chosen_on_val", {})
        lines += [f"| {c['rule']} | {c['n_thresholds']} | {chosen.get(c['param'], float('nan')):.4g} |"
                  for c in report["curves"].values()]
    if "curves_note" in report:
        lines += ["", report["curves_note"]]
    lines += ["", f"Difficulty correlation (Spearman, compute vs the oracle's minimum compute): "
                  f"{report['difficulty_correlation']}", ""]
    for name, path in report.get("figures", {}).items():
        lines.append(f"![{name}]({Path(path).name})")
    return "\n".join(lines) + "\n"


def render_sweep(report: dict[str, Any]) -> str:
    """The sweep report as Markdown: trial counts and wall time, the Pareto trials on ``val`` and ``test``."""
    c = report["counts"]
    lines = [f"# Reward-shaping study `{report['study_name']}` ({report['dataset']})", "",
             f"{c['complete']} complete trials ({c['fail']} failed, {c['surplus']} surplus); storage "
             f"`{report['storage']}`; study wall time {report['study_wall_seconds'] or 0:.0f} s, mean trial "
             f"{report['mean_trial_seconds'] or 0:.0f} s. Compute 1.0 = the full-depth model; it counts each "
             f"policy's decisions (its FLOPs per decision, each step, EXIT included), thresholds their statistic; "
             f"*env only* is the main model alone. {cost_note(report)}", "",
             *([format_provenance(report["model_provenance"]), ""] if report.get("model_provenance") else []),
             "## Pareto-optimal trials (chosen on val, re-evaluated on test)", "",
             "| trial | reward | val acc | val compute | test acc | test compute | test env only | "
             "vs confidence threshold (95% CI) |",
             "|---|---|---|---|---|---|---|---|"]
    for p in report["pareto"]:
        v = p["test_vs_confidence"]
        env_only = p.get("test_mean_env_compute", p["test_mean_compute"])
        lines.append(f"| {p['number']} | {format_choice(p)} | {p['val_accuracy']:.4f} | {p['val_mean_compute']:.3f} | "
                     f"{p['test_accuracy']:.4f} | {p['test_mean_compute']:.3f} | {env_only:.3f} | "
                     f"{v['difference']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] |")
    lines += ["", "## Hypervolume (accuracy x compute dominated; higher is better)", "",
              "| split | reference (accuracy, compute) | agent front | confidence-threshold front |", "|---|---|---|---|"]
    for split, h in report["hypervolume"].items():
        ref = h["reference_point"]
        lines.append(f"| {split} ({h['agent_points']}) | ({ref['accuracy']:.4f}, {ref['mean_compute']:.3f}) | "
                     f"{h['agent_front']:.5f} | {h['confidence_threshold_front']:.5f} |")
    oracle_rows = [(split, curves) for split, curves in report["baselines"].items() if "prefix_oracle" in curves]
    if oracle_rows:
        lines += ["", "## Oracles and threshold curves", "",
                  "Threshold curves use every distinct threshold on each split; the confidence hull an agent is "
                  "compared with is fitted on that same split, which favours thresholding. The path oracle is the "
                  "cheapest correct path of at most max_steps layers; the prefix oracle the cheapest correct prefix "
                  "of the full-depth order (the bound for exit-only policies).", "",
                  "| split | path oracle (acc, compute) | prefix oracle (acc, compute) | confidence thresholds |",
                  "|---|---|---|---:|"]
        for split, curves in oracle_rows:
            path, prefix = curves["oracle"][0], curves["prefix_oracle"][0]
            lines.append(f"| {split} | {path['accuracy']:.4f}, {path['mean_compute']:.3f} | {prefix['accuracy']:.4f}, "
                         f"{prefix['mean_compute']:.3f} | {len(baseline_points(curves['confidence']))} |")
    lines += ["", "## All trials (val)", "", "| trial | state | reward | val acc | val compute | Pareto |",
              "|---|---|---|---|---|---|"]
    for t in report["trials"]:
        values = t["values"] or [float("nan"), float("nan")]
        state = "surplus" if t.get("surplus") else t["state"].lower()
        lines.append(f"| {t['number']} | {state} | {format_choice(t.get('choice'))} | {values[0]:.4f} | "
                     f"{values[1]:.3f} | {'yes' if t['pareto'] else ''} |")
    return "\n".join(lines) + "\n"


__all__ = ["baseline_points", "format_choice", "jsonable", "render_evaluation", "render_sweep"]
