"""Exact threshold curves and the prefix oracle, from one recorded pass along the full-depth order.

An *exit-only* policy walks a fixed layer order (by default the full-depth order: layers 1..K) and
exits at the first depth whose head statistic passes a threshold, else at the end of the order. Its
outcome on every example is fixed by what the head says at each depth, so one batched pass that
records, per example and depth, the prediction, the executed FLOPs and the statistics
(:func:`record_depths`) decides every threshold at once:

* :func:`exact_curve` sweeps **every distinct value** of a statistic analytically. Sorting the
  values at which some example's exit depth changes, and summing the changes in accuracy and FLOPs
  cumulatively, gives accuracy and mean compute for each threshold, with no pass per threshold.
  Statistics (:data:`STATISTICS`): ``confidence`` (top-1 probability ``>= tau``), ``entropy``
  (normalised entropy ``<= h``), ``margin`` (top-1 minus top-2 probability ``>= m``) and
  ``stable_prediction`` (the prediction unchanged for ``>= k`` consecutive steps).
* :func:`prefix_oracle` is the cheapest correct prefix of the order per example: the bound for
  exit-only policies (the path oracle of :func:`agents.baselines.oracle_search` may also change the
  order, and counts paths that are right by luck).
* :func:`vs_curve` compares a policy with the exact upper hull of a curve at the policy's compute,
  with a 95 % paired bootstrap interval; each resample re-weights the recorded examples, so the
  hull is refitted exactly per resample without another pass.

**Cost.** :func:`record_core` charges as its core does (``core.costs``: FLOPs executed, or a
latency table's table-estimated seconds under ``cost="latency"``); the record keeps the executed
FLOPs beside the charged cost, and every curve's compute is the charged cost over the core's
normaliser.

**Decision cost.** Every curve function takes ``decision_flops`` (FLOPs charged per decision of
the rule, default 0). A decision is one call of the rule: one at every depth the episode visits,
the exit included, but not the forced exit at ``max_steps``. The
charge is added to the FLOPs (and so to the normalised compute) the curve reports; the env-only
figure is the one with ``decision_flops=0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.records import FLOPS_UNIT, EpisodeRecords, hull_accuracy_at, upper_hull
from dynalay_env.core import DynaLayCore
from dynalay_env.model import CostTable
from dynalay_env.paths import cheapest_correct


@dataclass(frozen=True)
class Statistic:
    """A head statistic an exit rule thresholds: exit when ``value >= threshold`` (``higher=True``)
    or ``value <= threshold`` (``higher=False``)."""

    name: str
    param: str           # the threshold's name in params and reports
    higher: bool         # True: exit when the value is >= the threshold
    rule: str            # the rule in words
    minimum: float | None = None  # smallest meaningful threshold (points below it are dropped)


STATISTICS: dict[str, Statistic] = {
    "confidence": Statistic("confidence", "tau", True, "exit when the top-1 probability >= tau"),
    "entropy": Statistic("entropy", "h", False, "exit when the entropy / log(num_classes) <= h"),
    "margin": Statistic("margin", "m", True, "exit when the top-1 minus the top-2 probability >= m"),
    "stable_prediction": Statistic("stable_prediction", "k", True,
                                   "exit when the prediction has stayed the same for >= k consecutive steps",
                                   minimum=1),
}


def statistic_flops(statistic: str, num_classes: int) -> int:
    """FLOPs of one decision of ``statistic``'s threshold rule over ``num_classes`` = C logits, as
    :func:`head_statistics` computes it (one FLOP per add, multiply, divide, compare, exp or log)::

        softmax           = 5C - 2   # max (C - 1 compares), subtract C, exp C, sum C - 1, divide C
        confidence        = softmax + (C - 1)        # top-1: C - 1 compares
        entropy           = softmax + 3C             # log C, multiply C, sum C - 1, normalise 1
        margin            = softmax + (2C - 3) + 1   # top-2: 2C - 3 compares, one subtraction
        stable_prediction = (C - 1) + 2              # argmax, compare with the last one, count

    plus 1 for the comparison with the threshold. FlopCounterMode counts none of these (it counts
    matrix products and convolutions), hence the analytic count.
    """
    get_statistic(statistic)
    c = int(num_classes)
    if c < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    softmax = 5 * c - 2
    ops = {"confidence": softmax + (c - 1), "entropy": softmax + 3 * c, "margin": softmax + max(2 * c - 3, 0) + 1,
           "stable_prediction": (c - 1) + 2}
    return ops[statistic] + 1


def get_statistic(name: str) -> Statistic:
    """The :class:`Statistic` called ``name``; ``ValueError`` names the valid ones."""
    if name not in STATISTICS:
        raise ValueError(f"unknown statistic {name!r}; valid: {', '.join(STATISTICS)}")
    return STATISTICS[name]


def full_depth_order(num_layers: int, max_steps: int) -> tuple[int, ...]:
    """The full-depth order 1..K (1-based actions), cut at ``max_steps``."""
    return tuple(range(1, min(num_layers, max_steps) + 1))


@dataclass
class DepthRecord:
    """Every example of a split at every depth ``d = 0..D`` of ``order`` (depth d = the first d
    layers of the order applied). Arrays are ordered by example index in the split."""

    order: tuple[int, ...]                 # 1-based layer actions, D of them
    label: np.ndarray                      # [n]
    prediction: np.ndarray                 # [n, D + 1]
    flops: np.ndarray                      # [n, D + 1] float64: executed FLOPs of exiting at depth d
    iterations: np.ndarray                 # [n, D] FPI iterations of each step
    statistics: dict[str, np.ndarray]      # name -> [n, D + 1], see STATISTICS
    normalizer: float                      # charged cost of 1.0 normalised compute (in ``unit``)
    max_steps: int
    # The charged cost ``[n, D + 1]`` of exiting at depth d in ``unit``; None: the FLOPs (``flops``).
    cost: np.ndarray | None = None
    unit: str = FLOPS_UNIT
    cost_per_flop: float = 1.0             # a decision's FLOPs in ``unit`` (normalizer / FLOPs normaliser)

    @property
    def charged(self) -> np.ndarray:
        """``[n, D + 1]`` the charged cost of exiting at each depth, in ``unit`` (env only)."""
        return self.flops if self.cost is None else self.cost

    @property
    def n(self) -> int:
        """Number of examples recorded."""
        return int(self.label.shape[0])

    @property
    def depth(self) -> int:
        """D, the number of layers of the recorded order."""
        return len(self.order)

    @property
    def correct(self) -> np.ndarray:
        """``[n, D + 1]`` bool: the prediction at depth d is right."""
        return self.prediction == self.label[:, None]


def head_statistics(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Confidence, normalised entropy and margin ``[N]`` of logits ``[N, C]``; the baseline
    policies use this too, so a threshold means the same in a curve and in a policy."""
    probs = torch.softmax(logits, 1)
    num_classes = logits.shape[1]
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1) / math.log(max(num_classes, 2))
    top = probs.topk(min(2, num_classes), dim=1).values
    margin = top[:, 0] - top[:, 1] if num_classes > 1 else top[:, 0]
    return {"confidence": top[:, 0], "entropy": entropy, "margin": margin}


@torch.no_grad()
def _walk(model: Any, x: torch.Tensor, order: Sequence[int], costs: CostTable | None = None
          ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Apply ``order`` (1-based) to the whole batch ``x``; returns the logits at every depth
    (``D + 1`` tensors ``[N, C]``), the cumulative executed FLOPs ``[N, D + 1]`` (float64), the
    iterations ``[N, D]`` and the cumulative charged cost ``[N, D + 1]`` under ``costs`` (None when
    ``costs`` is the model's FLOPs). The only place this module charges, through the env's own
    :meth:`~dynalay_env.model.CostTable.reset_flops` and :meth:`~dynalay_env.model.CostTable.step_cost`."""
    flops_table = model.cost_table()
    charged_table = None if costs is None or costs.unit == flops_table.unit else costs
    x_emb = model.encode(x)
    z = x_emb
    spent = torch.full((x.shape[0],), flops_table.reset_flops(), dtype=torch.float64, device=x.device)
    logits, flops, iterations = [model.classify(z)], [spent], []
    charged: list[torch.Tensor] = []
    if charged_table is not None:
        charged.append(torch.full_like(spent, charged_table.reset_flops()))
    for action in order:
        result = model.apply_layer(action - 1, z, x_emb)
        z = result.state
        spent = spent + flops_table.step_flops(action - 1, result.flops)
        if charged_table is not None:
            charged.append(charged[-1] + charged_table.step_cost(action - 1, result))
        logits.append(model.classify(z))
        flops.append(spent)
        iterations.append(result.iterations.long())
    empty = torch.zeros((x.shape[0], 0), dtype=torch.long, device=x.device)
    return (logits, torch.stack(flops, 1), torch.stack(iterations, 1) if iterations else empty,
            torch.stack(charged, 1) if charged else None)


@torch.no_grad()
def record_depths(model: Any, x: torch.Tensor, y: torch.Tensor, max_steps: int, order: Sequence[int] | None = None,
                  batch_size: int = 4096, costs: CostTable | None = None) -> DepthRecord:
    """Run ``order`` (default :func:`full_depth_order`) once over ``x`` ``[n, ...]`` in batches of
    ``batch_size`` and record every depth (see :class:`DepthRecord`). Compute is charged from
    ``costs`` (a core's ``costs``, e.g. a latency table; default the model's FLOPs)."""
    order = tuple(int(a) for a in (order if order is not None else full_depth_order(model.num_layers, max_steps)))
    bad = [a for a in order if not 1 <= a <= model.num_layers]
    if bad or len(order) > max_steps:
        raise ValueError(f"order {order} must hold at most max_steps={max_steps} layers numbered 1..{model.num_layers}")
    was_training = model.training if hasattr(model, "training") else False
    if hasattr(model, "eval"):
        model.eval()
    parts: dict[str, list[np.ndarray]] = {"prediction": [], "flops": [], "iterations": [], "cost": [],
                                          "confidence": [], "entropy": [], "margin": []}
    for i in range(0, x.shape[0], batch_size):
        logits, flops, iterations, charged = _walk(model, x[i:i + batch_size], order, costs)
        if charged is not None:
            parts["cost"].append(charged.cpu().numpy())
        stats = [head_statistics(lg) for lg in logits]
        parts["prediction"].append(torch.stack([lg.argmax(1) for lg in logits], 1).cpu().numpy())
        parts["flops"].append(flops.cpu().numpy())
        parts["iterations"].append(iterations.cpu().numpy())
        for name in ("confidence", "entropy", "margin"):
            parts[name].append(torch.stack([s[name] for s in stats], 1).cpu().numpy())
    if was_training:
        model.train()
    joined = {k: np.concatenate(v) for k, v in parts.items() if v}
    prediction = joined["prediction"]
    # Run length of the current prediction: 0 at the start, +1 per step that keeps it.
    stable = np.zeros(prediction.shape, dtype=np.int64)
    for d in range(1, prediction.shape[1]):
        stable[:, d] = np.where(prediction[:, d] == prediction[:, d - 1], stable[:, d - 1] + 1, 0)
    flops_normalizer = float(model.cost_table().normalizer)
    charged_table = costs if costs is not None and "cost" in joined else None
    normalizer = float(charged_table.normalizer) if charged_table is not None else flops_normalizer
    return DepthRecord(order, y.cpu().numpy().astype(np.int64), prediction, joined["flops"], joined["iterations"],
                       {"confidence": joined["confidence"], "entropy": joined["entropy"], "margin": joined["margin"],
                        "stable_prediction": stable}, normalizer, int(max_steps),
                       cost=joined.get("cost"), unit=charged_table.unit if charged_table is not None else FLOPS_UNIT,
                       cost_per_flop=normalizer / flops_normalizer if charged_table is not None else 1.0)


def record_core(core: DynaLayCore, order: Sequence[int] | None = None) -> DepthRecord:
    """:func:`record_depths` on ``core``'s model and split, charged as ``core`` charges (``core.costs``)."""
    return record_depths(core.model, core.x, core.y, core.max_steps, order, costs=core.costs)


def _decision_counts(record: DepthRecord) -> np.ndarray:
    """``[D + 1]``: decisions an episode exiting at depth d has made: one per visited depth, except
    the forced exit at ``max_steps``, which is not a decision."""
    counts = np.arange(1, record.depth + 2, dtype=np.float64)
    if record.depth == record.max_steps:
        counts[-1] = record.depth
    return counts


def exit_flops(record: DepthRecord, decision_flops: float = 0.0) -> np.ndarray:
    """``[n, D + 1]``: FLOPs of exiting at each depth, with ``decision_flops`` per decision."""
    if decision_flops < 0:
        raise ValueError(f"decision_flops must be >= 0 (FLOPs per decision), got {decision_flops}")
    return record.flops + decision_flops * _decision_counts(record)[None, :]


def exit_cost(record: DepthRecord, decision_flops: float = 0.0) -> np.ndarray:
    """``[n, D + 1]``: the charged cost (``record.unit``) of exiting at each depth, with each of the
    ``decision_flops`` per decision at its share of the full-depth model. Under FLOPs, :func:`exit_flops`."""
    if record.cost is None:
        return exit_flops(record, decision_flops)
    if decision_flops < 0:
        raise ValueError(f"decision_flops must be >= 0 (FLOPs per decision), got {decision_flops}")
    return record.cost + decision_flops * record.cost_per_flop * _decision_counts(record)[None, :]


def exit_depths(record: DepthRecord, statistic: str, threshold: float) -> np.ndarray:
    """``[n]``: the depth each example exits at under ``statistic``'s rule with ``threshold``:
    the first depth whose statistic passes, else the end of the order."""
    stat = get_statistic(statistic)
    values = record.statistics[statistic][:, :record.depth]
    passes = values >= threshold if stat.higher else values <= threshold
    passes = np.concatenate([passes, np.ones((record.n, 1), dtype=bool)], 1)  # forced exit at depth D
    return passes.argmax(1)


@dataclass
class ExactCurve:
    """Accuracy and mean normalised compute of a threshold rule at every distinct threshold
    (arrays ``[m]``, compute non-decreasing). The last point never exits early (full order)."""

    statistic: str
    threshold: np.ndarray
    accuracy: np.ndarray
    mean_compute: np.ndarray
    decision_flops: float
    # What a bootstrap needs to refit the curve on re-weighted examples: each example's outcome
    # at the first point (correct, compute), and the events that move one example to a deeper
    # exit, sorted by the point from which they apply (event_point[e] = index of that point).
    _base_correct: np.ndarray
    _base_compute: np.ndarray
    _event_example: np.ndarray
    _event_correct: np.ndarray
    _event_compute: np.ndarray
    _event_point: np.ndarray

    @property
    def param(self) -> str:
        """The name of the rule's parameter (e.g. ``tau`` for confidence)."""
        return get_statistic(self.statistic).param

    def __len__(self) -> int:
        return int(self.threshold.shape[0])

    def hull(self) -> tuple[np.ndarray, np.ndarray]:
        """The upper hull's vertices (compute, accuracy), as :func:`agents.records.upper_hull`."""
        return upper_hull(self.mean_compute, self.accuracy)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: every threshold with its accuracy and mean compute, and the upper hull."""
        hc, ha = self.hull()
        return {"statistic": self.statistic, "rule": get_statistic(self.statistic).rule, "param": self.param,
                "decision_flops": self.decision_flops, "n_thresholds": len(self),
                "threshold": self.threshold.tolist(), "accuracy": self.accuracy.tolist(),
                "mean_compute": self.mean_compute.tolist(),
                "hull": {"mean_compute": hc.tolist(), "accuracy": ha.tolist()}}

    def weighted(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy ``[B, m]``, mean compute ``[B, m]``) of the curve with example weights
        ``[B, n]`` (a bootstrap resample's counts), normalised by the weights' sums."""
        total = weights.sum(1, keepdims=True)
        m = len(self)
        out = []
        for base, delta in ((self._base_correct, self._event_correct), (self._base_compute, self._event_compute)):
            moved = np.zeros((weights.shape[0], m))
            # Events are grouped by point; each group's weighted sum enters at its point.
            np.add.at(moved.T, self._event_point, (weights[:, self._event_example] * delta).T)
            out.append((weights @ base)[:, None] / total + np.cumsum(moved, 1) / total)
        return out[0], out[1]


def exact_curve(record: DepthRecord, statistic: str, decision_flops: float = 0.0) -> ExactCurve:
    """Sweep every distinct threshold of ``statistic`` analytically (module docstring).

    With the rule "exit at the first depth whose value passes", an example's exit depth changes only
    where the threshold crosses one of its *record* values (a value that beats every earlier depth's
    in the rule's direction); between two such values nothing changes. The sorted distinct record
    values over the split, plus one value that never passes, are therefore every distinct operating
    point; their accuracy and compute are cumulative sums of the per-event changes."""
    stat = get_statistic(statistic)
    n, depth = record.n, record.depth
    correct = record.correct.astype(np.float64)
    compute = exit_cost(record, decision_flops) / record.normalizer
    # Orient so that "passes" is always value >= threshold.
    values = record.statistics[statistic][:, :depth].astype(np.float64) * (1.0 if stat.higher else -1.0)
    best = np.maximum.accumulate(values, axis=1) if depth else values
    is_record = np.ones_like(values, dtype=bool)
    if depth > 1:
        is_record[:, 1:] = values[:, 1:] > best[:, :-1]
    # The next depth an example exits at once the threshold rises above its record at depth d.
    next_exit = np.full((n, depth + 1), depth, dtype=np.int64)
    for d in range(depth - 1, 0, -1):
        next_exit[:, d - 1] = np.where(is_record[:, d], d, next_exit[:, d])
    rows, cols = np.nonzero(is_record)
    event_value = values[rows, cols]
    after = next_exit[rows, cols]
    order = np.argsort(event_value, kind="stable")
    rows, cols, after, event_value = rows[order], cols[order], after[order], event_value[order]
    unique, event_group = np.unique(event_value, return_inverse=True)
    # Point j (threshold unique[j]) applies the events of smaller values: groups 0..j-1.
    # One value past the largest, in the statistic's own dtype: a policy compares its float32
    # statistic with the threshold cast to float32, where a float64 step would vanish.
    dtype = record.statistics[statistic].dtype
    if not unique.size:
        beyond = 1.0
    elif np.issubdtype(dtype, np.integer):
        beyond = float(unique[-1] + 1)
    else:
        beyond = float(np.nextafter(dtype.type(unique[-1]), dtype.type(np.inf)))
    thresholds = np.concatenate([unique, [beyond]])
    event_point = event_group + 1
    delta_correct = correct[rows, after] - correct[rows, cols]
    delta_compute = compute[rows, after] - compute[rows, cols]
    base_correct, base_compute = correct[:, 0].copy(), compute[:, 0].copy()
    if stat.minimum is not None:  # e.g. k = 0 (exit at once) is no stable-prediction rule
        dropped = int(np.searchsorted(thresholds, stat.minimum))
        folded = event_point <= dropped  # events already applied at the first kept point
        np.add.at(base_correct, rows[folded], delta_correct[folded])
        np.add.at(base_compute, rows[folded], delta_compute[folded])
        keep = ~folded
        thresholds, rows, event_point = thresholds[dropped:], rows[keep], event_point[keep] - dropped
        delta_correct, delta_compute = delta_correct[keep], delta_compute[keep]
    m = thresholds.size
    accuracy = (base_correct.sum() + np.concatenate([[0.0], np.cumsum(np.bincount(
        event_point, delta_correct, minlength=m)[1:])])) / n
    mean_compute = (base_compute.sum() + np.concatenate([[0.0], np.cumsum(np.bincount(
        event_point, delta_compute, minlength=m)[1:])])) / n
    return ExactCurve(statistic, thresholds * (1.0 if stat.higher else -1.0), accuracy, mean_compute,
                      float(decision_flops), base_correct, base_compute, rows, delta_correct, delta_compute,
                      event_point)


def choose_threshold(curve: ExactCurve, target_accuracy: float) -> float:
    """The threshold of the cheapest point reaching ``target_accuracy`` (chosen on ``val``); if
    none does, the most accurate point's (the cheaper one on ties)."""
    reaching = np.flatnonzero(curve.accuracy >= target_accuracy)
    if reaching.size:
        best = reaching[np.argmin(curve.mean_compute[reaching])]
    else:
        best = np.lexsort((curve.mean_compute, -curve.accuracy))[0]
    value = curve.threshold[best]
    return int(value) if curve.statistic == "stable_prediction" else float(value)


def records_at_exits(record: DepthRecord, exits: np.ndarray, name: str, params: dict[str, Any],
                     decision_flops: float = 0.0) -> EpisodeRecords:
    """Per-example records of the episodes that exit at depths ``exits`` ``[n]``, as
    :func:`agents.evaluate.run_policy` would record them."""
    idx = np.arange(record.n)
    flops = exit_flops(record, decision_flops)[idx, exits]
    cost = None if record.cost is None else exit_cost(record, decision_flops)[idx, exits]
    steps = np.arange(record.max_steps)[None, :]
    order = np.asarray(list(record.order) + [0] * (record.max_steps - record.depth), dtype=np.int64)
    iterations = np.zeros((record.n, record.max_steps), np.int64)
    iterations[:, :record.depth] = record.iterations
    taken = steps < exits[:, None]
    prediction = record.prediction[idx, exits]
    return EpisodeRecords(name, params, idx, record.label.copy(), prediction, prediction == record.label,
                          (flops if cost is None else cost) / record.normalizer, flops, exits.astype(np.int64),
                          np.where(taken, order[None, :], -1), np.where(taken, iterations, 0),
                          decisions=_decision_counts(record)[exits].astype(np.int64),
                          decision_flops=float(decision_flops), normalizer=record.normalizer,
                          cost=cost, unit=record.unit, cost_per_flop=record.cost_per_flop)


def records_at_threshold(record: DepthRecord, statistic: str, threshold: float,
                         decision_flops: float = 0.0) -> EpisodeRecords:
    """Per-example records of ``statistic``'s rule at ``threshold`` (e.g. the one chosen on val)."""
    exits = exit_depths(record, statistic, threshold)
    return records_at_exits(record, exits, statistic, {get_statistic(statistic).param: threshold}, decision_flops)


def prefix_oracle(record: DepthRecord, decision_flops: float = 0.0) -> EpisodeRecords:
    """Each example exits at the cheapest depth of the order whose prediction is right (FLOPs grow
    with depth, so that is the first), or at once where no prefix is right; the bound for every
    exit-only policy along this order. ``extra["solvable"]`` marks the examples some prefix gets right.

    The rule is :func:`dynalay_env.paths.cheapest_correct`, which the pre-training report's
    prefix oracle (:func:`dynalay_env.paths.oracle_episode_compute` with ``prefix_only``) applies
    too, so both give the same examples and compute; this one reads the recorded pass and returns
    full episode records, with ``decision_flops`` per decision when charged (the exit depth is
    chosen on the env FLOPs; decisions grow with depth too, so it stays the cheapest)."""
    solvable, exits = cheapest_correct(torch.from_numpy(record.correct.T), torch.from_numpy(record.charged.T))
    solvable, exits = solvable.numpy(), exits.numpy()
    result = records_at_exits(record, exits, "prefix_oracle", {"order": list(record.order)}, decision_flops)
    result.extra["solvable"] = solvable
    return result


def hull_at(compute: np.ndarray, accuracy: np.ndarray, at: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Value at ``at`` ``[B]`` of the upper hull of each row's points (``[B, m]``), as
    :func:`agents.records.hull_accuracy_at` defines it: concave, non-decreasing, flat beyond the
    ends. Uses the dual form ``min over slope s >= 0 of max_j (a_j + s (at - c_j))`` and bisects on
    the slope (the subgradient is ``at - c_j*``), vectorised over rows."""
    low = compute.min(1)
    at = np.maximum(at, low)
    sorted_c = np.sort(compute, 1)
    gaps = np.diff(sorted_c, axis=1)
    gaps = np.where(gaps > 0, gaps, np.inf)
    min_gap = gaps.min(1) if gaps.shape[1] else np.full(compute.shape[0], np.inf)
    span = accuracy.max(1) - accuracy.min(1)
    lo = np.zeros(compute.shape[0])
    hi = np.where(np.isfinite(min_gap), span / np.where(np.isfinite(min_gap), min_gap, 1.0), 0.0) + 1.0
    rows = np.arange(compute.shape[0])

    def value(slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = accuracy - slope[:, None] * compute
        j = scores.argmax(1)
        return scores[rows, j] + slope * at, compute[rows, j]

    for _ in range(iterations):
        mid = (lo + hi) / 2
        _, chosen_c = value(mid)
        # The subgradient at mid is at - c_j*: positive means a smaller slope lowers the value.
        right = chosen_c > at
        lo = np.where(right, mid, lo)
        hi = np.where(right, hi, mid)
    return np.minimum(value(lo)[0], value(hi)[0])


def vs_curve(agent: EpisodeRecords, curve: ExactCurve, n_boot: int = 1000, seed: int = 0,
             chunk: int = 100, level: float | None = None) -> dict[str, Any]:
    """Agent accuracy minus the exact hull of ``curve`` at the agent's mean compute, with a 95 %
    paired bootstrap interval over examples (each resample refits the whole curve and its hull on
    the same resampled examples as the agent). ``agent`` and ``curve`` must cover the same split,
    in example order; the hull is fitted on that split, which favours the threshold rule.

    ``level`` (e.g. ``1 - 0.05 / 3`` for a Bonferroni correction over three comparisons) adds the
    interval at that confidence from the same resamples, as ``ci`` with ``level``."""
    if level is not None and not 0.0 < level < 1.0:
        raise ValueError(f"level must be a confidence in (0, 1), e.g. 0.95, got {level!r}")
    n = agent.correct.shape[0]
    if curve._base_correct.shape[0] != n or not np.array_equal(agent.example, np.arange(n)):
        raise ValueError(f"the agent's records ({n} examples) and the curve ({curve._base_correct.shape[0]}) "
                         "must cover the same split in example order")
    point = float(agent.accuracy - hull_accuracy_at(curve.mean_compute, curve.accuracy, agent.mean_compute))
    rng = np.random.default_rng(seed)
    # The same resamples as agents.evaluate.vs_threshold draws, as example counts.
    weights = np.zeros((n_boot, n))
    for b in range(n_boot):
        weights[b] = np.bincount(rng.integers(0, n, n), minlength=n)
    boots = [np.zeros(0)]
    for start in range(0, n_boot, chunk):
        w = weights[start:start + chunk]
        acc, comp = curve.weighted(w)
        agent_acc = w @ agent.correct.astype(np.float64) / n
        agent_c = w @ agent.compute / n
        boots.append(agent_acc - hull_at(comp, acc, agent_c))
    boots_all = np.concatenate(boots)
    low, high = np.percentile(boots_all, [2.5, 97.5]) if n_boot else (float("nan"), float("nan"))
    corrected: dict[str, Any] = {}
    if level is not None:
        tail = 50.0 * (1.0 - level)
        c_low, c_high = np.percentile(boots_all, [tail, 100.0 - tail]) if n_boot else (float("nan"),) * 2
        corrected = {"level": level, "ci": [float(c_low), float(c_high)], "beats_threshold_at_level": bool(c_low > 0)}
    return {**corrected, "difference": point, "ci95": [float(low), float(high)], "n_bootstrap": n_boot,
            "agent_mean_compute": agent.mean_compute, "beats_threshold": bool(low > 0),
            "curve": curve.statistic, "n_thresholds": len(curve),
            "hull_fitted_on": "the compared split itself (this favours the threshold rule)"}


__all__ = ["STATISTICS", "statistic_flops", "head_statistics", "DepthRecord", "ExactCurve", "record_depths", "record_core", "exact_curve", "exit_depths",
           "exit_flops", "exit_cost", "choose_threshold", "records_at_threshold", "records_at_exits", "prefix_oracle", "vs_curve",
           "full_depth_order"]
