"""What the agent sees: the observation's layout (feature names, bounds, meanings, one column range
per group) and the ``history`` group's features. :class:`~dynalay_env.core.DynaLayCore` fills the
observation from its state with them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: The ``history`` group's features, in order (see :func:`history_features`).
HISTORY_FEATURES: tuple[str, ...] = ("has_history", "prediction_agrees", "prediction_run", "js_divergence",
                                     "previous_top1_prob", "state_change", "state_cosine", "contraction")


@dataclass(frozen=True)
class ObservationLayout:
    """The observation vector of a set of groups: ``names`` of its features in order, their
    ``low``/``high`` bounds (float32 ``[obs_dim]``), what each feature (or pattern such as
    ``prob_c``) means, and the columns ``group_slices[g]`` each enabled group holds."""

    names: list[str]
    low: np.ndarray
    high: np.ndarray
    descriptions: dict[str, str]
    group_slices: dict[str, slice]


def observation_layout(groups: Sequence[str], hidden_dim: int, num_classes: int, num_actions: int,
                       max_compute: float) -> ObservationLayout:
    """The layout of the observation made of ``groups`` (in observation order) for a model whose
    introspection has ``hidden_dim`` features, ``num_classes`` classes and ``num_actions`` actions;
    ``max_compute`` bounds the normalised compute an episode can reach (the ``compute`` feature's
    upper bound is it plus 1 %, rounded up to 0.01)."""
    names: list[str] = []
    low: list[float] = []
    high: list[float] = []

    def add(feature_names: list[str], lo: float, hi: float) -> None:
        names.extend(feature_names)
        low.extend([lo] * len(feature_names))
        high.extend([hi] * len(feature_names))

    descriptions: dict[str, str] = {}
    starts: dict[str, int] = {}

    def group_starts(group: str) -> None:
        starts[group] = len(names)  # the group's features are added right after this call

    if "hidden" in groups:
        group_starts("hidden")
        add([f"hidden_{i}" for i in range(hidden_dim)], -np.inf, np.inf)
        descriptions["hidden_*"] = ("the model's introspection of the current state (conv: per-channel "
                                    "mean then max over space; mlp: the state)")
    if "head" in groups:
        group_starts("head")
        add([f"prob_{c}" for c in range(num_classes)], 0.0, 1.0)
        add(["top1_prob", "margin", "entropy"], 0.0, 1.0)
        descriptions["prob_c"] = "the head's softmax probability of class c at the current state"
        descriptions["top1_prob"] = "largest class probability"
        descriptions["margin"] = "top-1 minus top-2 probability"
        descriptions["entropy"] = "entropy of the head's distribution / log(num_classes), in [0, 1]"
    if "progress" in groups:
        group_starts("progress")
        add(["step_fraction"], 0.0, 1.0)
        add(["compute"], 0.0, math.ceil(max_compute * 1.01 * 100) / 100)
        descriptions["step_fraction"] = "layers applied so far / max_steps"
        descriptions["compute"] = "normalised compute spent so far (1.0 = full-depth model)"
    if "last_action" in groups:
        group_starts("last_action")
        add([f"last_action_{a}" for a in range(num_actions)], 0.0, 1.0)
        descriptions["last_action_a"] = "one-hot of the previous action (all zero at the first step)"
    if "solver" in groups:
        group_starts("solver")
        add(["last_residual", "last_iterations"], 0.0, 1.0)
        descriptions["last_residual"] = "final relative residual of the last FPI solve, clipped to [0, 1]"
        descriptions["last_iterations"] = "iterations of the last FPI solve / that layer's max_iter"
    if "history" in groups:
        group_starts("history")
        # Previous state = the state before the last applied layer; all 0 until a layer is applied.
        for feature in HISTORY_FEATURES:
            add([feature], -1.0 if feature == "state_cosine" else 0.0, 1.0)
        descriptions["has_history"] = "1 once a layer has been applied (the history features below are set), else 0"
        descriptions["prediction_agrees"] = "1 if the head's prediction equals the previous state's"
        descriptions["prediction_run"] = ("consecutive layer steps that kept the prediction unchanged "
                                          "(0 after a change) / max_steps")
        descriptions["js_divergence"] = ("Jensen-Shannon divergence between the previous and the current "
                                         "head distributions / log 2, in [0, 1]")
        descriptions["previous_top1_prob"] = "largest class probability at the previous state"
        descriptions["state_change"] = "||z_t - z_{t-1}|| / ||z_t|| of consecutive states, clipped to 1"
        descriptions["state_cosine"] = "cosine similarity of consecutive states, in [-1, 1]"
        descriptions["contraction"] = ("final / first relative residual of the last FPI solve (the contraction "
                                       "it observed), clipped to [0, 1]")
    if "router" in groups:
        group_starts("router")
        add([f"router_prob_{a}" for a in range(1, num_actions)], 0.0, 1.0)
        descriptions["router_prob_a"] = ("the router's probability of layer action a at the current state (expert "
                                         "models only; its FLOPs are charged at every visited state, as the head's)")
    ends = [*list(starts.values())[1:], len(names)]
    slices = {g: slice(start, end) for (g, start), end in zip(starts.items(), ends, strict=True)}
    return ObservationLayout(names, np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32),
                             descriptions, slices)


def history_features(z_before: Tensor, z_after: Tensor, logits_before: Tensor, logits_after: Tensor,
                     previous_run: Tensor, max_steps: int, residual: Tensor, first_residual: Tensor) -> Tensor:
    """The ``history`` features ``[m, len(HISTORY_FEATURES)]`` (unclipped) of m states that moved from
    ``z_before`` to ``z_after`` (``[m, *state_shape]``) while the head's logits moved from
    ``logits_before`` to ``logits_after`` (``[m, C]``), in one batched computation on the device (no
    host synchronisation). ``previous_run`` ``[m]``: the ``prediction_run`` feature before the move;
    ``residual`` / ``first_residual`` ``[m]``: the final and first relative residuals of the solve."""
    log_p, log_q = torch.log_softmax(logits_before, 1), torch.log_softmax(logits_after, 1)
    p, q = torch.softmax(logits_before, 1), log_q.exp()
    agrees = (logits_before.argmax(1) == logits_after.argmax(1)).float()
    # The run is stored divided by max_steps; round back to the count before adding this step.
    run = (torch.round(previous_run * max_steps) + 1) * agrees / max_steps
    # JS(p, q) = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2, in nats; / log 2 puts it in [0, 1].
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    js = ((p * (log_p - log_m)).sum(1) + (q * (log_q - log_m)).sum(1)) / (2 * math.log(2))
    before, after = z_before.flatten(1), z_after.flatten(1)
    change = (after - before).norm(dim=1) / after.norm(dim=1).clamp_min(1e-12)
    cosine = torch.nn.functional.cosine_similarity(after, before, dim=1, eps=1e-12)
    # 0 where the first residual is 0 (the solve started at its fixed point) or unknown.
    contraction = torch.where(first_residual > 0, residual / first_residual.clamp_min(1e-30), 0.0)
    # A solve that diverged (NaN residual) did not contract at all: 1, not a perfect 0.
    features = torch.stack([torch.ones_like(agrees), agrees, run, js, p.amax(1), change, cosine,
                            contraction.nan_to_num(1.0, posinf=1.0)], dim=1)
    return features
