"""Honest evaluation: one deterministic pass over a split, each example exactly once, and the report.

:func:`run_policy` drives a ``DynaLayCore`` in ``sequential`` mode with N slots: every slot that
finishes takes the next example until all ``n`` have been seen once, so a learned policy and every
baseline are judged on the same examples. :func:`evaluate` adds the baselines, the exact threshold
curves (:mod:`agents.curves`: every distinct threshold, from one recorded pass) with their
operating points chosen on ``val``, the path and prefix oracles, difficulty and the
agent-vs-threshold bootstrap, and writes ``report.json``, ``report.md`` and PNG figures into the run
folder.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from agents.baselines import (
    BaselinePolicy,
    FixedPathPolicy,
    OraclePolicy,
    OracleSearch,
    RandomPolicy,
    matched_random,
    oracle_search,
)
from agents.curves import (
    STATISTICS,
    ExactCurve,
    choose_threshold,
    exact_curve,
    prefix_oracle,
    record_core,
    records_at_threshold,
    statistic_flops,
    vs_curve,
)
from agents.interface import as_agent, decision_flops_of
from agents.plots import plot_evaluation
from agents.records import EpisodeRecords, charged_per_flop, hull_accuracy_at
from agents.reports import jsonable, render_evaluation
from agents.router_policies import router_baselines
from dynalay_env.atomic import atomic_write_json, atomic_write_text
from dynalay_env.core import DynaLayCore
from dynalay_env.model import CostTable, provenance_of, run_path
from dynalay_env.paths import episode_compute_stats


def predict_actions(policy: Any, obs: np.ndarray, state: Any, episode_start: np.ndarray, core: DynaLayCore,
                    deterministic: bool) -> tuple[np.ndarray, Any]:
    """Actions ``[N]`` of ``policy`` for observations ``obs`` ``[N, obs_dim]`` and its next recurrent
    ``state``; the core's action masks go to a ``predict`` that takes them."""
    kwargs: dict[str, Any] = {}
    if "action_masks" in inspect.signature(policy.predict).parameters:
        kwargs["action_masks"] = core.action_masks()
    actions, state = policy.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic,
                                    **kwargs)
    return np.asarray(actions).reshape(-1), state


@torch.no_grad()
def run_policy(core: DynaLayCore, policy: Any, name: str | None = None, params: dict[str, Any] | None = None,
               deterministic: bool = True, decision_flops: float | None = None) -> EpisodeRecords:
    """Play ``policy`` on every example of ``core``'s split exactly once (``core`` must be in
    ``sequential`` mode). ``policy`` is an :class:`agents.interface.Agent`, a bare SB3 model or a
    :class:`BaselinePolicy`.

    Every decision (one call of the policy for an episode: each step, EXIT included, not the forced
    exit at ``max_steps``) is charged ``decision_flops`` FLOPs, by default the policy's own measured
    ``decision_flops()`` whatever the env's ``decision_flops`` option; ``flops`` and ``compute``
    include it, ``env_flops`` / ``env_compute`` do not. ``flops`` are always the FLOPs executed;
    ``compute`` is the charged cost over ``core.normalizer`` in ``core.costs.unit`` (under
    ``cost="latency"`` the records' ``cost`` holds the table-estimated seconds, each decision priced
    as the same share of the full-depth model as its FLOPs). The policy is asked about every slot of
    ``core`` in one batched call (a recurrent state and a baseline's core hold one row per slot);
    once fewer examples are left than slots, the answers for the idle slots are discarded and
    neither executed nor charged."""
    if core.sample_mode != "sequential":
        raise ValueError("run_policy needs a core with sample_mode='sequential' (each example exactly once)")
    policy = as_agent(policy)
    if isinstance(policy, BaselinePolicy):
        policy.bind(core)
        name = name or policy.name
        params = params if params is not None else policy.params()
    if decision_flops is None:
        decision_flops = decision_flops_of(policy)
    if decision_flops < 0:
        raise ValueError(f"decision_flops must be >= 0 (FLOPs per decision), got {decision_flops}")
    n, slots = core.num_examples, core.num_envs
    core.seed([0] * slots)  # rewinds the sequential cursor to example 0
    first = min(slots, n)
    records: dict[str, np.ndarray] = {
        "example": np.zeros(n, np.int64), "label": np.zeros(n, np.int64), "prediction": np.zeros(n, np.int64),
        "correct": np.zeros(n, bool), "compute": np.zeros(n), "flops": np.zeros(n), "steps": np.zeros(n, np.int64),
        "path": np.zeros((n, core.max_steps), np.int64), "fpi_iterations": np.zeros((n, core.max_steps), np.int64)}
    decisions = np.zeros(n, np.int64)
    charged = np.zeros(n)
    slot_decisions = np.zeros(slots, np.int64)  # policy calls of each slot's current episode
    active = np.zeros(slots, dtype=bool)
    active[:first] = True
    core.start_episodes(np.arange(first))
    issued, finished = first, 0
    obs = core.observations_tensor().cpu().numpy()
    episode_start = active.copy()
    state = None
    while finished < n:
        actions, state = predict_actions(policy, obs, state, episode_start, core, deterministic)
        actions = np.where(active, actions, 0)
        slot_decisions += active
        out = core.step(actions, active=active)
        done = np.flatnonzero(out.terminated.cpu().numpy())
        info = out.info
        examples = info["example"][done]
        for key in records:
            records[key][examples] = info[{"steps": "step"}.get(key, key)][done]
        # The charged cost before the slots are reset (``core.spent`` is ``core.flops`` under FLOPs).
        charged[examples] = core.spent[torch.as_tensor(done, device=core.device)].cpu().numpy()
        decisions[examples] = slot_decisions[done]
        slot_decisions[done] = 0
        finished += done.size
        episode_start = np.zeros(slots, dtype=bool)
        refill = done[: max(0, n - issued)]
        if refill.size:
            core.start_episodes(refill)
            issued += refill.size
            episode_start[refill] = True
        active[done[refill.size:]] = False
        obs = core.observations_tensor().cpu().numpy()
    if not np.array_equal(np.sort(records["example"]), np.arange(n)):
        raise RuntimeError("sequential evaluation did not visit every example exactly once")
    records["flops"] = records["flops"] + decisions * float(decision_flops)
    if core.spent is core.flops:  # cost="flops": the charged cost is the FLOPs, bit for bit
        cost, per_flop = None, 1.0
        records["compute"] = records["flops"] / core.normalizer
    else:  # decisions at the same share of the full-depth model as their FLOPs
        per_flop = charged_per_flop(core)
        cost = charged + decisions * (float(decision_flops) * per_flop)
        records["compute"] = cost / core.normalizer
    return EpisodeRecords(name or type(policy).__name__, params or {}, **records, decisions=decisions,
                          decision_flops=float(decision_flops), normalizer=core.normalizer,
                          cost=cost, unit=core.costs.unit, cost_per_flop=per_flop)


# --------------------------------------------------------------------------------------------------
# Curves, hull, bootstrap
# --------------------------------------------------------------------------------------------------


def vs_threshold(agent: EpisodeRecords, curve: Sequence[EpisodeRecords], n_boot: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """Agent accuracy minus the threshold curve's hull accuracy at the agent's mean compute, with a
    95% paired bootstrap interval over examples (the same resampled examples for agent and curve)."""
    correct = np.stack([r.correct for r in curve]).astype(float)   # [T, n]
    compute = np.stack([r.compute for r in curve])                  # [T, n]
    n = agent.correct.shape[0]

    def diff(idx: np.ndarray) -> float:
        agent_acc = agent.correct[idx].mean()
        agent_c = agent.compute[idx].mean()
        return float(agent_acc - hull_accuracy_at(compute[:, idx].mean(1), correct[:, idx].mean(1), agent_c))

    point = diff(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = np.array([diff(rng.integers(0, n, n)) for _ in range(n_boot)])
    low, high = np.percentile(boots, [2.5, 97.5])
    return {"difference": point, "ci95": [float(low), float(high)], "n_bootstrap": n_boot,
            "agent_mean_compute": agent.mean_compute, "beats_threshold": bool(low > 0)}


def difficulty_stats(records: EpisodeRecords, search: OracleSearch) -> dict[str, Any]:
    """Compute spent against difficulty (the oracle's minimum compute to a correct answer)."""
    solvable = search.solvable
    difficulty = search.min_compute
    rho = float("nan")
    if solvable.sum() > 2 and np.ptp(records.compute[solvable]) > 0 and np.ptp(difficulty[solvable]) > 0:
        rho = float(spearmanr(difficulty[solvable], records.compute[solvable]).statistic)
    buckets: list[dict[str, Any]] = []
    if solvable.any():
        edges = np.unique(np.quantile(difficulty[solvable], [0, 0.25, 0.5, 0.75, 1.0]))
        which = np.clip(np.searchsorted(edges, difficulty, side="right") - 1, 0, max(len(edges) - 2, 0))
        for b in range(max(len(edges) - 1, 1)):
            sel = solvable & (which == b)
            if sel.any():
                buckets.append({"difficulty_range": [float(edges[b]), float(edges[min(b + 1, len(edges) - 1)])],
                                "n": int(sel.sum()), "mean_compute": float(records.compute[sel].mean()),
                                "accuracy": float(records.correct[sel].mean())})
    if (~solvable).any():
        sel = ~solvable
        buckets.append({"difficulty_range": "unsolvable", "n": int(sel.sum()),
                        "mean_compute": float(records.compute[sel].mean()),
                        "accuracy": float(records.correct[sel].mean())})
    return {"spearman": rho, "buckets": buckets}


def known_difficulty_correlation(records: EpisodeRecords, core: DynaLayCore) -> float | None:
    """Spearman of compute against the dataset's own per-example difficulty (``synthetic``: the
    noise level), where the dataset has one."""
    known = getattr(core.dataset, "difficulty", None)
    if not known or core.split not in known or np.std(records.compute) == 0:
        return None
    return float(spearmanr(np.asarray(known[core.split])[records.example], records.compute).statistic)


def per_class_compute(records: EpisodeRecords, num_classes: int) -> list[float | None]:
    """Mean normalised compute per true class (None for a class with no example), ``num_classes`` entries."""
    return [float(records.compute[records.label == c].mean()) if (records.label == c).any() else None
            for c in range(num_classes)]


def action_frequencies(records: EpisodeRecords, num_actions: int) -> dict[str, float]:
    """Share of each action among all actions taken (EXIT counted once per episode that chose it)."""
    counts = np.zeros(num_actions)
    for a in range(1, num_actions):
        counts[a] = (records.path == a).sum()
    counts[0] = int((records.steps < records.path.shape[1]).sum())  # episodes that exited by choice
    total = counts.sum()
    return {("exit" if a == 0 else f"layer{a}"): float(counts[a] / total) if total else 0.0
            for a in range(num_actions)}


# --------------------------------------------------------------------------------------------------
# The full evaluation
# --------------------------------------------------------------------------------------------------


def _best(records: Sequence[EpisodeRecords]) -> EpisodeRecords:
    return max(records, key=lambda r: (r.accuracy, -r.mean_compute))


def threshold_baselines(core: DynaLayCore, val_core: DynaLayCore) -> tuple[dict[str, ExactCurve],
                                                                             dict[str, EpisodeRecords],
                                                                             EpisodeRecords]:
    """One recorded pass on ``core``'s split and one on ``val``: the exact curve of every statistic
    on the split, each rule's operating point (the cheapest threshold that reaches full-depth
    accuracy on ``val``, else the most accurate one there) played on the split, and the prefix oracle."""
    record, val_record = record_core(core), record_core(val_core)
    target = float(val_record.correct[:, -1].mean())  # full depth of the order, on val
    cost = {name: statistic_flops(name, core.num_classes) for name in STATISTICS}  # each rule pays its statistic
    curves = {name: exact_curve(record, name, cost[name]) for name in STATISTICS}
    chosen = {name: records_at_threshold(record, name, choose_threshold(exact_curve(val_record, name, cost[name]),
                                                                        target), cost[name])
              for name in STATISTICS}
    return curves, chosen, prefix_oracle(record)


def evaluate(make_core: Callable[[str], DynaLayCore], agent: Any | None = None, agent_name: str = "agent",
             split: str = "test", seed: int = 0, n_boot: int = 1000, metadata: dict[str, Any] | None = None,
             run_dir: str | Path | None = None, figures: bool = True) -> dict[str, Any]:
    """Evaluate ``agent`` (an SB3 model, a baseline, or None for baselines only) on ``split``
    against every baseline, and write the report into ``run_dir`` if given.

    ``make_core(split)`` must return a *sequential* core over that split (same model, reward and
    options as the agent's env). Thresholds (tau, h, m, k) are chosen on ``val``, never on ``split``;
    the curves and their hull are those of ``split`` itself (which favours the thresholds).
    """
    core = make_core(split)
    model = core.model
    x, y = core.x, core.y
    k_layers, max_steps = core.num_layers, core.max_steps

    full_depth = run_policy(core, FixedPathPolicy(tuple(range(1, k_layers + 1))))
    fixed = [run_policy(core, FixedPathPolicy(p)) for p in candidate_paths(k_layers, max_steps)]
    best_fixed = _best(fixed)

    val_core = make_core("val")  # thresholds and the random policy's calibration are chosen there
    curves, chosen, prefix = threshold_baselines(core, val_core)
    # An expert model's router as two more baselines: its curve beside the statistics' (none otherwise).
    router_curves, routed = router_baselines(core, val_core)
    search = oracle_search(model, x, y, max_steps, allow_repeats=not core.mask_repeats, costs=core.costs)
    oracle = run_policy(core, OraclePolicy(search))

    agent_records = None
    if agent is not None:
        agent_records = run_policy(core, agent, name=agent_name, params={})
    target = agent_records.mean_compute if agent_records is not None else chosen["confidence"].mean_compute
    # Calibrated on val; a target no random policy reaches is reported as unmatched, never silently.
    random_match = matched_random(lambda p: run_policy(val_core, p), target, seed=seed)
    random_records = run_policy(core, random_match.policy)

    baselines = fixed + list(chosen.values()) + routed + [random_records, oracle, prefix]
    report: dict[str, Any] = {
        "dataset": getattr(core.dataset, "name", None),
        **(metadata or {}),
        "split": split,
        "seed": seed,
        "provenance": core.provenance,
        "model_provenance": provenance_of(core.model, core.dataset),
        "n_examples": int(core.num_examples),
        # What every compute figure is charged in: FLOPs executed, or table-estimated seconds.
        "cost": cost_of(core),
        "full_depth": {"accuracy": full_depth.accuracy, "mean_compute": full_depth.mean_compute},
        "best_fixed_path": best_fixed.summary(),
        "thresholds_chosen_on_val": {STATISTICS[name].param: r.params[STATISTICS[name].param]
                                     for name, r in chosen.items()},
        "oracle": {"kind": "path", "accuracy": oracle.accuracy, "mean_compute": oracle.mean_compute,
                   "paths_searched": search.paths_searched, "search_seconds": search.search_seconds,
                   "search_flops": search.search_flops,
                   "unsolvable_share": float((~search.solvable).mean())},
        "prefix_oracle": prefix_oracle_summary(prefix),
        "random_match": {**random_match.to_json(), "compute_on_split": random_records.mean_compute},
        # Adaptivity per episode, for every policy: compute spread and Spearman with difficulty.
        "baselines": [{**b.summary(), "episode_compute": episode_compute_stats(b.compute, search.wrong_share)}
                      for b in baselines],
        "curves": {name: curve.to_json() for name, curve in {**curves, **router_curves}.items()},
        "curves_note": CURVES_NOTE,
    }
    focus = agent_records or chosen["confidence"]
    report.update(policy_report(focus, core, search))
    report["episode_compute"] = episode_compute_stats(focus.compute, search.wrong_share)
    report["policy"] = focus.policy
    if agent_records is not None:
        report["vs_threshold"] = vs_curve(agent_records, curves["confidence"], n_boot=n_boot, seed=seed)
        if "router_confidence" in router_curves:  # the strongest non-RL rival where there is a router
            report["vs_router_confidence"] = vs_curve(agent_records, router_curves["router_confidence"],
                                                      n_boot=n_boot, seed=seed)
        # The main model's FLOPs alone: what validate_report replays.
        report["examples"] = {"example": agent_records.example.tolist(),
                              "path": [p[p > 0].tolist() for p in agent_records.path],
                              "prediction": agent_records.prediction.tolist(),
                              "flops": agent_records.env_flops.tolist()}
    if run_dir is not None:
        write_report(Path(run_dir), report, focus, baselines, curves, search, figures)
    return report


#: Levels of the random-policy curve (:func:`baseline_curves`, :meth:`RandomPolicy.at_level`): exit
#: probabilities 0.9 .. 0.05, then uniform layers to max_steps, then towards the costliest layer.
RANDOM_LEVELS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.65, 0.8, 0.9, 0.95, 1.0, 1.5, 2.0)


#: Explains the curves and the hull in every report.
CURVES_NOTE = ("Threshold curves use every distinct value of the statistic on this split, from one recorded pass along "
               "the full-depth order (exit at the first depth whose statistic passes, else at full depth). The hull "
               "the policy is compared with is fitted on this same split, which favours the threshold rule. "
               "oracle = path oracle (cheapest correct path of at most max_steps layers; it also counts paths right "
               "by luck); prefix_oracle = cheapest correct prefix of the full-depth order (the bound for exit-only "
               "policies).")


def prefix_oracle_summary(prefix: EpisodeRecords) -> dict[str, Any]:
    """The prefix oracle's figures for reports (see :func:`agents.curves.prefix_oracle`)."""
    return {"kind": "prefix", "order": prefix.params["order"], "accuracy": prefix.accuracy,
            "mean_compute": prefix.mean_compute, "unsolvable_share": float((~prefix.extra["solvable"]).mean())}


def baseline_curves(core: DynaLayCore, seed: int = 0) -> dict[str, Any]:
    """Every non-learned policy's accuracy/compute on ``core``'s split (a sequential core).
    Lists of :class:`EpisodeRecords`: ``fixed_paths`` (:func:`candidate_paths`), ``random``
    (``RANDOM_LEVELS``), ``oracle`` (the path oracle) and ``prefix_oracle`` (one point each);
    :class:`agents.curves.ExactCurve`: ``confidence``, ``entropy``, ``margin`` and
    ``stable_prediction`` (every distinct threshold, one recorded pass)."""
    search = oracle_search(core.model, core.x, core.y, core.max_steps, allow_repeats=not core.mask_repeats,
                           costs=core.costs)
    record = record_core(core)
    return {
        "fixed_paths": [run_policy(core, FixedPathPolicy(p)) for p in candidate_paths(core.num_layers, core.max_steps)],
        **{name: exact_curve(record, name, statistic_flops(name, core.num_classes)) for name in STATISTICS},
        "random": [run_policy(core, RandomPolicy.at_level(level, seed)) for level in RANDOM_LEVELS],
        "oracle": [run_policy(core, OraclePolicy(search))],
        "prefix_oracle": [prefix_oracle(record)],
    }


def candidate_paths(num_layers: int, max_steps: int) -> list[tuple[int, ...]]:
    """The fixed paths compared: layers 1..d for d = 0..K, then the full path with repeats of K."""
    paths = [tuple(range(1, d + 1)) for d in range(num_layers + 1)]
    for extra in range(1, max_steps - num_layers + 1):
        paths.append(tuple(range(1, num_layers + 1)) + (num_layers,) * extra)
    return paths


def cost_of(core: DynaLayCore) -> dict[str, str]:
    """What ``core`` charges compute in, for every report: ``{"name": "flops" | "latency", "unit": ...}``
    (``"FLOPs (executed)"`` or ``"seconds (table-estimated)"``)."""
    return {"name": core.options.cost, "unit": core.costs.unit}


def policy_report(records: EpisodeRecords, core: DynaLayCore, search: OracleSearch) -> dict[str, Any]:
    """The per-policy figures of ``report.json``."""
    flops_per_unit = core.flops_normalizer
    difficulty = difficulty_stats(records, search)
    return {
        "accuracy": records.accuracy,
        "mean_compute": records.mean_compute,
        "mean_env_compute": float(records.env_compute.mean()),
        "decision_flops": records.decision_flops,
        "mean_decisions": float(records.decisions.mean()) if records.decisions is not None else None,
        "median_compute": float(np.median(records.compute)),
        "p90_compute": float(np.percentile(records.compute, 90)),
        "mean_flops": float(records.flops.mean()),
        "median_flops": float(np.median(records.flops)),
        "p90_flops": float(np.percentile(records.flops, 90)),
        "flops_per_unit_compute": flops_per_unit,
        "cost_per_unit_compute": core.normalizer,
        "cost_unit": core.costs.unit,
        "mean_steps": float(records.steps.mean()),
        "action_frequencies": action_frequencies(records, core.num_actions),
        "difficulty": difficulty,
        "difficulty_correlation": difficulty["spearman"],
        "known_difficulty_correlation": known_difficulty_correlation(records, core),
        "per_class_compute": per_class_compute(records, core.num_classes),
    }


#: Line styles of the exact curves in the figures.
def write_report(run_dir: Path, report: dict[str, Any], focus: EpisodeRecords, baselines: Sequence[EpisodeRecords],
                 curves: dict[str, ExactCurve], search: OracleSearch, figures: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and the PNG figures atomically; returns their paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md"}
    if figures:
        paths.update(plot_evaluation(run_dir, report, focus, baselines, curves, search))
        report["figures"] = {k: str(v) for k, v in paths.items() if k not in ("json", "md")}
    atomic_write_json(paths["json"], jsonable(report))
    atomic_write_text(paths["md"], render_evaluation(report))
    return paths


__all__ = ["EpisodeRecords", "run_policy", "cost_of", "evaluate", "baseline_curves", "threshold_baselines", "vs_threshold",
           "prefix_oracle_summary",
           "difficulty_stats", "candidate_paths", "replay_paths", "validate_report"]


@torch.no_grad()
def replay_paths(model: Any, x: torch.Tensor, paths: Sequence[Sequence[int]],
                 costs: CostTable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Re-run recorded paths (1-based layer actions) on inputs ``x`` ``[n, ...]``, grouping examples
    that share a path into one batch. Returns (predictions [n], cost [n]) computed afresh: the cost
    is charged from ``costs`` (a core's ``costs``, e.g. a latency table; default the model's FLOPs)."""
    costs = model.cost_table() if costs is None else costs
    predictions = np.zeros(len(paths), dtype=np.int64)
    flops = np.zeros(len(paths), dtype=np.float64)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, path in enumerate(paths):
        groups.setdefault(tuple(int(a) for a in path), []).append(i)
    for path, members in groups.items():
        idx = torch.as_tensor(members, device=x.device)
        run = run_path(model, x[idx], [action - 1 for action in path], costs)
        predictions[members] = model.classify(run.state).argmax(1).cpu().numpy()
        flops[members] = run.flops.cpu().numpy()
    return predictions, flops


def validate_report(report: dict[str, Any], core: DynaLayCore) -> dict[str, Any]:
    """Replay every example's recorded path on ``core``'s split and compare predictions (exactly)
    and FLOPs (to 1e-9 relative) with what the report recorded."""
    recorded = report.get("examples")
    if not recorded:
        raise ValueError("the report holds no per-example paths (evaluate an agent to record them)")
    examples = np.asarray(recorded["example"], dtype=np.int64)
    predictions, flops = replay_paths(core.model, core.x[torch.as_tensor(examples, device=core.device)],
                                      recorded["path"])
    pred_ok = predictions == np.asarray(recorded["prediction"])
    flops_ok = np.isclose(flops, np.asarray(recorded["flops"]), rtol=1e-9, atol=0.0)
    return {"n_examples": int(examples.size), "predictions_match": int(pred_ok.sum()),
            "flops_match": int(flops_ok.sum()), "valid": bool(pred_ok.all() and flops_ok.all()),
            "first_mismatches": examples[~(pred_ok & flops_ok)][:10].tolist()}
