"""Non-learned policies with the predict interface of an SB3 model.

Every baseline is *bound* to the batched core it acts in (``policy.bind(core)``; the evaluator does
it), because some of them need what the observation may not carry (the head's output when the
``head`` group is switched off, the example index for the oracle). ``predict(obs, state,
episode_start, deterministic)`` returns ``(actions [N], state)`` exactly like ``BaseAlgorithm.predict``.

* :class:`FixedPathPolicy` -- a fixed layer sequence, then EXIT;
* :class:`RandomPolicy`    -- EXIT with probability ``p_exit``, else a random layer (uniform, or tilted
  by ``deep`` towards the costliest layer); :func:`calibrate_random` picks one number, its level, so
  that its mean compute matches a target, and :func:`matched_random` says whether it got there;
* :class:`ConfidencePolicy` -- EXIT once the head's top-1 probability ``>= tau``;
* :class:`EntropyPolicy`   -- EXIT once the head's normalised entropy ``<= h``;
* :class:`MarginPolicy`    -- EXIT once the head's top-1 minus top-2 probability ``>= m``;
* :class:`StablePredictionPolicy` -- EXIT once the prediction has not changed for ``k`` steps;
* :class:`OraclePolicy`    -- the cheapest correct path of each example, found by exhaustive search
  (the upper bound of what introspection could buy).

The thresholded policies continue along ``layer_order`` while they do not exit, and EXIT at its
end. The default is the full-depth order 1..K of :func:`agents.curves.full_depth_order`, the order
:mod:`agents.curves` records its exact curves along (one recorded pass, not a run per threshold),
so a default-constructed rule played with a threshold lands exactly on that threshold's curve point
(accuracy, compute and decisions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from agents.curves import full_depth_order, get_statistic, head_statistics, statistic_flops
from dynalay_env.core import DynaLayCore
from dynalay_env.model import CostTable
from dynalay_env.paths import enumerate_paths, path_difficulty


class BaselinePolicy:
    """Base class: bind to a core, then ``predict`` like an SB3 model."""

    name = "baseline"

    def __init__(self) -> None:
        self.core: DynaLayCore | None = None

    def bind(self, core: DynaLayCore) -> BaselinePolicy:
        """Attach the policy to the batched ``core`` it will act in; returns the policy."""
        self.core = core
        return self

    #: The head statistic the rule thresholds (charged per decision), None for rules that read none.
    statistic: str | None = None

    def params(self) -> dict[str, Any]:
        """The rule's parameters (e.g. ``{"tau": 0.9}``), for reports and labels."""
        return {}

    def decision_flops(self) -> int:
        """FLOPs of one decision: the statistic's analytic count (:func:`agents.curves.statistic_flops`)
        for a threshold rule; 0 for fixed paths, the random policy and the oracle (they read nothing
        the model computes: a fixed program, a coin, a bound)."""
        return statistic_flops(self.statistic, self._core().num_classes) if self.statistic else 0

    def label(self) -> str:
        """``name(param=value, ...)``: how reports name the policy."""
        params = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({params})" if params else self.name

    def _core(self) -> DynaLayCore:
        if self.core is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to an env: call policy.bind(core) first "
                               "(agents.evaluate does it)")
        return self.core

    def actions(self, core: DynaLayCore, episode_start: np.ndarray) -> np.ndarray:
        """The next action of every slot of ``core``, ``[N]`` int (0 = EXIT, k = layer k)."""
        raise NotImplementedError

    def predict(self, observation: Any, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True, action_masks: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """SB3's ``predict`` interface: ``(actions [N], state)`` for the bound core's current states.

        ``observation`` is not read (the rule reads the core); an action that ``action_masks``
        forbids becomes EXIT, which is always allowed.
        """
        core = self._core()
        if episode_start is None:
            episode_start = (core.steps == 0).cpu().numpy()
        actions = self.actions(core, np.asarray(episode_start, dtype=bool))
        if action_masks is not None:
            # A masked choice falls back to EXIT, which is always allowed.
            allowed = np.take_along_axis(np.asarray(action_masks), actions[:, None], axis=1)[:, 0]
            actions = np.where(allowed, actions, 0)
        return actions.astype(np.int64), state


class _OrderedPolicy(BaselinePolicy):
    """Walks ``layer_order`` (default :func:`agents.curves.full_depth_order`) until ``should_exit``
    says stop or the order ends (then EXIT)."""

    def __init__(self, layer_order: Sequence[int] | None = None) -> None:
        super().__init__()
        self.layer_order = tuple(layer_order) if layer_order is not None else None

    def _next_layer(self, core: DynaLayCore) -> torch.Tensor:
        order = self.layer_order if self.layer_order is not None else full_depth_order(core.num_layers, core.max_steps)
        bad = [a for a in order if not 1 <= a <= core.num_layers]
        if bad:
            raise ValueError(f"layer_order holds {bad}; layers are numbered 1..{core.num_layers}")
        padded = torch.tensor(list(order) + [0] * max(0, core.max_steps - len(order) + 1), device=core.device)
        return padded[core.steps.clamp_max(padded.numel() - 1)]

    def should_exit(self, core: DynaLayCore, episode_start: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def actions(self, core: DynaLayCore, episode_start: np.ndarray) -> np.ndarray:
        exit_now = self.should_exit(core, episode_start)
        return torch.where(exit_now, torch.zeros_like(core.steps), self._next_layer(core)).cpu().numpy()


class FixedPathPolicy(_OrderedPolicy):
    """Apply ``path`` (1-based layer actions, e.g. ``(1, 2, 3)``), then EXIT. ``()`` exits at once."""

    name = "fixed_path"

    def __init__(self, path: Sequence[int]) -> None:
        super().__init__(tuple(path))
        self.path = tuple(int(a) for a in path)

    def params(self) -> dict[str, Any]:
        """``{"path": [...]}``, the layers it runs."""
        return {"path": list(self.path)}

    def should_exit(self, core: DynaLayCore, episode_start: np.ndarray) -> torch.Tensor:
        """``[N]`` bool: the slot has run the whole path."""
        return core.steps >= len(self.path)

    def _next_layer(self, core: DynaLayCore) -> torch.Tensor:
        if not self.path:
            return torch.zeros_like(core.steps)
        return super()._next_layer(core)


class _HeadThresholdPolicy(_OrderedPolicy):
    """EXIT when the head statistic ``statistic`` at the current state passes ``threshold``, in the
    direction :data:`agents.curves.STATISTICS` gives it (the exact curves use the same rule)."""

    def __init__(self, threshold: float, layer_order: Sequence[int] | None = None) -> None:
        super().__init__(layer_order)
        self.threshold = float(threshold)

    def params(self) -> dict[str, Any]:
        return {get_statistic(self.statistic).param: self.threshold}

    def should_exit(self, core: DynaLayCore, episode_start: np.ndarray) -> torch.Tensor:
        value = head_statistics(core.logits)[self.statistic]
        return value >= self.threshold if get_statistic(self.statistic).higher else value <= self.threshold


class ConfidencePolicy(_HeadThresholdPolicy):
    """EXIT when the head's top-1 probability at the current state is ``>= tau`` (the threshold)."""

    name = "confidence"
    statistic = "confidence"


class EntropyPolicy(_HeadThresholdPolicy):
    """EXIT when the head's entropy / log(num_classes) at the current state is ``<= h`` (the threshold)."""

    name = "entropy"
    statistic = "entropy"


class MarginPolicy(_HeadThresholdPolicy):
    """EXIT when the head's top-1 minus top-2 probability at the current state is ``>= m`` (the threshold)."""

    name = "margin"
    statistic = "margin"


class StablePredictionPolicy(_OrderedPolicy):
    """EXIT once the prediction has stayed the same for ``k`` consecutive layer steps."""

    name = "stable_prediction"
    statistic = "stable_prediction"

    def __init__(self, k: int, layer_order: Sequence[int] | None = None) -> None:
        super().__init__(layer_order)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self._last: torch.Tensor | None = None
        self._unchanged: torch.Tensor | None = None

    def params(self) -> dict[str, Any]:
        """``{"k": ...}``, the steps the prediction must stay unchanged."""
        return {"k": self.k}

    def should_exit(self, core: DynaLayCore, episode_start: np.ndarray) -> torch.Tensor:
        """``[N]`` bool: the head's prediction has not changed for ``k`` steps."""
        prediction = core.logits.argmax(1)
        if self._last is None or self._last.shape != prediction.shape:
            self._last = prediction.clone()
            self._unchanged = torch.zeros_like(prediction)
        start = torch.as_tensor(episode_start, device=core.device)
        same = (prediction == self._last) & ~start
        self._unchanged = torch.where(same, self._unchanged + 1, torch.zeros_like(self._unchanged))
        self._last = prediction.clone()
        return self._unchanged >= self.k


class RandomPolicy(BaselinePolicy):
    """EXIT with probability ``p_exit``; otherwise, with probability ``deep``, the costliest layer
    (:func:`costliest_layer`), else a uniformly random layer (seeded).

    ``deep`` lets the random family reach any mean compute a policy can spend, up to ``max_steps``
    steps of the costliest layer: uniform layers alone stop well short of that. One number
    ``level`` in ``[0, 2]`` orders the family by compute (:meth:`at_level`), and
    :func:`calibrate_random` bisects it.
    """

    name = "random"

    def __init__(self, p_exit: float, seed: int = 0, deep: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p_exit <= 1.0:
            raise ValueError(f"p_exit must be in [0, 1], got {p_exit}")
        if not 0.0 <= deep <= 1.0:
            raise ValueError(f"deep must be in [0, 1], got {deep}")
        self.p_exit = float(p_exit)
        self.deep = float(deep)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    #: The range of :meth:`at_level`: 0 exits at once, 1 is uniform layers until ``max_steps``, 2 is
    #: the costliest layer until ``max_steps``.
    MAX_LEVEL = 2.0

    @classmethod
    def at_level(cls, level: float, seed: int = 0) -> RandomPolicy:
        """The family by one number, compute rising with it: ``level`` in ``[0, 1]`` is
        ``p_exit = 1 - level`` with uniform layers; in ``[1, 2]`` it never exits early and
        ``deep = level - 1``."""
        if not 0.0 <= level <= cls.MAX_LEVEL:
            raise ValueError(f"level must be in [0, {cls.MAX_LEVEL}], got {level}")
        return cls(max(0.0, 1.0 - level), seed, deep=max(0.0, level - 1.0))

    def fresh(self) -> RandomPolicy:
        """The same policy with its generator back at the seed (replays the same draws)."""
        return RandomPolicy(self.p_exit, self.seed, deep=self.deep)

    def params(self) -> dict[str, Any]:
        """``{"p_exit": ..., "seed": ...}``, plus ``deep`` when it is not 0."""
        params: dict[str, Any] = {"p_exit": round(self.p_exit, 4), "seed": self.seed}
        if self.deep:
            params["deep"] = round(self.deep, 4)
        return params

    def actions(self, core: DynaLayCore, episode_start: np.ndarray) -> np.ndarray:
        """EXIT with probability ``p_exit``, else the costliest allowed layer with probability
        ``deep``, else a uniformly random allowed layer, per slot: ``[N]`` int."""
        n, k = core.num_envs, core.num_layers
        # The same three draws per step whatever the parameters (common random numbers): compute
        # then rises with the level on average, which is what the bisection needs.
        exit_draw, deep_draw = self.rng.random(n), self.rng.random(n)
        layers = self.rng.integers(1, k + 1, size=n)
        # Only layers the env allows (mask_repeats, compute_budget): a masked choice would become
        # EXIT and make the deep end of the family exit early. A drawn layer that is not allowed is
        # redrawn among the allowed ones, which keeps the choice uniform over them.
        allowed = core.action_masks()[:, 1:]
        refused = ~allowed[np.arange(n), layers - 1]
        if refused.any():
            redraw = np.where(allowed, self.rng.random((n, k)), -1.0).argmax(1) + 1
            layers = np.where(refused, redraw, layers)
        step_cost = np.asarray(core.costs.worst_step_flops())
        costliest = np.where(allowed, step_cost, -np.inf).argmax(1) + 1
        layers = np.where(deep_draw < self.deep, costliest, layers)
        return np.where((exit_draw < self.p_exit) | ~allowed.any(1), 0, layers)


def costliest_layer(model: Any) -> int:
    """The 1-based action of the layer whose step costs most at the solver's iteration cap
    (:meth:`dynalay_env.model.CostTable.worst_step_flops`): the layer the random family's ``deep``
    dial takes when the env allows it."""
    return int(np.argmax(model.cost_table().worst_step_flops())) + 1


@dataclass
class OracleSearch:
    """Result of the exhaustive path search on one split (per example arrays ``[n]``)."""

    best_path: list[tuple[int, ...]]      # cheapest correct path (1-based actions); () if none is correct
    solvable: np.ndarray                  # some path of length <= max_steps is correct
    min_compute: np.ndarray               # normalised compute of best_path (nan where unsolvable)
    paths_searched: int
    search_seconds: float
    search_flops: float                   # cost of the search in ``unit`` (every prefix solved once)
    wrong_share: np.ndarray | None = None  # share of the searched paths that answer wrong (difficulty)
    unit: str = CostTable.unit            # what ``min_compute`` and ``search_flops`` are charged in


def oracle_search(model: Any, x: torch.Tensor, y: torch.Tensor, max_steps: int, batch_size: int = 4096,
                  allow_repeats: bool = True, costs: CostTable | None = None) -> OracleSearch:
    """Exhaustive search over all paths up to ``max_steps`` (shared prefixes solved once);
    ``allow_repeats=False`` searches only the paths an env with ``mask_repeats`` allows. A
    ``compute_budget`` mask is not applied: the oracle is an upper bound. "Cheapest" is in
    ``costs`` (a core's ``costs``: FLOPs, or a latency table; default the model's FLOPs)."""
    costs = model.cost_table() if costs is None else costs
    normalizer = costs.normalizer
    best_paths: list[tuple[int, ...]] = []
    solvable, min_compute, wrong_share = [], [], []
    seconds = 0.0
    flops = 0.0
    paths_searched = 0
    for i in range(0, x.shape[0], batch_size):
        table = enumerate_paths(model, x[i:i + batch_size], y[i:i + batch_size], max_steps, allow_repeats, costs)
        seconds += table.wall_seconds
        paths_searched = len(table.paths)
        # Every path's cost includes its prefix; a prefix is executed once, so the search cost is
        # the sum over paths of the cost of their last step (path cost minus its parent's cost).
        index = {p: j for j, p in enumerate(table.paths)}
        for j, p in enumerate(table.paths):
            parent = table.flops[index[p[:-1]]] if p else torch.zeros_like(table.flops[j])
            flops += float((table.flops[j] - parent).sum())
        cost = torch.where(table.correct, table.flops, torch.full_like(table.flops, float("inf")))
        best = cost.argmin(0)
        ok = table.correct.any(0)
        solvable.append(ok.numpy())
        wrong_share.append(path_difficulty(table.correct))
        min_compute.append(torch.where(ok, cost.min(0).values / normalizer,
                                       torch.full_like(cost[0], float("nan"))).numpy())
        best_paths += [tuple(a + 1 for a in table.paths[b]) if o else () for b, o in zip(best.tolist(), ok.tolist(),
                                                                                          strict=True)]
    return OracleSearch(best_paths, np.concatenate(solvable), np.concatenate(min_compute), paths_searched,
                        seconds, flops, np.concatenate(wrong_share), costs.unit)


class OraclePolicy(BaselinePolicy):
    """Follow each example's cheapest correct path (:func:`oracle_search`); EXIT at once where no
    path is correct. Needs the split the search ran on."""

    name = "oracle"

    def __init__(self, search: OracleSearch) -> None:
        super().__init__()
        self.search = search
        longest = max((len(p) for p in search.best_path), default=0)
        table = np.zeros((len(search.best_path), longest + 1), dtype=np.int64)
        for i, path in enumerate(search.best_path):
            table[i, :len(path)] = path
        self._table = torch.as_tensor(table)

    def bind(self, core: DynaLayCore) -> OraclePolicy:
        """Attach to ``core``; ``ValueError`` if its split is not the one the oracle was searched on."""
        if core.num_examples != len(self.search.best_path):
            raise ValueError(f"the oracle was searched on {len(self.search.best_path)} examples but the env's split "
                             f"{core.split!r} has {core.num_examples}")
        self._table = self._table.to(core.device)
        return super().bind(core)  # type: ignore[return-value]

    def actions(self, core: DynaLayCore, episode_start: np.ndarray) -> np.ndarray:
        """Each slot's next action on its example's cheapest correct path: ``[N]`` int."""
        step = core.steps.clamp_max(self._table.shape[1] - 1)
        return self._table[core.example, step].cpu().numpy()


def calibrate_random(evaluate_compute: Callable[[RandomPolicy], float], target_compute: float, seed: int = 0,
                     iterations: int = 14) -> RandomPolicy:
    """Bisection on :meth:`RandomPolicy.at_level` so that ``evaluate_compute(policy)`` (mean
    normalised compute, on ``val`` in reports) is close to ``target_compute``.

    A target beyond the family's reach (above ``max_steps`` steps of the costliest layer, or below
    exiting at once) gets the end of the family: compare the compute of what it returns with the
    target before calling the two matched (:func:`matched_random`)."""
    lo, hi = 0.0, RandomPolicy.MAX_LEVEL
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if evaluate_compute(RandomPolicy.at_level(mid, seed)) < target_compute:
            lo = mid
        else:
            hi = mid
    return RandomPolicy.at_level((lo + hi) / 2, seed)


#: Relative compute difference within which a random policy counts as matched to its target.
MATCH_TOLERANCE = 0.02


class _Played(Protocol):
    """What :func:`matched_random` needs of a played pass (``EpisodeRecords`` has it)."""

    @property
    def accuracy(self) -> float: ...

    @property
    def mean_compute(self) -> float: ...


@dataclass(frozen=True)
class RandomMatch:
    """A random policy calibrated to a target compute, and whether it got there.

    ``records`` is its pass where it was calibrated (``val`` in reports) and ``compute`` that pass's
    mean normalised compute; ``matched`` is ``|compute - target| <= MATCH_TOLERANCE * target``.
    Unmatched, ``note`` says why and the comparison must not be read as one at equal compute."""

    policy: RandomPolicy
    target: float
    records: Any
    matched: bool
    note: str

    @property
    def compute(self) -> float:
        """Mean normalised compute of the calibrated policy where it was calibrated."""
        return float(self.records.mean_compute)

    def to_json(self) -> dict[str, Any]:
        """The calibration's figures for reports."""
        return {"target_compute": self.target, "calibrated_compute": self.compute, "matched": self.matched,
                "params": self.policy.params(), "note": self.note}


def matched_random(play: Callable[[RandomPolicy], _Played], target_compute: float, seed: int = 0) -> RandomMatch:
    """:func:`calibrate_random` on ``play(policy).mean_compute``, then a check that the compute was
    reached, with a note that says why where it was not. ``play`` plays a policy on the calibration
    split (for example ``lambda p: run_policy(val_core, p)``)."""
    policy = calibrate_random(lambda p: play(p).mean_compute, target_compute, seed=seed)
    records = play(policy.fresh())
    matched = abs(records.mean_compute - target_compute) <= MATCH_TOLERANCE * max(target_compute, 1e-12)
    if matched:
        note = "random policy at matched compute"
    else:
        floor = float(play(RandomPolicy.at_level(0.0, seed)).mean_compute)
        ceiling = float(play(RandomPolicy.at_level(RandomPolicy.MAX_LEVEL, seed)).mean_compute)
        if floor <= target_compute <= ceiling:
            note = (f"the bisection ended at compute {records.mean_compute:.4f}, not {target_compute:.4f}, inside the "
                    f"family's span [{floor:.4f}, {ceiling:.4f}]: its compute is not monotone in the level on this "
                    "split; the random row is not a comparison at equal compute")
        else:
            note = (f"no random policy reaches compute {target_compute:.4f}: the family spans [{floor:.4f}, "
                    f"{ceiling:.4f}] (exit at once .. the costliest allowed layer for max_steps); the random row is "
                    "the nearest end, not a comparison at equal compute")
    return RandomMatch(policy.fresh(), float(target_compute), records, matched, note)
