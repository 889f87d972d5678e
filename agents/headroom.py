"""How much a selection policy could gain on a main model: the routing and exit headroom, and how well
introspection tells a right answer from a wrong one.

* **Routing headroom** -- the path oracle (some path of at most ``max_steps`` layers is right) minus
  the prefix oracle along the best fixed order of the layers
  (:func:`dynalay_env.paths.routing_headroom`): what choosing *which* layer runs can add.
* **Exit headroom** -- that best order's prefix oracle minus the exact confidence hull along the
  same order, at the prefix oracle's compute (the confidence statistic charged per decision): what
  choosing *when* to stop can add over the confidence rule.
* **AUROC table** -- :func:`agents.introspection_features.auroc_table`, fitted on ``agent_train``,
  scored on ``val``: whether the observation predicts that the current answer is right, beyond the
  top-1 probability.

Shares are of the examples of the split (``test`` by default); compute is normalised (1.0 = full
depth) and counts executed FLOPs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.curves import exact_curve, record_depths, statistic_flops
from agents.introspection_features import auroc_table, collect_states
from agents.records import hull_accuracy_at
from dynalay_env.datasets import Dataset
from dynalay_env.model import FPIModel
from dynalay_env.paths import enumerate_paths, routing_headroom

__all__ = ["confidence_along", "exit_headroom", "introspection_auroc", "selection_headroom"]


def introspection_auroc(model: FPIModel, dataset: Dataset, max_steps: int = 4) -> dict[str, Any]:
    """The AUROC table (:func:`agents.introspection_features.auroc_table`, logistic regression) of
    ``model``'s states along the full-depth order: fitted on ``agent_train``, scored on ``val``."""
    return auroc_table(collect_states(model, dataset, "agent_train", max_steps=max_steps),
                       collect_states(model, dataset, "val", max_steps=max_steps), classifiers=("logistic",))


def confidence_along(model: FPIModel, dataset: Dataset, order: tuple[int, ...], max_steps: int,
                     split: str = "test") -> tuple[Any, Any]:
    """(the :class:`~agents.curves.DepthRecord` of one pass along ``order`` over ``split``, the
    confidence rule's exact curve on it, the statistic charged per decision)."""
    x, y = dataset.as_tensors(split)
    record = record_depths(model, x, y, max_steps, order)
    return record, exact_curve(record, "confidence", statistic_flops("confidence", model.num_classes))


def exit_headroom(model: FPIModel, dataset: Dataset, order: tuple[int, ...], max_steps: int,
                  split: str = "test") -> dict[str, Any]:
    """The prefix oracle along ``order`` (1-based layers) against the confidence hull along it.

    Returns ``{"order", "prefix_oracle_accuracy", "prefix_oracle_mean_compute",
    "confidence_hull_at_that_compute", "exit_headroom", "confidence_full_order_accuracy",
    "decisions_charged"}`` (accuracies as shares of ``split``, compute normalised)."""
    record, curve = confidence_along(model, dataset, order, max_steps, split)
    solvable = record.correct.any(1)
    first = np.where(solvable, record.correct.argmax(1), 0)
    prefix_compute = float(np.mean(record.flops[np.arange(record.n), first] / record.normalizer))
    prefix_accuracy = float(solvable.mean())
    hull = hull_accuracy_at(curve.mean_compute, curve.accuracy, prefix_compute)
    return {"order": list(order), "prefix_oracle_accuracy": prefix_accuracy,
            "prefix_oracle_mean_compute": prefix_compute, "confidence_hull_at_that_compute": hull,
            "exit_headroom": prefix_accuracy - hull, "confidence_full_order_accuracy": float(curve.accuracy[-1]),
            "decisions_charged": "the confidence statistic per decision"}


def selection_headroom(model: FPIModel, dataset: Dataset, max_steps: int = 4, split: str = "test",
                       auroc: bool = True) -> dict[str, Any]:
    """Routing headroom, exit headroom along the best fixed order, and (``auroc``) the AUROC table,
    of ``model`` on ``dataset`` (see the module docstring).

    Returns ``{"split", "max_steps", "routing": {...}, "exit_headroom": {...}, "auroc": {...} | None}``."""
    x, y = dataset.as_tensors(split)
    table = enumerate_paths(model, x, y, max_steps)
    routing = routing_headroom(table, model.num_layers, max_steps)
    order = tuple(int(a) for a in routing["best_fixed_order"].split("-"))
    table_auroc = introspection_auroc(model, dataset, max_steps) if auroc else None
    return {"split": split, "max_steps": max_steps, "routing": routing,
            "exit_headroom": exit_headroom(model, dataset, order, max_steps, split), "auroc": table_auroc}
