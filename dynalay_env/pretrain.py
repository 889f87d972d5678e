"""Path-robust pre-training of the main model, path enumeration, and the pre-training report.

Pre-training samples a random layer sequence of length ``max_steps`` for every mini-batch and
supervises the shared head at every visited state (the encoder state and each prefix), so every
path of length ``0..max_steps`` is one the model has been trained on: the agent never chooses among
paths the model never saw. Early stopping keeps the weights with the best ``val`` score.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dynalay_env.atomic import atomic_write_json
from dynalay_env.data import Dataset, load_dataset
from dynalay_env.model import (
    MainModel,
    ModelConfig,
    default_config,
    load_checkpoint,
    provenance_hash,
    provenance_of,
    save_checkpoint,
)

CHECKPOINT_NAME = "main_model.pt"
REPORT_NAME = "pretrain.json"


@dataclass(frozen=True)
class PretrainConfig:
    """Optimisation settings. ``epochs`` is a maximum; ``patience`` epochs without a better ``val``
    score stop early. ``max_steps``: the longest path sampled (the env's ``max_steps``)."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    warmup: float = 0.3  # share of the one-cycle schedule spent raising the learning rate to ``lr``
    weight_decay: float = 1e-4
    max_steps: int = 4
    patience: int = 10
    seed: int = 0
    device: str = "cpu"
    label_smoothing: float = 0.0
    input_noise: float = 0.0  # std of Gaussian noise added to training inputs (augmentation)
    # Standardise inputs per channel with model_train's mean/std, stored in the model (see
    # MainModel.set_input_normalization). None = for images (3-D inputs) only: the vector and
    # signal datasets are already on a unit scale and their recipes were tuned without it.
    standardize_inputs: bool | None = None
    # At most this many training examples in all (epochs x model_train size): fewer epochs on big
    # datasets, so that pre-training keeps to a time budget. None = no limit.
    example_budget: int | None = None
    # At least this many optimiser steps in all: more epochs on small datasets, so that a recipe
    # defined in epochs does not starve them of updates. 0 = no minimum.
    min_steps: int = 0
    # At least about this many optimiser steps per epoch: smaller batches (never larger than
    # ``batch_size``) on small datasets, so that each epoch moves the model as far as on a bigger
    # set. 0 = always ``batch_size``.
    min_steps_per_epoch: int = 0

    def batch_size_for(self, num_train: int) -> int:
        """The batch size used on ``num_train`` model_train examples: ``batch_size``, or smaller when
        that would give fewer than ``min_steps_per_epoch`` batches per epoch."""
        if self.min_steps_per_epoch <= 0:
            return self.batch_size
        return max(1, min(self.batch_size, math.ceil(num_train / self.min_steps_per_epoch)))

    def steps_per_epoch(self, num_train: int) -> int:
        """Optimiser steps (batches) per epoch on ``num_train`` model_train examples."""
        return max(1, math.ceil(num_train / self.batch_size_for(num_train)))

    def epochs_for(self, num_train: int) -> int:
        """Epochs to run on ``num_train`` model_train examples: ``epochs``, more when that gives
        fewer than ``min_steps`` optimiser steps, and fewer (>= 1) when ``example_budget`` would be
        exceeded (the budget wins)."""
        epochs = max(self.epochs, math.ceil(self.min_steps / self.steps_per_epoch(num_train)))
        if self.example_budget is None:
            return epochs
        return max(1, min(epochs, self.example_budget // max(num_train, 1)))


#: Training examples the file image recipes may show the model (epochs x model_train size): about 15
#: minutes on 2 CPU cores, measured at full MNIST scale (see benchmarks/pretrain_full_scale.py). A
#: small file set (e.g. 2,000 model_train images) still gets all its epochs.
FULL_SCALE_EXAMPLE_BUDGET = 240_000

#: Images: batches of 64 and a short warm-up (3 % of the one-cycle schedule), so that a few thousand
#: images give enough optimiser steps early on; inputs are standardised (``standardize_inputs``).
#: Small sets get the optimiser steps of 2,000 images (32 batches of 64 per epoch, 960 in 30 epochs):
#: smaller batches for at least 31 steps per epoch (``min_steps_per_epoch``) and more epochs for at
#: least 960 steps in all (``min_steps``); 2,000 or more model_train images keep batches of 64 and
#: exactly 30 epochs (and the full-size sets their ``example_budget``).
IMAGE_RECIPE: dict[str, Any] = {"batch_size": 64, "warmup": 0.03, "epochs": 30, "patience": 10,
                                "min_steps": 960, "min_steps_per_epoch": 31}

#: Per-dataset training recipes (fields of PretrainConfig) used when no config is given. Digits has
#: 719 training examples: small batches, input noise and label smoothing keep it from overfitting.
#: The full-size image sets (30,000 model_train images by the file rule) get fewer epochs so that
#: pre-training ends within about 15 minutes on 2 CPU cores (see docs/training.md, "Real images").
DATASET_RECIPES: dict[str, dict[str, Any]] = {
    "digits": {"batch_size": 32, "input_noise": 0.1, "label_smoothing": 0.1},
    "mnist5k": IMAGE_RECIPE,
    "mnist5k_noisy_labels": IMAGE_RECIPE,
    "mnist5k_corrupted": IMAGE_RECIPE,
    "mnist": {**IMAGE_RECIPE, "example_budget": FULL_SCALE_EXAMPLE_BUDGET},
    "fashion_mnist": {**IMAGE_RECIPE, "example_budget": FULL_SCALE_EXAMPLE_BUDGET},
    "cifar10": {**IMAGE_RECIPE, "example_budget": FULL_SCALE_EXAMPLE_BUDGET},
}


def recipe_for(dataset_name: str) -> PretrainConfig:
    """The default :class:`PretrainConfig` for a dataset (see ``DATASET_RECIPES``)."""
    return PretrainConfig(**DATASET_RECIPES.get(dataset_name, {}))


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N``; a clear error when CUDA is asked for but absent."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unsupported device {device!r}; valid: 'cpu', 'cuda', 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; valid: 'cpu', 'cuda', 'cuda:N'")
    return dev


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
def enumerate_paths(model: MainModel, x: Tensor, y: Tensor, max_steps: int, allow_repeats: bool = True) -> PathTable:
    """Evaluate every layer sequence up to ``max_steps`` by depth-first search over shared prefixes,
    so each prefix is solved once: ``K + K^2 + ... + K^max_steps`` batched layer solves.
    ``allow_repeats=False`` skips paths that apply the same layer twice in a row (the paths an env
    with ``mask_repeats=True`` allows)."""
    start = time.perf_counter()
    costs = model.cost_table()
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
            visit(path + (k,), result.state, spent + costs.step_flops(k, result.flops))

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


def input_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std ``[C]`` of inputs ``x`` ``[N, C, ...]`` (over examples and space);
    a constant channel gets std 1 so that standardising it never divides by zero."""
    dims = [d for d in range(x.dim()) if d != 1]
    mean = x.double().mean(dim=dims)
    std = x.double().std(dim=dims)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float(), std.float()


def pretrain(dataset: Dataset, model_config: ModelConfig | None = None, config: PretrainConfig = PretrainConfig(),
             progress: bool = True) -> tuple[MainModel, list[dict[str, float]]]:
    """Train a main model on ``model_train`` with early stopping on ``val``.

    Returns the model (best ``val`` weights, operator norms converged, compute normaliser calibrated
    on ``val``) and the per-epoch history.
    """
    from tqdm.auto import tqdm

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model_config = model_config or default_config(dataset.input_shape, dataset.num_classes)
    model = MainModel(model_config).to(device)
    x_train, y_train = dataset.as_tensors("model_train", device)
    standardize = config.standardize_inputs
    if standardize is None:
        standardize = len(dataset.input_shape) == 3
    if standardize:
        model.set_input_normalization(*input_statistics(x_train))
    x_val, y_val = dataset.as_tensors("val", device)
    batch_size = config.batch_size_for(x_train.shape[0])
    steps_per_epoch = config.steps_per_epoch(x_train.shape[0])
    epochs = config.epochs_for(x_train.shape[0])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=epochs * steps_per_epoch,
                                                   pct_start=config.warmup)
    best_score, best_state, stale = -1.0, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    bar = tqdm(range(epochs), desc=f"pretrain {dataset.name}", disable=not progress, unit="epoch")
    start = time.perf_counter()
    for epoch in bar:
        model.train()
        order = torch.randperm(x_train.shape[0], generator=generator).to(device)
        total_loss = 0.0
        for i in range(0, x_train.shape[0], batch_size):
            idx = order[i:i + batch_size]
            path = torch.randint(0, model.num_layers, (config.max_steps,), generator=generator).tolist()
            x_batch = x_train[idx]
            if config.input_noise > 0:
                noise = torch.randn(x_batch.shape, generator=generator).to(device)
                x_batch = x_batch + config.input_noise * noise
            loss = path_robust_loss(model, x_batch, y_train[idx], path, config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * idx.numel()
        model.eval()
        accuracies = depth_accuracies(model, x_val, y_val)
        # Score every depth, not only the deepest: the agent may exit at any of them.
        score = float(np.mean(accuracies))
        history.append({"epoch": epoch, "loss": total_loss / x_train.shape[0], "val_score": score,
                        "val_full_depth_accuracy": accuracies[-1], "seconds": time.perf_counter() - start})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val_full=f"{accuracies[-1]:.3f}")
        if score > best_score:
            best_score, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    model.refresh_operator_norms(n_power_iterations=200)
    model.calibrate_normalizer(x_val)
    return model, history


def pretrain_report(model: MainModel, dataset: Dataset, max_steps: int, device: torch.device) -> dict[str, Any]:
    """The figures of ``pretrain.json`` on the ``test`` split (see docs/results.md)."""
    x_test, y_test = dataset.as_tensors("test", device)
    by_depth = depth_accuracies(model, x_test, y_test)
    table = enumerate_paths(model, x_test, y_test, max_steps)
    full_depth = tuple(range(model.num_layers))
    full_iterations = {}
    with torch.no_grad():
        x_emb = model.encode(x_test)
        z = x_emb
        for k in full_depth:
            result = model.apply_layer(k, z, x_emb)
            z = result.state
            full_iterations[k] = (result.iterations.cpu(), result.converged.cpu())
    costs = model.cost_table()
    difficulty = path_difficulty(table.correct)
    oracle_correct, oracle_compute = oracle_episode_compute(table, costs.normalizer)
    prefix_correct, prefix_compute = oracle_episode_compute(table, costs.normalizer, prefix_only=True,
                                                            num_layers=model.num_layers)
    lipschitz = {}
    for k, layer in enumerate(model.layers):
        try:
            lipschitz[f"layer{k + 1}"] = layer.lipschitz_bound()
        except ValueError:  # operator too large to write out densely (big images): not measured
            lipschitz[f"layer{k + 1}"] = None
    return {
        "dataset": dataset.name,
        "split": "test",
        "n_examples": int(y_test.shape[0]),
        "full_depth_accuracy": by_depth[-1],
        "accuracy_by_depth": by_depth,
        "oracle_accuracy": float(table.correct.any(dim=0).double().mean()),
        "prefix_oracle_accuracy": float(prefix_correct.mean()),
        "oracle_max_steps": max_steps,
        # Adaptivity per episode: the oracles' compute spread and how it follows difficulty.
        "episode_compute": {"oracle": episode_compute_stats(oracle_compute, difficulty),
                            "prefix_oracle": episode_compute_stats(prefix_compute, difficulty)},
        "oracle_paths_searched": len(table.paths),
        "oracle_search_seconds": table.wall_seconds,
        "iterations_full_depth_path": {
            f"layer{k + 1}": iteration_stats(*full_iterations[k], model.layers[k].max_iter) for k in full_depth},
        "iterations_all_paths": {
            f"layer{k + 1}": iteration_stats(table.iterations[k], table.converged[k], model.layers[k].max_iter)
            for k in full_depth},
        "costs_flops": costs.pieces(),
        "compute_normalizer_flops": costs.normalizer,
        # Exact ||W_up|| * ||W_down|| of each layer's map (dense SVD): the contraction that holds.
        "lipschitz": {"target": model.config.lipschitz, "measured": lipschitz},
    }


def run_pretraining(dataset_name: str = "mnist1d", run_dir: str | Path = "runs/pretrain",
                    data_root: str | Path | None = None, seed: int | None = None, device: str | None = None,
                    config: PretrainConfig | None = None, model_overrides: dict[str, Any] | None = None,
                    progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Pre-train on a registered dataset and write ``main_model.pt`` and ``pretrain.json`` to
    ``run_dir``. ``seed`` / ``device``, when given, override the config's. Returns the checkpoint
    path and the report."""
    config = config or recipe_for(dataset_name)
    overrides = {k: v for k, v in (("seed", seed), ("device", device)) if v is not None}
    config = PretrainConfig(**{**asdict(config), **overrides})
    dev = resolve_device(config.device)
    dataset = load_dataset(dataset_name, data_root=data_root)
    model_config = default_config(dataset.input_shape, dataset.num_classes, **(model_overrides or {}))
    start = time.perf_counter()
    model, history = pretrain(dataset, model_config, config, progress=progress)
    train_seconds = time.perf_counter() - start
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT_NAME
    report = pretrain_report(model, dataset, config.max_steps, dev)
    dataset_meta = {"name": dataset.name, "fingerprint": dataset.fingerprint,
                    "input_shape": list(dataset.input_shape), "num_classes": dataset.num_classes}
    provenance = save_checkpoint(checkpoint, model, dataset_meta, extra={"pretrain": asdict(config)})
    report.update({"provenance": provenance, "model_provenance": provenance_of(model, dataset),
                   "train_seconds": train_seconds, "epochs_run": len(history),
                   "pretrain_config": asdict(config), "model_config": model_config.to_dict(),
                   "history": history, "checkpoint": str(checkpoint)})
    atomic_write_json(run_dir / REPORT_NAME, report)
    return checkpoint, report


def load_pretrained(path: str | Path, dataset: Dataset | None = None, device: str = "cpu") -> tuple[MainModel, str]:
    """Load a main model for ``dataset`` (checked by name); returns (model, provenance)."""
    ckpt = load_checkpoint(path, expected_dataset=dataset.name if dataset else None, device=resolve_device(device))
    return ckpt.model, provenance_hash(ckpt.model, ckpt.dataset["fingerprint"])
