"""Path-robust pre-training of the main model and its report (paths and oracles: ``dynalay_env.paths``).

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
from torch import Tensor
from tqdm.auto import tqdm

from dynalay_env.atomic import atomic_write_json
from dynalay_env.datasets import Dataset, load_dataset
from dynalay_env.device import resolve_device
from dynalay_env.model import (
    MainModel,
    ModelConfig,
    default_config,
    load_checkpoint,
    provenance_hash,
    provenance_of,
    save_checkpoint,
)
from dynalay_env.options import EnvOptions
from dynalay_env.paths import (
    depth_accuracies,
    enumerate_paths,
    episode_compute_stats,
    iteration_stats,
    oracle_episode_compute,
    path_difficulty,
    path_robust_loss,
    routing_headroom,
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
    max_steps: int = EnvOptions.default("max_steps")
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


#: Training examples the file image recipes may show the model (epochs x model_train size), chosen
#: for a time budget at full MNIST scale (benchmarks/results/pretrain_full_scale_cpu.json). A small
#: file set (e.g. 2,000 model_train images) still gets all its epochs.
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
#: pre-training keeps to a time budget (benchmarks/results/pretrain_full_scale_cpu.json).
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
        # What choosing the layer per input can add over the best fixed order (both oracles, test).
        "routing": routing_headroom(table, model.num_layers, max_steps),
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
