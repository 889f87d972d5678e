"""Every path through the main model, and the two oracles (docs/design.md, "Oracles").

A *path* is a sequence of at most ``max_steps`` layer applications from the encoder state;
:func:`enumerate_paths` evaluates all of them on a set of examples (each shared prefix solved once)
into a :class:`PathTable`. The *path oracle* takes, per example, the cheapest correct path (it also
counts paths that are right by luck); the *prefix oracle* the cheapest correct prefix of the
full-depth order 1..K, the bound for exit-only policies. Both apply one rule,
:func:`cheapest_correct`. Compute is FLOPs executed (``CostTable.step_flops``), as in the env.
:func:`path_robust_loss` is the head's loss along one path (pre-training and co-training).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dynalay_env.model import CostTable, MainModel


def path_robust_loss(model: MainModel, x: Tensor, y: Tensor, path: list[int], label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of the head at the encoder state and after each layer of ``path``."""
    x_emb = model.encode(x)
    z = x_emb
    loss = F.cross_entropy(model.classify(z), y, label_smoothing=label_smoothing)
    for k in path:
        z = model.apply_layer(k, z, x_emb).state
        loss = loss + F.cross_entropy(model.classify(z), y, label_smoothing=label_smoothing)
    return loss / (len(path) + 1)


@torch.no_grad()
def depth_accuracies(model: MainModel, x: Tensor, y: Tensor, batch_size: int = 2048) -> list[float]:
    """Accuracy after the in-order prefix of each depth: index d = layers 1..d applied (0 = encoder)."""
    correct = torch.zeros(model.num_layers + 1, device=x.device)
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        x_emb = model.encode(xb)
        z = x_emb
        correct[0] += (model.classify(z).argmax(1) == yb).sum()
        for k in range(model.num_layers):
            z = model.apply_layer(k, z, x_emb).state
            correct[k + 1] += (model.classify(z).argmax(1) == yb).sum()
    return (correct / x.shape[0]).tolist()


@dataclass
class PathTable:
    """Every path of length ``0..max_steps`` evaluated on a set of examples.

    ``paths[p]`` is a tuple of 0-based layer indices; ``correct[p]`` ``[N]`` bool and ``flops[p]``
    ``[N]`` float64 (encoder + injections + executed iterations + the head at every visited state)
    are per example. ``iterations[k]`` collects the per-sample iteration counts of every application
    of layer k on every path, ``converged[k]`` whether each converged.
    """

    paths: list[tuple[int, ...]]
    correct: Tensor
    flops: Tensor
    iterations: dict[int, Tensor]
    converged: dict[int, Tensor]
    wall_seconds: float


@torch.no_grad()
def enumerate_paths(model: MainModel, x: Tensor, y: Tensor, max_steps: int, allow_repeats: bool = True,
                    costs: CostTable | None = None) -> PathTable:
    """Evaluate every layer sequence up to ``max_steps`` by depth-first search over shared prefixes,
    so each prefix is solved once: ``K + K^2 + ... + K^max_steps`` batched layer solves.
    ``allow_repeats=False`` skips paths that apply the same layer twice in a row (the paths an env
    with ``mask_repeats=True`` allows). Paths are charged from ``costs`` (default the model's
    FLOPs; a core's latency table under ``cost="latency"``)."""
    start = time.perf_counter()
    costs = model.cost_table() if costs is None else costs
    x_emb = model.encode(x)
    paths: list[tuple[int, ...]] = []
    correct: list[Tensor] = []
    flops: list[Tensor] = []
    iterations: dict[int, list[Tensor]] = {k: [] for k in range(model.num_layers)}
    converged: dict[int, list[Tensor]] = {k: [] for k in range(model.num_layers)}

    def visit(path: tuple[int, ...], z: Tensor, spent: Tensor) -> None:
        paths.append(path)
        correct.append((model.classify(z).argmax(1) == y).cpu())
        flops.append(spent.cpu())
        if len(path) == max_steps:
            return
        for k in range(model.num_layers):
            if not allow_repeats and path and path[-1] == k:
                continue
            result = model.apply_layer(k, z, x_emb)
            iterations[k].append(result.iterations.cpu())
            converged[k].append(result.converged.cpu())
            visit(path + (k,), result.state, spent + costs.step_cost(k, result))

    visit((), x_emb, torch.full((x.shape[0],), costs.reset_flops(), dtype=torch.float64, device=x.device))
    return PathTable(paths, torch.stack(correct), torch.stack(flops),
                     {k: torch.cat(v) for k, v in iterations.items()},
                     {k: torch.cat(v) for k, v in converged.items()}, time.perf_counter() - start)


def iteration_stats(iterations: Tensor, converged: Tensor, max_iter: int) -> dict[str, float]:
    """p5/p50/p95 of iterations among converged samples, their p95/p5 ratio, share at ``max_iter``."""
    conv = iterations[converged].double()
    if conv.numel() == 0:
        p5 = p50 = p95 = float("nan")
    else:
        p5, p50, p95 = (float(torch.quantile(conv, q)) for q in (0.05, 0.5, 0.95))
    return {"p5": p5, "p50": p50, "p95": p95, "p95_over_p5": p95 / p5 if p5 > 0 else float("nan"),
            "min": float(iterations.min()), "max": float(iterations.max()),
            "share_at_max_iter": float((iterations >= max_iter).double().mean()), "max_iter": max_iter}


#: What ``episode_compute``'s difficulty is: a model-relative measure that no policy's compute enters.
DIFFICULTY_DEFINITION = "share of the paths of length 0..max_steps that answer wrong"


def path_difficulty(correct: Tensor) -> np.ndarray:
    """Per-example difficulty ``[N]`` in [0, 1] from a :class:`PathTable`'s ``correct`` ``[P, N]``:
    the share of all enumerated paths that answer wrong (see ``DIFFICULTY_DEFINITION``)."""
    return (1.0 - correct.double().mean(dim=0)).cpu().numpy()


def episode_compute_stats(compute: np.ndarray, difficulty: np.ndarray | None = None) -> dict[str, Any]:
    """Spread of per-episode compute ``[N]`` (normalised: 1.0 = the full-depth path) and its Spearman
    correlation with ``difficulty`` ``[N]`` (None when not given or either side is constant).

    Adaptivity is measured per episode, through the path: one layer's iteration count barely
    varies under a global contraction, but an episode's compute does when the path does."""
    compute = np.asarray(compute, dtype=np.float64)
    if compute.ndim != 1 or compute.size == 0:
        raise ValueError(f"compute must be a non-empty 1-D array of per-episode values, got shape {compute.shape}")
    p5, p50, p95 = (float(v) for v in np.percentile(compute, [5, 50, 95]))
    rho = None
    if difficulty is not None:
        difficulty = np.asarray(difficulty, dtype=np.float64)
        if difficulty.shape != compute.shape:
            raise ValueError(f"difficulty must have the shape of compute {compute.shape}, got {difficulty.shape}")
        if np.ptp(compute) > 0 and np.ptp(difficulty) > 0:  # (np.std of equal floats can be > 0)
            from scipy.stats import spearmanr  # lazy: scipy comes with scikit-learn

            rho = float(spearmanr(difficulty, compute).statistic)
    return {"n": int(compute.size), "mean": float(compute.mean()), "p5": p5, "p50": p50, "p95": p95,
            "p95_over_p50": p95 / p50 if p50 > 0 else None, "p95_over_p5": p95 / p5 if p5 > 0 else None,
            "spearman_with_difficulty": rho, "difficulty": DIFFICULTY_DEFINITION if difficulty is not None else None}


def cheapest_correct(correct: Tensor, flops: Tensor) -> tuple[Tensor, Tensor]:
    """The oracles' one rule, shared by the path and prefix oracles here and by
    :func:`agents.curves.prefix_oracle`: per example (column of ``correct`` ``[P, N]`` bool and
    ``flops`` ``[P, N]``, one row per candidate, row 0 = exit at once), the row of the cheapest
    correct candidate (the first of equal ones), or row 0 where no candidate is right. Returns
    (solvable ``[N]`` bool, row ``[N]`` long)."""
    cost = torch.where(correct, flops, torch.full_like(flops, float("inf")))
    solvable = correct.any(dim=0)
    row = torch.where(solvable, cost.argmin(dim=0), torch.zeros_like(solvable, dtype=torch.long))
    return solvable, row


def prefix_oracle_by_order(table: PathTable, num_layers: int, max_steps: int) -> dict[str, float]:
    """The prefix oracle's accuracy (share of examples some prefix gets right, :func:`cheapest_correct`)
    along every order of the ``num_layers`` layers cut at ``max_steps``, keyed ``"1-2-3"`` (1-based).
    The best of them bounds every exit-only policy that runs the layers in one fixed order; the path
    oracle minus it is the *routing headroom*: what choosing the layer per input can add."""
    out = {}
    for order in itertools.permutations(range(num_layers), min(num_layers, max_steps)):
        rows = [table.paths.index(order[:d]) for d in range(len(order) + 1)]
        solvable, _ = cheapest_correct(table.correct[rows], table.flops[rows])
        out["-".join(str(a + 1) for a in order)] = float(solvable.double().mean())
    return out


def routing_headroom(table: PathTable, num_layers: int, max_steps: int) -> dict[str, Any]:
    """The path oracle, the prefix oracle along every fixed order (:func:`prefix_oracle_by_order`),
    the best order and the routing headroom (path oracle minus the best order's prefix oracle), as
    shares of the examples in ``table``."""
    path_oracle = float(table.correct.any(dim=0).double().mean())
    orders = prefix_oracle_by_order(table, num_layers, max_steps)
    best = max(orders, key=orders.__getitem__)
    return {"path_oracle_accuracy": path_oracle, "prefix_oracle_by_order": orders, "best_fixed_order": best,
            "best_order_prefix_oracle_accuracy": orders[best], "routing_headroom": path_oracle - orders[best]}


def oracle_episode_compute(table: PathTable, normalizer: float, prefix_only: bool = False,
                           num_layers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-example (correct ``[N]`` bool, normalised compute ``[N]``) of the *path oracle* (cheapest
    correct path in ``table``) or, with ``prefix_only``, the *prefix oracle* (cheapest correct prefix
    of the full-depth order 1..K; needs ``num_layers``). Where no candidate is right the oracle
    exits at once (the encoder path), as ``OraclePolicy`` does.

    The prefix oracle here and :func:`agents.curves.prefix_oracle` are one rule
    (:func:`cheapest_correct`) on the same FLOPs; this one reads the pre-training report's path
    table and gives env compute only, that one reads a recorded pass and gives full episode records
    (decision FLOPs, when charged, included)."""
    if prefix_only:
        if num_layers is None:
            raise ValueError("the prefix oracle needs num_layers")
        rows = [table.paths.index(tuple(range(d))) for d in range(num_layers + 1) if tuple(range(d)) in table.paths]
    else:
        rows = [table.paths.index(())] + [p for p in range(len(table.paths)) if table.paths[p] != ()]
    correct, flops = table.correct[rows], table.flops[rows]
    solvable, row = cheapest_correct(correct, flops)
    best = flops.gather(0, row[None, :])[0]
    return solvable.cpu().numpy(), (best / normalizer).cpu().numpy()
