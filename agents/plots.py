"""The figures of the reports (matplotlib, Agg backend): :func:`plot_evaluation` (accuracy against
compute, actions, compute against difficulty) and :func:`plot_sweep` (the study's trials and fronts).
Each figure is written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.baselines import OracleSearch
from agents.curves import ExactCurve
from agents.records import FLOPS_UNIT, EpisodeRecords
from agents.reports import baseline_points
from dynalay_env.atomic import atomic_path


def compute_label(report: dict[str, Any]) -> str:
    """The unit a figure's compute is charged in, from the report's ``cost`` (FLOPs when absent)."""
    return (report.get("cost") or {}).get("unit", FLOPS_UNIT)

def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    # Deferred: choosing a backend is a process-wide side effect, taken when a figure is drawn,
    # never when agents is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int) -> Path:
    """Write ``fig`` to ``path`` atomically at ``dpi``, then close it (also when writing fails)."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        pyplot().close(fig)
    return path


CURVE_STYLES: dict[str, str] = {"confidence": "-", "entropy": "--", "margin": "-.", "stable_prediction": "o:"}


def plot_evaluation(run_dir: Path, report: dict[str, Any], focus: EpisodeRecords, baselines: Sequence[EpisodeRecords],
                curves: dict[str, ExactCurve], search: OracleSearch) -> dict[str, Path]:
    """Draw the report's figures into ``run_dir`` (accuracy against compute, compute against difficulty,
    actions taken); returns ``{name: path}``.
    """
    plt = pyplot()

    out: dict[str, Path] = {}

    def save(fig: Any, name: str) -> Path:
        return save_figure(fig, run_dir / name, dpi=120)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, style in CURVE_STYLES.items():
        curve = curves[name]
        ax.plot(curve.mean_compute, curve.accuracy, style, ms=3, lw=1, alpha=0.8,
                label=f"{name} threshold ({len(curve)} values)")
    hc, ha = curves["confidence"].hull()
    ax.plot(hc, ha, "k:", lw=1, label="confidence hull (fitted on this split)")
    fixed = [b for b in baselines if b.policy == "fixed_path"]
    ax.plot([b.mean_compute for b in fixed], [b.accuracy for b in fixed], "k^", label="fixed paths")
    point_labels = {"random": "random", "oracle": "path oracle", "prefix_oracle": "prefix oracle"}
    for b in baselines:
        if b.policy in point_labels:
            ax.plot(b.mean_compute, b.accuracy, "D", label=point_labels[b.policy])
    if "vs_threshold" in report:
        ax.plot(focus.mean_compute, focus.accuracy, "r*", ms=14, label=focus.policy)
    ax.set_xlabel(f"mean normalised compute (1.0 = full depth; {compute_label(report)})")
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy vs compute ({report['split']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out["accuracy_vs_compute"] = save(fig, "accuracy_vs_compute.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    freqs = report["action_frequencies"]
    ax.bar(list(freqs), list(freqs.values()))
    ax.set_ylabel("share of actions")
    ax.set_title(f"actions of {focus.policy}")
    out["action_histogram"] = save(fig, "action_histogram.png")

    fig, ax = plt.subplots(figsize=(5.5, 4))
    sel = search.solvable
    ax.scatter(search.min_compute[sel], focus.compute[sel], s=4, alpha=0.4, label="solvable")
    if (~sel).any():
        ax.scatter(np.full((~sel).sum(), np.nanmax(search.min_compute) * 1.1 if sel.any() else 1.0),
                   focus.compute[~sel], s=4, alpha=0.4, c="gray", label="no path correct")
    ax.set_xlabel("difficulty: oracle's minimum compute to a correct answer")
    ax.set_ylabel(f"compute spent by {focus.policy}")
    ax.set_title(f"Spearman {report['difficulty_correlation']:.3f}" if report["difficulty_correlation"] == report[
        "difficulty_correlation"] else "compute vs difficulty")
    ax.legend(fontsize=8)
    out["compute_vs_difficulty"] = save(fig, "compute_vs_difficulty.png")
    return out


BASELINE_STYLES: dict[str, tuple[str, str]] = {
    "fixed_paths": ("k^", "fixed paths"), "confidence": ("-", "confidence threshold"),
    "entropy": ("--", "entropy threshold"), "margin": ("-.", "margin threshold"),
    "stable_prediction": ("o:", "stable-prediction threshold"), "random": ("x:", "random exits"),
    "oracle": ("D", "path oracle"), "prefix_oracle": ("P", "prefix oracle")}


def plot_sweep(report: dict[str, Any], path: Path) -> Path:
    """Three panels: val accuracy against compute (every trial, coloured by ``lambda_compute``, the
    Pareto front in red) and test (the Pareto trials re-evaluated), each over that split's baseline
    curves, with compute on a log axis; and each trial's val compute against its ``lambda_compute``."""
    plt = pyplot()
    from matplotlib.colors import LogNorm  # after pyplot() has chosen the backend

    trials = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    lambdas = [t["choice"]["reward_params"].get("lambda_compute", t["choice"].get("hyperparams", {}).get("lambda_compute"))
               for t in trials]
    known = [lam for lam in lambdas if lam]
    norm = LogNorm(min(known), max(max(known), min(known) * 1.01)) if known else None
    by_number = {t["number"]: lam for t, lam in zip(trials, lambdas, strict=True)}
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.4), gridspec_kw={"width_ratios": [1, 1, 0.8]}, layout="constrained")

    def scatter(ax: Any, points: list[tuple[float, float, float | None]], label: str) -> Any:
        coloured = [p for p in points if p[2]]
        mappable = None
        if coloured:
            mappable = ax.scatter([p[0] for p in coloured], [p[1] for p in coloured], c=[p[2] for p in coloured],
                                  cmap="viridis", norm=norm, s=42, edgecolors="k", linewidths=0.5, zorder=5,
                                  label=f"{label} (colour: lambda_compute)")
        plain = [p for p in points if not p[2]]
        if plain:
            ax.scatter([p[0] for p in plain], [p[1] for p in plain], marker="P", c="tab:gray", edgecolors="k",
                       linewidths=0.5, s=52, zorder=5, label=f"{label} without lambda (blockdrop)")
        return mappable

    for ax, split in zip(axes[:2], ("val", "test"), strict=True):
        for name, (style, label) in BASELINE_STYLES.items():
            if name not in report["baselines"][split]:  # reports written before a baseline existed
                continue
            points = sorted(baseline_points(report["baselines"][split][name]))
            ax.plot([p[0] for p in points], [p[1] for p in points], style, ms=4, lw=1, alpha=0.7, label=label)
        h = report["hypervolume"][split]
        ax.set_title(f"{split}: hypervolume agents {h['agent_front']:.4f}, confidence threshold "
                     f"{h['confidence_threshold_front']:.4f}", fontsize=10)
        ax.set_xscale("log")
        ax.set_xlabel(f"mean normalised compute (1.0 = full depth; {compute_label(report)}; log scale)")
        ax.set_ylabel(f"{split} accuracy")
        ax.grid(alpha=0.3, which="both")
    front = sorted((t["values"][1], t["values"][0]) for t in trials if t["pareto"])
    axes[0].plot([f[0] for f in front], [f[1] for f in front], "r-", lw=2.5, alpha=0.6, zorder=4, label="Pareto front")
    mappable = scatter(axes[0], [(t["values"][1], t["values"][0], lam) for t, lam in zip(trials, lambdas, strict=True)],
                       "trials")
    test_front = sorted(((p["test_mean_compute"], p["test_accuracy"], by_number[p["number"]]) for p in report["pareto"]),
                        key=lambda point: point[:2])  # lambda may be None (blockdrop): never compared
    axes[1].plot([f[0] for f in test_front], [f[1] for f in test_front], "r-", lw=2.5, alpha=0.6, zorder=4,
                 label="Pareto trials re-evaluated")
    scatter(axes[1], test_front, "Pareto trials")
    for ax in axes[:2]:
        ax.legend(fontsize=7, loc="lower right")

    ax = axes[2]
    for kind, marker in (("paper", "o"), ("logprob", "s")):
        points = [(t["choice"]["reward_params"]["lambda_compute"], t["values"][1]) for t in trials
                  if t["choice"]["reward"] == kind]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, s=42, edgecolors="k", linewidths=0.5,
                       label=f"{kind} reward")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lambda_compute (price of one full-depth compute)")
    ax.set_ylabel("val mean normalised compute")
    ax.set_title("how lambda_compute moves the operating point", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes[1], label="lambda_compute")
    fig.suptitle(f"Reward-shaping study '{report['study_name']}' on {report['dataset']}: "
                 f"{report['counts']['complete']} trials", fontsize=12)
    return save_figure(fig, path, dpi=110)


__all__ = ["BASELINE_STYLES", "CURVE_STYLES", "plot_evaluation", "plot_sweep", "pyplot", "save_figure"]
