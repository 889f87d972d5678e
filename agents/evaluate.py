"""Honest evaluation: one deterministic pass over a split, each example exactly once, and the report.

:func:`run_policy` drives a ``DynaLayCore`` in ``sequential`` mode with N slots: every slot that
finishes takes the next example until all ``n`` have been seen once, so a learned policy and every
baseline are judged on the same examples. :func:`evaluate` adds the baselines, the confidence-
threshold curve chosen on ``val``, the oracle, difficulty and the agent-vs-threshold bootstrap, and
writes ``report.json``, ``report.md`` and PNG figures into the run folder.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.baselines import (
    BaselinePolicy,
    ConfidencePolicy,
    EntropyPolicy,
    FixedPathPolicy,
    OraclePolicy,
    OracleSearch,
    RandomPolicy,
    StablePredictionPolicy,
    calibrate_random,
    oracle_search,
)
from dynalay_env.core import DynaLayCore
from dynalay_env.pretrain import episode_compute_stats

TAU_GRID: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995,
                               0.999, 1.01)
ENTROPY_GRID: tuple[float, ...] = (-0.01, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.01)


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

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def mean_compute(self) -> float:
        return float(self.compute.mean())

    def summary(self) -> dict[str, Any]:
        return {"name": self.policy, "params": self.params, "accuracy": self.accuracy,
                "mean_compute": self.mean_compute, "mean_steps": float(self.steps.mean())}


def _predict(policy: Any, obs: np.ndarray, state: Any, episode_start: np.ndarray, core: DynaLayCore,
             deterministic: bool) -> tuple[np.ndarray, Any]:
    kwargs: dict[str, Any] = {}
    if "action_masks" in inspect.signature(policy.predict).parameters:
        kwargs["action_masks"] = core.action_masks()
    actions, state = policy.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic,
                                    **kwargs)
    return np.asarray(actions).reshape(-1), state


@torch.no_grad()
def run_policy(core: DynaLayCore, policy: Any, name: str | None = None, params: dict[str, Any] | None = None,
               deterministic: bool = True) -> EpisodeRecords:
    """Play ``policy`` on every example of ``core``'s split exactly once (``core`` must be in
    ``sequential`` mode). ``policy`` is an SB3 model or a :class:`BaselinePolicy`."""
    if core.sample_mode != "sequential":
        raise ValueError("run_policy needs a core with sample_mode='sequential' (each example exactly once)")
    if isinstance(policy, BaselinePolicy):
        policy.bind(core)
        name = name or policy.name
        params = params if params is not None else policy.params()
    n, slots = core.num_examples, core.num_envs
    core.seed([0] * slots)  # rewinds the sequential cursor to example 0
    first = min(slots, n)
    records: dict[str, np.ndarray] = {
        "example": np.zeros(n, np.int64), "label": np.zeros(n, np.int64), "prediction": np.zeros(n, np.int64),
        "correct": np.zeros(n, bool), "compute": np.zeros(n), "flops": np.zeros(n), "steps": np.zeros(n, np.int64),
        "path": np.zeros((n, core.max_steps), np.int64), "fpi_iterations": np.zeros((n, core.max_steps), np.int64)}
    active = np.zeros(slots, dtype=bool)
    active[:first] = True
    core.reset(np.arange(first))
    issued, finished = first, 0
    obs = core.observations_tensor().cpu().numpy()
    episode_start = active.copy()
    state = None
    while finished < n:
        actions, state = _predict(policy, obs, state, episode_start, core, deterministic)
        actions = np.where(active, actions, 0)
        out = core.step(actions, active=active)
        done = np.flatnonzero(out.terminated.cpu().numpy())
        info = out.info
        examples = info["example"][done]
        for key in records:
            records[key][examples] = info[{"steps": "step"}.get(key, key)][done]
        finished += done.size
        episode_start = np.zeros(slots, dtype=bool)
        refill = done[: max(0, n - issued)]
        if refill.size:
            core.reset(refill)
            issued += refill.size
            episode_start[refill] = True
        active[done[refill.size:]] = False
        obs = core.observations_tensor().cpu().numpy()
    if not np.array_equal(np.sort(records["example"]), np.arange(n)):
        raise RuntimeError("sequential evaluation did not visit every example exactly once")
    return EpisodeRecords(name or type(policy).__name__, params or {}, **records)


# --------------------------------------------------------------------------------------------------
# Curves, hull, bootstrap
# --------------------------------------------------------------------------------------------------


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
    from scipy.stats import spearmanr

    solvable = search.solvable
    difficulty = search.min_compute
    rho = float("nan")
    if solvable.sum() > 2 and np.std(records.compute[solvable]) > 0 and np.std(difficulty[solvable]) > 0:
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
    from scipy.stats import spearmanr

    known = getattr(core.dataset, "difficulty", None)
    if not known or core.split not in known or np.std(records.compute) == 0:
        return None
    return float(spearmanr(np.asarray(known[core.split])[records.example], records.compute).statistic)


def per_class_compute(records: EpisodeRecords, num_classes: int) -> list[float | None]:
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


def policy_flops_per_step(policy: Any, obs_dim: int) -> float | None:
    """FLOPs of one forward of an SB3 policy on one observation (FlopCounterMode), else None."""
    net = getattr(policy, "policy", None)
    if net is None:
        return None
    from torch.utils.flop_counter import FlopCounterMode

    obs = torch.zeros(1, obs_dim)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net.predict(obs.numpy(), deterministic=True)
        return float(counter.get_total_flops())
    except Exception:  # recurrent or exotic policies: report unknown rather than guess
        return None


# --------------------------------------------------------------------------------------------------
# The full evaluation
# --------------------------------------------------------------------------------------------------


def _best(records: Sequence[EpisodeRecords]) -> EpisodeRecords:
    return max(records, key=lambda r: (r.accuracy, -r.mean_compute))


def choose_on_val(make_core: Callable[[str], DynaLayCore], family: Callable[[float], BaselinePolicy],
                  grid: Sequence[float], target_accuracy: float) -> tuple[float, list[EpisodeRecords]]:
    """Run ``family(v)`` for every ``v`` in ``grid`` on ``val`` and return the cheapest ``v``
    reaching ``target_accuracy`` (else the most accurate), with the val curve."""
    core = make_core("val")
    curve = [run_policy(core, family(v)) for v in grid]
    reaching = [(r.mean_compute, v) for r, v in zip(curve, grid, strict=True) if r.accuracy >= target_accuracy]
    if reaching:
        return min(reaching)[1], curve
    return grid[int(np.argmax([r.accuracy for r in curve]))], curve


def evaluate(make_core: Callable[[str], DynaLayCore], agent: Any | None = None, agent_name: str = "agent",
             split: str = "test", seed: int = 0, n_boot: int = 1000, metadata: dict[str, Any] | None = None,
             run_dir: str | Path | None = None, figures: bool = True) -> dict[str, Any]:
    """Evaluate ``agent`` (an SB3 model, a baseline, or None for baselines only) on ``split``
    against every baseline, and write the report into ``run_dir`` if given.

    ``make_core(split)`` must return a *sequential* core over that split (same model, reward and
    options as the agent's env). Thresholds (tau, h, k) are chosen on ``val``, never on ``split``.
    """
    core = make_core(split)
    model = core.model
    x, y = core.x, core.y
    k_layers, max_steps = core.num_layers, core.max_steps

    full_depth = run_policy(core, FixedPathPolicy(tuple(range(1, k_layers + 1))))
    fixed = [run_policy(core, FixedPathPolicy(p)) for p in candidate_paths(k_layers, max_steps)]
    best_fixed = _best(fixed)

    # Thresholds on val: the cheapest setting that matches full-depth accuracy on val.
    val_full = run_policy(make_core("val"), FixedPathPolicy(tuple(range(1, k_layers + 1))))
    tau, _ = choose_on_val(make_core, ConfidencePolicy, TAU_GRID, val_full.accuracy)
    h, _ = choose_on_val(make_core, EntropyPolicy, ENTROPY_GRID, val_full.accuracy)
    k_stable, _ = choose_on_val(make_core, lambda k: StablePredictionPolicy(int(k)), (1, 2, 3), val_full.accuracy)

    confidence_curve = [run_policy(core, ConfidencePolicy(t)) for t in TAU_GRID]
    entropy_curve = [run_policy(core, EntropyPolicy(v)) for v in ENTROPY_GRID]
    chosen = {
        "confidence": run_policy(core, ConfidencePolicy(tau)),
        "entropy": run_policy(core, EntropyPolicy(h)),
        "stable_prediction": run_policy(core, StablePredictionPolicy(int(k_stable))),
    }
    search = oracle_search(model, x, y, max_steps, allow_repeats=not core.mask_repeats)
    oracle = run_policy(core, OraclePolicy(search))

    agent_records = None
    if agent is not None:
        agent_records = run_policy(core, agent, name=agent_name, params={})
    target = agent_records.mean_compute if agent_records is not None else chosen["confidence"].mean_compute
    val_core = make_core("val")
    random_policy = calibrate_random(lambda p: run_policy(val_core, p).mean_compute, target, seed=seed)
    random_records = run_policy(core, random_policy)

    baselines = fixed + [chosen["confidence"], chosen["entropy"], chosen["stable_prediction"], random_records, oracle]
    report: dict[str, Any] = {
        "dataset": getattr(core.dataset, "name", None),
        **(metadata or {}),
        "split": split,
        "seed": seed,
        "provenance": core.provenance,
        "n_examples": int(core.num_examples),
        "full_depth": {"accuracy": full_depth.accuracy, "mean_compute": full_depth.mean_compute},
        "best_fixed_path": best_fixed.summary(),
        "thresholds_chosen_on_val": {"tau": tau, "h": h, "k": int(k_stable)},
        "oracle": {"accuracy": oracle.accuracy, "mean_compute": oracle.mean_compute,
                   "paths_searched": search.paths_searched, "search_seconds": search.search_seconds,
                   "search_flops": search.search_flops,
                   "unsolvable_share": float((~search.solvable).mean())},
        # Adaptivity per episode, for every policy: compute spread and Spearman with difficulty.
        "baselines": [{**b.summary(), "episode_compute": episode_compute_stats(b.compute, search.wrong_share)}
                      for b in baselines],
        "curves": {"confidence": [r.summary() for r in confidence_curve],
                   "entropy": [r.summary() for r in entropy_curve]},
    }
    focus = agent_records or chosen["confidence"]
    report.update(policy_report(focus, core, search))
    report["episode_compute"] = episode_compute_stats(focus.compute, search.wrong_share)
    report["policy"] = focus.policy
    if agent_records is not None:
        report["vs_threshold"] = vs_threshold(agent_records, confidence_curve, n_boot=n_boot, seed=seed)
        report["policy_flops_per_step"] = policy_flops_per_step(agent, core.observation_dim)
        report["examples"] = {"example": agent_records.example.tolist(),
                              "path": [p[p > 0].tolist() for p in agent_records.path],
                              "prediction": agent_records.prediction.tolist(),
                              "flops": agent_records.flops.tolist()}
    if run_dir is not None:
        write_report(Path(run_dir), report, focus, baselines, confidence_curve, entropy_curve, search, figures)
    return report


#: Exit probabilities of the random-policy curve (:func:`baseline_curves`).
RANDOM_EXIT_GRID: tuple[float, ...] = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9)


def baseline_curves(core: DynaLayCore, seed: int = 0) -> dict[str, list[EpisodeRecords]]:
    """Every non-learned policy's accuracy/compute points on ``core``'s split (a sequential core):
    ``fixed_paths`` (:func:`candidate_paths`), ``confidence`` (``TAU_GRID``), ``entropy``
    (``ENTROPY_GRID``), ``random`` (``RANDOM_EXIT_GRID``) and ``oracle`` (one point)."""
    search = oracle_search(core.model, core.x, core.y, core.max_steps, allow_repeats=not core.mask_repeats)
    return {
        "fixed_paths": [run_policy(core, FixedPathPolicy(p)) for p in candidate_paths(core.num_layers, core.max_steps)],
        "confidence": [run_policy(core, ConfidencePolicy(t)) for t in TAU_GRID],
        "entropy": [run_policy(core, EntropyPolicy(v)) for v in ENTROPY_GRID],
        "random": [run_policy(core, RandomPolicy(p, seed)) for p in RANDOM_EXIT_GRID],
        "oracle": [run_policy(core, OraclePolicy(search))],
    }


def candidate_paths(num_layers: int, max_steps: int) -> list[tuple[int, ...]]:
    """The fixed paths compared: layers 1..d for d = 0..K, then the full path with repeats of K."""
    paths = [tuple(range(1, d + 1)) for d in range(num_layers + 1)]
    for extra in range(1, max_steps - num_layers + 1):
        paths.append(tuple(range(1, num_layers + 1)) + (num_layers,) * extra)
    return paths


def policy_report(records: EpisodeRecords, core: DynaLayCore, search: OracleSearch) -> dict[str, Any]:
    """The per-policy figures of ``report.json``."""
    flops_per_unit = core.normalizer
    difficulty = difficulty_stats(records, search)
    return {
        "accuracy": records.accuracy,
        "mean_compute": records.mean_compute,
        "median_compute": float(np.median(records.compute)),
        "p90_compute": float(np.percentile(records.compute, 90)),
        "mean_flops": float(records.flops.mean()),
        "median_flops": float(np.median(records.flops)),
        "p90_flops": float(np.percentile(records.flops, 90)),
        "flops_per_unit_compute": flops_per_unit,
        "mean_steps": float(records.steps.mean()),
        "action_frequencies": action_frequencies(records, core.num_actions),
        "difficulty": difficulty,
        "difficulty_correlation": difficulty["spearman"],
        "known_difficulty_correlation": known_difficulty_correlation(records, core),
        "per_class_compute": per_class_compute(records, core.num_classes),
    }


def write_report(run_dir: Path, report: dict[str, Any], focus: EpisodeRecords, baselines: Sequence[EpisodeRecords],
                 confidence_curve: Sequence[EpisodeRecords], entropy_curve: Sequence[EpisodeRecords],
                 search: OracleSearch, figures: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and the PNG figures atomically; returns their paths."""
    from dynalay_env.model import atomic_write_bytes

    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md"}
    if figures:
        paths.update(plot_report(run_dir, report, focus, baselines, confidence_curve, entropy_curve, search))
        report["figures"] = {k: str(v) for k, v in paths.items() if k not in ("json", "md")}
    atomic_write_bytes(paths["json"], json.dumps(_jsonable(report), indent=2).encode())
    atomic_write_bytes(paths["md"], render_markdown(report).encode())
    return paths


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# DynaLay evaluation: {report.get('policy')} on {report.get('dataset', '?')} / {report['split']}",
             "", f"{report['n_examples']} examples, each once. Compute is normalised: 1.0 = full-depth model.", "",
             "| policy | params | accuracy | mean compute |", "|---|---|---:|---:|"]
    if "vs_threshold" in report:
        lines.append(f"| **{report['policy']}** | | {report['accuracy']:.4f} | {report['mean_compute']:.3f} |")
    for b in report["baselines"]:
        params = ", ".join(f"{k}={v}" for k, v in b["params"].items())
        lines.append(f"| {b['name']} | {params} | {b['accuracy']:.4f} | {b['mean_compute']:.3f} |")
    if "vs_threshold" in report:
        v = report["vs_threshold"]
        lines += ["", f"**Against confidence thresholding at the same compute:** {v['difference']:+.4f} accuracy "
                      f"(95% paired bootstrap CI [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]); "
                      + ("beats thresholding." if v["beats_threshold"] else "does not beat thresholding.")]
    lines += ["", f"Difficulty correlation (Spearman, compute vs the oracle's minimum compute): "
                  f"{report['difficulty_correlation']}", ""]
    for name, path in report.get("figures", {}).items():
        lines.append(f"![{name}]({Path(path).name})")
    return "\n".join(lines) + "\n"


def plot_report(run_dir: Path, report: dict[str, Any], focus: EpisodeRecords, baselines: Sequence[EpisodeRecords],
                confidence_curve: Sequence[EpisodeRecords], entropy_curve: Sequence[EpisodeRecords],
                search: OracleSearch) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, Path] = {}

    def save(fig: Any, name: str) -> Path:
        path = run_dir / name
        tmp = run_dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(fig)
        tmp.replace(path)
        return path

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for curve, label, style in ((confidence_curve, "confidence threshold", "o-"), (entropy_curve, "entropy threshold", "s--")):
        pts = sorted((r.mean_compute, r.accuracy) for r in curve)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=3, label=label)
    fixed = [b for b in baselines if b.policy == "fixed_path"]
    ax.plot([b.mean_compute for b in fixed], [b.accuracy for b in fixed], "k^", label="fixed paths")
    for b in baselines:
        if b.policy in ("random", "oracle", "stable_prediction"):
            ax.plot(b.mean_compute, b.accuracy, "D", label=b.policy)
    if "vs_threshold" in report:
        ax.plot(focus.mean_compute, focus.accuracy, "r*", ms=14, label=focus.policy)
    ax.set_xlabel("mean normalised compute (1.0 = full depth)")
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


__all__ = ["EpisodeRecords", "run_policy", "evaluate", "baseline_curves", "vs_threshold", "upper_hull", "hull_accuracy_at",
           "difficulty_stats", "candidate_paths", "replay_paths", "validate_report"]


@torch.no_grad()
def replay_paths(model: Any, x: torch.Tensor, paths: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Re-run recorded paths (1-based layer actions) on inputs ``x`` ``[n, ...]``, grouping examples
    that share a path into one batch. Returns (predictions [n], FLOPs [n]) computed afresh."""
    costs = model.cost_table()
    predictions = np.zeros(len(paths), dtype=np.int64)
    flops = np.zeros(len(paths), dtype=np.float64)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, path in enumerate(paths):
        groups.setdefault(tuple(int(a) for a in path), []).append(i)
    for path, members in groups.items():
        idx = torch.as_tensor(members, device=x.device)
        x_emb = model.encode(x[idx])
        z = x_emb
        spent = torch.full((len(members),), float(costs.encoder + costs.head), dtype=torch.float64, device=x.device)
        for action in path:
            result = model.apply_layer(action - 1, z, x_emb)
            z = result.state
            spent += costs.injection[action - 1] + result.flops.double() + costs.head
        predictions[members] = model.classify(z).argmax(1).cpu().numpy()
        flops[members] = spent.cpu().numpy()
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
