"""The budgeted score: MSDNet's protocol (Huang et al., ICLR 2018) for ranking adaptive-depth methods.

A family of runs (one algorithm's or one kind of policy's runs over seeds and reward settings) is
judged at fixed compute budgets B (normalised compute, 1.0 = full depth, decisions counted):

1. The family's **entry** at B is its run with the best ``val`` accuracy among the runs whose ``val``
   mean compute is at most B (ties: the cheaper on ``val``, then the first given). A family with no
   run within B has no entry there.
2. The entry's **margin** at B is its ``test`` accuracy minus the confidence hull's ``test`` accuracy
   at B, with a paired bootstrap over the test examples: each resample re-weights the same examples
   for the entry and for the exact threshold curve, whose hull is refitted
   (:meth:`agents.curves.ExactCurve.weighted`, as :func:`agents.curves.vs_curve` pairs a run with the
   hull). The entry's ``test`` compute is reported beside it and **flagged** when it exceeds B by more
   than 5 %: its val compute chose it, its test compute may drift.
3. The family's **score** is the mean of its margins over the budgets where it has an entry, with a
   bootstrap interval at level ``1 - alpha`` from the same resamples (pass ``alpha / m`` for a
   Bonferroni correction over m comparisons).

Runs far above every budget never enter, so a family cannot gain by covering compute nobody asked
for, which is what the hypervolume rewards. Hypervolume stays as a secondary figure, computed by
:func:`common_range_hypervolume` only over the compute range both fronts cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.curves import ExactCurve, hull_at
from agents.records import EpisodeRecords, hull_accuracy_at
from agents.sweep import hypervolume

__all__ = [
    "BUDGETS",
    "OVERSHOOT_TOLERANCE",
    "BudgetRun",
    "budget_entry",
    "budgeted_score",
    "common_range_hypervolume",
    "margin_resamples",
    "render_markdown",
    "score_families",
]

#: Compute budgets B, as fractions of full depth (normalised compute, decisions counted).
BUDGETS: tuple[float, ...] = (0.1, 0.2, 0.35, 0.5)
#: An entry whose test compute exceeds B by more than this share is flagged.
OVERSHOOT_TOLERANCE = 0.05


@dataclass(frozen=True)
class BudgetRun:
    """One candidate run of a family.

    Attributes:
        name: The run's name in reports (e.g. ``"ppo-l0.1-s2"``).
        val_accuracy: Accuracy on ``val`` (share in [0, 1]).
        val_compute: Mean normalised compute on ``val``, decisions counted.
        test: Per-example records on ``test`` (arrays ``[n]`` in example order, compute with
            decisions counted), as :func:`agents.evaluate.run_policy` returns them.
    """

    name: str
    val_accuracy: float
    val_compute: float
    test: EpisodeRecords


def budget_entry(runs: Sequence[BudgetRun], budget: float) -> BudgetRun | None:
    """The family's entry at ``budget``: best ``val`` accuracy among runs with ``val_compute <= budget``
    (ties: lower ``val_compute``, then the earlier run); None when no run is within the budget."""
    eligible = [(i, r) for i, r in enumerate(runs) if r.val_compute <= budget]
    if not eligible:
        return None
    return min(eligible, key=lambda ir: (-ir[1].val_accuracy, ir[1].val_compute, ir[0]))[1]


def _resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]`` example counts of ``n_boot`` bootstrap resamples of ``n`` examples."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, n))
    for b in range(n_boot):
        weights[b] = np.bincount(rng.integers(0, n, n), minlength=n)
    return weights


def margin_resamples(test: EpisodeRecords, curve: ExactCurve, budget: float, weights: np.ndarray,
                     chunk: int = 100) -> np.ndarray:
    """``[B]`` bootstrap values of (run's test accuracy - the curve's hull accuracy at ``budget``).

    ``weights`` ``[B, n]`` are example counts; the run and the curve are re-weighted together
    (paired), and the curve's hull is refitted on each resample."""
    n = test.correct.shape[0]
    if curve._base_correct.shape[0] != n or not np.array_equal(test.example, np.arange(n)):
        raise ValueError(f"the run's test records ({n} examples) and the curve ({curve._base_correct.shape[0]}) "
                         "must cover the same split in example order")
    out = []
    correct = test.correct.astype(np.float64)
    for start in range(0, weights.shape[0], chunk):
        w = weights[start:start + chunk]
        acc, comp = curve.weighted(w)
        out.append(w @ correct / w.sum(1) - hull_at(comp, acc, np.full(w.shape[0], float(budget))))
    return np.concatenate(out) if out else np.zeros(0)


def _interval(values: np.ndarray, alpha: float) -> list[float]:
    if values.size == 0:
        return [float("nan"), float("nan")]
    low, high = np.percentile(values, [50.0 * alpha, 100.0 - 50.0 * alpha])
    return [float(low), float(high)]


def budgeted_score(runs: Sequence[BudgetRun], curve: ExactCurve, budgets: Sequence[float] = BUDGETS,
                   n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, budget_alpha: float | None = None,
                   tolerance: float = OVERSHOOT_TOLERANCE, curve_name: str | None = None) -> dict[str, Any]:
    """A family's budgeted score against the confidence hull of ``curve`` (the ``test`` exact curve).

    Args:
        runs: The family's runs (any order; see :class:`BudgetRun`).
        curve: The confidence rule's exact curve on ``test``, decisions counted.
        budgets: Budgets B (normalised compute), default :data:`BUDGETS`.
        n_boot: Bootstrap resamples of the test examples (shared by every budget, so the score's
            interval accounts for the budgets' correlation).
        seed: Seed of the resamples.
        alpha: Two-sided error of the score's interval (e.g. ``0.05 / m`` for Bonferroni over m
            comparisons).
        budget_alpha: Two-sided error of each budget's interval; default ``alpha``. A claim made at
            whichever budget looks best picks one of ``len(budgets)`` margins, so pass
            ``alpha / len(budgets)`` for it.
        tolerance: Flag an entry whose test compute exceeds B by more than this share.
        curve_name: The compared rule's name in the output (default: the curve's statistic, e.g.
            ``"confidence"``; ``"router_confidence"`` for the router's curve).

    Returns:
        ``{"budgets": [per budget: {"budget", "entry": None | {"run", "val_accuracy", "val_compute",
        "test_accuracy", "test_compute", "over_budget", "hull_test_accuracy", "margin", "ci"}}],
        "score", "ci", "budgets_scored", "complete", "flagged", "alpha", "n_bootstrap"}``; ``score`` is
        None when the family has no entry at any budget.
    """
    budget_alpha = alpha if budget_alpha is None else budget_alpha
    for name, value in (("alpha", alpha), ("budget_alpha", budget_alpha)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), e.g. 0.05 or 0.05 / m for Bonferroni, got {value!r}")
    if not budgets or any(b <= 0 for b in budgets):
        raise ValueError(f"budgets must be positive normalised compute values, got {list(budgets)}")
    n = int(curve._base_correct.shape[0])
    weights = _resample_weights(n, n_boot, seed)
    per_budget: list[dict[str, Any]] = []
    margins, boots = [], []
    for budget in budgets:
        entry = budget_entry(runs, budget)
        if entry is None:
            per_budget.append({"budget": float(budget), "entry": None})
            continue
        hull = hull_accuracy_at(curve.mean_compute, curve.accuracy, float(budget))
        margin = entry.test.accuracy - hull
        resampled = margin_resamples(entry.test, curve, budget, weights)
        test_compute = entry.test.mean_compute
        margins.append(margin)
        boots.append(resampled)
        per_budget.append({"budget": float(budget), "entry": {
            "run": entry.name, "val_accuracy": float(entry.val_accuracy), "val_compute": float(entry.val_compute),
            "test_accuracy": entry.test.accuracy, "test_compute": test_compute,
            "over_budget": bool(test_compute > budget * (1.0 + tolerance)),
            "hull_test_accuracy": hull, "margin": float(margin), "ci": _interval(resampled, budget_alpha)}})
    scored = [b["budget"] for b in per_budget if b["entry"] is not None]
    score = float(np.mean(margins)) if margins else None
    ci = _interval(np.mean(boots, axis=0), alpha) if margins and n_boot else [float("nan"), float("nan")]
    return {"budgets": per_budget, "score": score, "ci": ci if margins else None, "budgets_scored": scored,
            "complete": len(scored) == len(budgets),
            "flagged": [b["budget"] for b in per_budget if b["entry"] is not None and b["entry"]["over_budget"]],
            "alpha": float(alpha), "budget_alpha": float(budget_alpha), "n_bootstrap": int(n_boot),
            "tolerance": float(tolerance),
            "compared_with": f"the {curve_name or curve.statistic} hull on test (fitted on test, which favours it)"}


def common_range_hypervolume(front: Sequence[tuple[float, float]], other: Sequence[tuple[float, float]],
                             floor_accuracy: float) -> dict[str, Any]:
    """Hypervolumes of two fronts over only the compute range both cover.

    Args:
        front: ``(accuracy, mean normalised compute)`` points of the first front.
        other: The same for the second front.
        floor_accuracy: Accuracy below which nothing counts (e.g. the always-EXIT policy's).

    Returns:
        ``{"range": [low, high] | None, "front": area, "other": area}``: each front's area above
        ``floor_accuracy`` within ``[low, high]``, where low is the larger of the two fronts' smallest
        compute and high the smaller of their largest. A point cheaper than ``low`` dominates from
        ``low`` on; points above ``high`` add nothing. No overlap gives a None range and areas of 0.
    """
    if not front or not other:
        return {"range": None, "front": 0.0, "other": 0.0}
    low = max(min(c for _, c in front), min(c for _, c in other))
    high = min(max(c for _, c in front), max(c for _, c in other))
    if not high > low:
        return {"range": None, "front": 0.0, "other": 0.0}

    def area(points: Sequence[tuple[float, float]]) -> float:
        # A point cheaper than low counts from low; the reference's compute is high.
        return hypervolume([(a, max(c, low)) for a, c in points if c < high], (floor_accuracy, high))

    return {"range": [float(low), float(high)], "front": area(front), "other": area(other)}


def score_families(families: dict[str, Sequence[BudgetRun]], curve: ExactCurve, budgets: Sequence[float] = BUDGETS,
                   n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                   budget_alpha: float | None = None, curve_name: str | None = None) -> dict[str, dict[str, Any]]:
    """:func:`budgeted_score` of every family (``name -> runs``) against the same ``test`` curve, with
    the same resamples (one ``seed``), so families are compared on the same bootstrap draws."""
    return {name: budgeted_score(runs, curve, budgets, n_boot=n_boot, seed=seed, alpha=alpha,
                                 budget_alpha=budget_alpha, curve_name=curve_name)
            for name, runs in families.items()}


def render_markdown(scores: dict[str, dict[str, Any]]) -> str:
    """A markdown table of :func:`score_families`' result: one row per family, the margin (and the
    entry's test compute, ``!`` when flagged) per budget, then the score with its interval."""
    if not scores:
        return "No family has a run.\n"
    first = next(iter(scores.values()))
    budgets = [b["budget"] for b in first["budgets"]]
    level = 100 * (1 - first["alpha"])
    budget_level = 100 * (1 - first.get("budget_alpha", first["alpha"]))
    lines = ["| family | " + " | ".join(f"B = {b:g}" for b in budgets) + f" | score ({level:.4g} % interval) |",
             "|---|" + "---|" * (len(budgets) + 1)]
    for name, score in scores.items():
        cells = []
        for b in score["budgets"]:
            e = b["entry"]
            cells.append("no run" if e is None else
                         f"{e['margin']:+.4f} [{e['ci'][0]:+.4f}, {e['ci'][1]:+.4f}] "
                         f"at {e['test_compute']:.3f}{' !' if e['over_budget'] else ''}")
        total = ("none" if score["score"] is None else
                 f"{score['score']:+.4f} [{score['ci'][0]:+.4f}, {score['ci'][1]:+.4f}]"
                 + ("" if score["complete"] else f" over {len(score['budgets_scored'])} budgets"))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {total} |")
    return "\n".join(lines) + ("\n\nMargin = the family's entry (best `val` accuracy within B) minus the "
                               f"{first['compared_with'].split(' on test')[0].removeprefix('the ')} at B on `test`, "
                               f"paired bootstrap, {budget_level:.4g} % interval; `at`: the entry's test compute; "
                               "`!`: it exceeds B by more than 5 %.\n")
