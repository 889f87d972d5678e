"""The outcome of one pass of a policy over a split (:class:`EpisodeRecords`) and the upper hull of
a family of operating points (:func:`upper_hull`, :func:`hull_accuracy_at`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynalay_env.model import CostTable

#: The unit of the FLOPs cost.
FLOPS_UNIT = CostTable.unit


def charged_per_flop(core: Any) -> float:
    """A decision's FLOPs in the unit ``core`` charges: ``core.normalizer / core.flops_normalizer``,
    so a decision costs the same share of the full-depth model under either cost (exactly 1.0
    under ``cost="flops"``)."""
    return float(core.normalizer) / float(core.flops_normalizer)


@dataclass
class EpisodeRecords:
    """Per-example outcome of one pass (arrays ``[n]``, ordered by example index in the split)."""

    policy: str
    params: dict[str, Any]
    example: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    correct: np.ndarray
    compute: np.ndarray          # normalised
    flops: np.ndarray
    steps: np.ndarray
    path: np.ndarray             # [n, max_steps], 1-based actions, -1 padded
    fpi_iterations: np.ndarray   # [n, max_steps]
    extra: dict[str, Any] = field(default_factory=dict)
    # Decision cost: ``flops`` and ``compute`` include ``decisions * decision_flops``; the env-only
    # figures subtract it (``normalizer``: the charged cost of 1.0 compute).
    decisions: np.ndarray | None = None   # [n] policy calls per episode (EXIT included, forced exit not)
    decision_flops: float = 0.0
    normalizer: float | None = None
    # The charged cost in ``unit`` ([n], decisions included; ``compute = cost / normalizer``). None:
    # the env charges FLOPs, and the cost is ``flops``. ``cost_per_flop``: a decision's FLOPs
    # converted to ``unit`` (the same share of the full-depth model; 1.0 under FLOPs).
    cost: np.ndarray | None = None
    unit: str = FLOPS_UNIT
    cost_per_flop: float = 1.0

    @property
    def accuracy(self) -> float:
        """Share of the episodes answered right."""
        return float(self.correct.mean())

    @property
    def mean_compute(self) -> float:
        """Mean normalised compute, decisions counted."""
        return float(self.compute.mean())

    @property
    def charged(self) -> np.ndarray:
        """``[n]`` the charged cost in ``unit``, decisions included (``flops`` under FLOPs)."""
        return self.flops if self.cost is None else self.cost

    @property
    def env_cost(self) -> np.ndarray:
        """``[n]`` the charged cost of the env alone, in ``unit``."""
        if self.decisions is None or not self.decision_flops:
            return self.charged
        return self.charged - self.decisions * (self.decision_flops * self.cost_per_flop)

    @property
    def env_flops(self) -> np.ndarray:
        """``[n]`` FLOPs of the env alone (the main model), without the policy's decisions."""
        if self.decisions is None or not self.decision_flops:
            return self.flops
        return self.flops - self.decisions * self.decision_flops

    @property
    def env_compute(self) -> np.ndarray:
        """``[n]`` normalised compute of the env alone."""
        if self.decisions is None or not self.decision_flops:
            return self.compute
        return self.env_cost / self.normalizer

    def summary(self) -> dict[str, Any]:
        """The policy's figures for a report: accuracy, mean compute (with and without decisions), steps."""
        return {"name": self.policy, "params": self.params, "accuracy": self.accuracy,
                "mean_compute": self.mean_compute, "mean_env_compute": float(self.env_compute.mean()),
                "decision_flops": self.decision_flops, "mean_steps": float(self.steps.mean())}


def upper_hull(compute: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper concave envelope of (compute, accuracy) points, sorted by compute. Mixing two
    operating points at random reaches any point on the segment between them, so the hull is what
    a threshold family can really achieve."""
    order = np.lexsort((-accuracy, compute))
    pts: list[tuple[float, float]] = []
    for c, a in zip(compute[order], accuracy[order], strict=True):
        if pts and c == pts[-1][0]:
            continue
        while len(pts) >= 2:
            (c1, a1), (c2, a2) = pts[-2], pts[-1]
            if (a2 - a1) * (c - c1) <= (a - a1) * (c2 - c1):  # middle point is below the chord
                pts.pop()
            else:
                break
        pts.append((float(c), float(a)))
    # Keep only the rising part: beyond the best accuracy, more compute buys nothing.
    best = int(np.argmax([p[1] for p in pts]))
    pts = pts[: best + 1]
    hc, ha = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    return hc, ha


def hull_accuracy_at(compute: np.ndarray, accuracy: np.ndarray, at: float) -> float:
    """Accuracy of the curve's upper hull at ``at`` compute (flat beyond its ends)."""
    hc, ha = upper_hull(compute, accuracy)
    return float(np.interp(at, hc, ha))


__all__ = ["EpisodeRecords", "hull_accuracy_at", "upper_hull"]
