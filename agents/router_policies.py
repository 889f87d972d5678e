"""The router of an expert model (:mod:`dynalay_env.experts`) as two baseline policies.

* :class:`RouterPolicy` (``router``) -- follow the router's top-1 layer for ``steps`` steps, then EXIT;
* :class:`RouterConfidencePolicy` (``router_confidence``) -- the router picks the layer, the
  confidence rule decides when to stop: EXIT once the head's top-1 probability is ``>= tau``.

Both read the bound core's current states (``core.z``) and charge their own FLOPs per decision:
the router's forward FLOPs (:meth:`dynalay_env.model.Router.flops`), plus the confidence statistic
(:func:`agents.curves.statistic_flops`) for ``router_confidence``. :func:`record_router` records
one pass along the router's choices as a :class:`agents.curves.DepthRecord`, so
:func:`agents.curves.exact_curve` sweeps ``router_confidence`` over every distinct confidence value
(:func:`router_confidence_curve`), and a policy played with one of those thresholds lands on its
curve point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.baselines import BaselinePolicy
from agents.curves import (
    DepthRecord,
    ExactCurve,
    choose_threshold,
    exact_curve,
    exit_depths,
    head_statistics,
    records_at_exits,
    statistic_flops,
)
from dynalay_env.core import DynaLayCore
from dynalay_env.experts import run_router
from dynalay_env.model import ExpertModel


def router_of(model: Any) -> ExpertModel:
    """``model`` if it carries a router (an :class:`~dynalay_env.model.ExpertModel`); else a
    ``ValueError`` that says which models do."""
    if not isinstance(model, ExpertModel):
        raise ValueError(f"router policies need an expert model with its router (dynalay_env.model.ExpertModel, "
                         f"e.g. the default model of DynaLay-MNIST5k-Experts-v0), got {type(model).__name__}")
    return model


def router_decision_flops(model: Any, confidence: bool) -> int:
    """FLOPs of one decision: the router's forward pass, plus the confidence statistic when
    ``confidence`` (the rule of ``router_confidence``)."""
    flops = router_of(model).router.flops()
    return flops + (statistic_flops("confidence", model.num_classes) if confidence else 0)


class _RouterBased(BaselinePolicy):
    """A baseline that reads the router of the bound core's expert model."""

    def bind(self, core: DynaLayCore) -> _RouterBased:
        """Attach to ``core``; ``ValueError`` unless its model carries a router."""
        router_of(core.model)
        return super().bind(core)  # type: ignore[return-value]


class RouterPolicy(_RouterBased):
    """Follow the router's top-1 layer for ``steps`` steps (at most the env's ``max_steps``), then EXIT."""

    name = "router"

    def __init__(self, steps: int) -> None:
        super().__init__()
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.steps = int(steps)

    def params(self) -> dict[str, Any]:
        """``{"steps": ...}``, the router steps before EXIT."""
        return {"steps": self.steps}

    def decision_flops(self) -> int:
        """The router's forward FLOPs, charged at every decision."""
        return router_decision_flops(self._core().model, confidence=False)

    def actions(self, core: DynaLayCore, episode_start: np.ndarray) -> np.ndarray:
        """The router's layer (1-based) for slots with fewer than ``steps`` steps, else EXIT: ``[N]`` int."""
        layer = router_of(core.model).route(core.z) + 1
        return torch.where(core.steps >= self.steps, torch.zeros_like(layer), layer).cpu().numpy()


class RouterConfidencePolicy(_RouterBased):
    """The router picks the layer; EXIT once the head's top-1 probability is ``>= tau``."""

    name = "router_confidence"
    statistic = "confidence"

    def __init__(self, tau: float) -> None:
        super().__init__()
        self.tau = float(tau)

    def params(self) -> dict[str, Any]:
        """``{"tau": ...}``, the confidence threshold."""
        return {"tau": self.tau}

    def decision_flops(self) -> int:
        """The router's forward FLOPs plus the confidence statistic, charged at every decision."""
        return router_decision_flops(self._core().model, confidence=True)

    def actions(self, core: DynaLayCore, episode_start: np.ndarray) -> np.ndarray:
        """EXIT where the confidence passes ``tau``, else the router's layer (1-based): ``[N]`` int."""
        confident = head_statistics(core.logits)["confidence"] >= self.tau
        layer = router_of(core.model).route(core.z) + 1
        return torch.where(confident, torch.zeros_like(layer), layer).cpu().numpy()


def record_router(model: Any, x: torch.Tensor, y: torch.Tensor, max_steps: int,
                  batch_size: int = 4096) -> tuple[DepthRecord, np.ndarray]:
    """One pass along the router's choices for ``max_steps`` steps over ``x`` ``[n, ...]``: the
    :class:`~agents.curves.DepthRecord` of every depth (its ``order`` holds zeros: the layer is
    chosen per example) and the chosen layers ``[n, max_steps]`` (1-based actions)."""
    model = router_of(model)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("prediction", "flops", "iterations", "layers", "confidence",
                                                          "entropy", "margin")}
    for i in range(0, x.shape[0], batch_size):
        run = run_router(model, x[i:i + batch_size], max_steps)
        stats = [head_statistics(lg) for lg in run.logits]
        parts["prediction"].append(run.logits.argmax(2).T.cpu().numpy())
        parts["flops"].append(run.flops.T.cpu().numpy())
        parts["iterations"].append(run.iterations.T.cpu().numpy())
        parts["layers"].append((run.choices.T + 1).cpu().numpy())
        for name in ("confidence", "entropy", "margin"):
            parts[name].append(torch.stack([s[name] for s in stats], 1).cpu().numpy())
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    prediction = joined["prediction"]
    stable = np.zeros(prediction.shape, dtype=np.int64)
    for d in range(1, prediction.shape[1]):
        stable[:, d] = np.where(prediction[:, d] == prediction[:, d - 1], stable[:, d - 1] + 1, 0)
    record = DepthRecord((0,) * max_steps, y.cpu().numpy().astype(np.int64), prediction, joined["flops"],
                         joined["iterations"], {"confidence": joined["confidence"], "entropy": joined["entropy"],
                                                "margin": joined["margin"], "stable_prediction": stable},
                         float(model.cost_table().normalizer), int(max_steps))
    return record, joined["layers"]


def record_router_core(core: DynaLayCore) -> tuple[DepthRecord, np.ndarray]:
    """:func:`record_router` on ``core``'s model, split and ``max_steps``."""
    return record_router(core.model, core.x, core.y, core.max_steps)


def router_confidence_curve(record: DepthRecord, model: Any) -> ExactCurve:
    """``router_confidence``'s exact curve over every distinct confidence value of a
    :func:`record_router` record, each decision charged :func:`router_decision_flops`."""
    return exact_curve(record, "confidence", router_decision_flops(model, confidence=True))


def router_steps_accuracy(record: DepthRecord, model: Any) -> dict[int, tuple[float, float]]:
    """``router``'s (accuracy, mean normalised compute with decisions charged) for every number of
    steps ``0..max_steps`` of a :func:`record_router` record."""
    flops = router_decision_flops(model, confidence=False)
    out = {}
    for steps in range(record.depth + 1):
        decisions = steps + 1 if steps < record.max_steps else steps
        compute = (record.flops[:, steps] + decisions * flops) / record.normalizer
        out[steps] = (float(record.correct[:, steps].mean()), float(compute.mean()))
    return out


def router_records(record: DepthRecord, layers: np.ndarray, exits: np.ndarray, name: str, params: dict[str, Any],
                   decision_flops: float) -> Any:
    """Per-example :class:`~agents.evaluate.EpisodeRecords` of exiting at depths ``exits`` ``[n]`` of a
    :func:`record_router` record, with the router's layers ``[n, max_steps]`` as the paths."""
    records = records_at_exits(record, exits, name, params, decision_flops)
    taken = np.arange(record.max_steps)[None, :] < exits[:, None]
    records.path = np.where(taken, layers, -1)
    return records


def router_baselines(core: DynaLayCore, val_core: DynaLayCore) -> tuple[dict[str, ExactCurve], list[Any]]:
    """Both router baselines on ``core``'s split, chosen on ``val_core``'s (as the threshold
    baselines are): ``router_confidence``'s exact curve on the split, and the records of ``router``
    (the steps most accurate on val, the fewest on ties) and of ``router_confidence`` (the cheapest
    threshold on val reaching ``router``'s val accuracy, else the most accurate). Empty for a model
    without a router, so reports can always call it. Empty too under ``cost="latency"``: the router's
    records are charged in FLOPs only, and a comparison in mixed units would mislead."""
    if not isinstance(core.model, ExpertModel) or core.costs is not core.flops_table:
        return {}, []
    model = core.model
    record, layers = record_router_core(core)
    val_record, _ = record_router_core(val_core)
    val_steps = router_steps_accuracy(val_record, model)
    steps = max(range(record.depth + 1), key=lambda s: (val_steps[s][0], -s))
    router_flops = router_decision_flops(model, confidence=False)
    routed = router_records(record, layers, np.full(record.n, steps), "router", {"steps": steps}, router_flops)
    curve = router_confidence_curve(record, model)
    tau = choose_threshold(router_confidence_curve(val_record, model), val_steps[steps][0])
    chosen = router_records(record, layers, exit_depths(record, "confidence", tau), "router_confidence",
                            {"tau": tau}, curve.decision_flops)
    return {"router_confidence": curve}, [routed, chosen]


__all__ = ["RouterPolicy", "RouterConfidencePolicy", "record_router", "record_router_core", "router_baselines",
           "router_confidence_curve", "router_decision_flops", "router_of", "router_records", "router_steps_accuracy"]
