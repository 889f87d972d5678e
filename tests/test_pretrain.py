"""Tests of pre-training, path enumeration and the pre-training report (dynalay_env/pretrain.py).

All but one test use the embedded ``digits`` dataset with a few epochs (seconds on 2 cores). The
``slow`` test runs the default recipe and checks the acceptance criterion (full-depth accuracy on
digits >= 0.97).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dynalay_env.datasets import make_synthetic
from dynalay_env.device import resolve_device
from dynalay_env.model import CheckpointError, MainModel
from dynalay_env.paths import depth_accuracies, enumerate_paths, iteration_stats, path_robust_loss
from dynalay_env.pretrain import (
    CHECKPOINT_NAME,
    REPORT_NAME,
    PretrainConfig,
    load_pretrained,
    pretrain,
    recipe_for,
    run_pretraining,
)
from tests import learning


def all_paths(num_layers: int, max_steps: int) -> set[tuple[int, ...]]:
    return {p for n in range(max_steps + 1) for p in itertools.product(range(num_layers), repeat=n)}


# --------------------------------------------------------------------------------------------------
# pretrain()
# --------------------------------------------------------------------------------------------------


def test_pretrain_returns_a_usable_model(tiny_digits_model: MainModel, digits) -> None:
    model = tiny_digits_model
    assert isinstance(model, MainModel)
    assert not model.training
    assert model.config.family == "mlp" and model.input_shape == (64,)
    # The operator norms are converged at the end of pre-training: every layer is a contraction.
    for layer in model.layers:
        assert layer.lipschitz_bound() <= model.config.lipschitz * 1.001
    # The compute normaliser is calibrated on `val`: the mean full-depth FLOPs there.
    x_val, _ = digits.as_tensors("val")
    assert model.cost_table().normalizer > 0
    assert model.cost_table().normalizer == pytest.approx(float(model.full_depth_flops(x_val).mean()), rel=1e-9)
    # Learned something within the tiny budget (chance is 0.1).
    x, y = digits.as_tensors("test")
    assert min(depth_accuracies(model, x, y)) > 0.3


def test_pretrain_history_and_determinism(digits) -> None:
    config = PretrainConfig(epochs=2, max_steps=2, seed=3)
    model_a, history_a = pretrain(digits, config=config, progress=False)
    model_b, history_b = pretrain(digits, config=config, progress=False)
    assert len(history_a) == 2
    assert set(history_a[0]) >= {"epoch", "loss", "val_score", "val_full_depth_accuracy"}
    assert all(h["loss"] > 0 for h in history_a)
    def without_time(history):  # wall seconds differ between runs; everything else must not
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert without_time(history_a) == without_time(history_b)
    assert 0 < history_a[0]["seconds"] <= history_a[1]["seconds"]
    x, _ = digits.as_tensors("test")
    with torch.no_grad():
        assert torch.equal(model_a(x[:20]), model_b(x[:20]))


def test_path_robust_loss_supervises_every_visited_state(digits) -> None:
    torch.manual_seed(0)
    from dynalay_env.model import default_config

    model = MainModel(default_config((64,), 10, channels=16, head_hidden=16)).train()
    x, y = digits.as_tensors("model_train")
    x, y = x[:32], y[:32]
    path = [2, 0]
    loss = path_robust_loss(model, x, y, path)

    model.eval()  # same weights (the norm estimates move only in train mode), so the manual value matches
    with torch.no_grad():
        x_emb = model.encode(x)
        z1 = model.apply_layer(2, x_emb, x_emb).state
        z2 = model.apply_layer(0, z1, x_emb).state
        expected = sum(F.cross_entropy(model.classify(z), y) for z in (x_emb, z1, z2)) / 3
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-4)

    loss.backward()
    assert model.encoder.weight.grad is not None and model.head_out.weight.grad is not None
    assert model.layers[0].up.weight.grad is not None and model.layers[2].up.weight.grad is not None
    assert model.layers[1].up.weight.grad is None, "a layer off the path must get no gradient"


# --------------------------------------------------------------------------------------------------
# depth_accuracies / enumerate_paths
# --------------------------------------------------------------------------------------------------


def test_depth_accuracies(tiny_digits_model: MainModel, digits) -> None:
    model = tiny_digits_model
    x, y = digits.as_tensors("test")
    accuracies = depth_accuracies(model, x, y)
    assert len(accuracies) == model.num_layers + 1
    # Same values in small batches, and equal to the in-order prefixes run by hand.
    assert depth_accuracies(model, x, y, batch_size=50) == pytest.approx(accuracies, abs=1e-6)
    with torch.no_grad():
        for depth in (0, model.num_layers):
            hand = float((model(x, path=list(range(depth))).argmax(1) == y).double().mean())
            assert accuracies[depth] == pytest.approx(hand, abs=1e-6)


def test_enumerate_paths(tiny_digits_model: MainModel, digits) -> None:
    model = tiny_digits_model
    k = model.num_layers
    x, y = digits.as_tensors("test")
    table = enumerate_paths(model, x, y, max_steps=2)
    n = x.shape[0]
    assert len(table.paths) == 1 + k + k**2
    assert set(table.paths) == all_paths(k, 2)
    assert table.correct.shape == (len(table.paths), n) and table.correct.dtype == torch.bool
    assert table.flops.shape == (len(table.paths), n) and table.flops.dtype == torch.float64
    # Every layer is applied from every state of depth < max_steps: 1 + K solves of N samples.
    for layer in range(k):
        assert table.iterations[layer].shape == (n * (1 + k),)
        assert table.converged[layer].shape == (n * (1 + k),)
        assert int(table.iterations[layer].min()) >= 1
    assert table.wall_seconds > 0

    costs = model.cost_table()
    empty = table.paths.index(())
    assert torch.equal(table.flops[empty], torch.full((n,), float(costs.encoder + costs.head), dtype=torch.float64))
    with torch.no_grad():
        for path in [(2,), (1, 0), (2, 2)]:
            row = table.paths.index(path)
            assert torch.equal(table.correct[row], model(x, path=list(path)).argmax(1) == y)
            # A longer path costs more than its prefix, sample by sample.
            assert bool((table.flops[row] > table.flops[table.paths.index(path[:-1])]).all())

    # The oracle (some path is right) is at least as good as every single path.
    oracle = float(table.correct.any(0).double().mean())
    path_accuracies = table.correct.double().mean(1)
    assert oracle >= float(path_accuracies.max())


def test_full_depth_path_flops_match_full_depth_flops(tiny_digits_model: MainModel, digits) -> None:
    model = tiny_digits_model
    x, y = digits.as_tensors("test")
    x, y = x[:60], y[:60]
    table = enumerate_paths(model, x, y, max_steps=model.num_layers)
    assert len(table.paths) == sum(model.num_layers**d for d in range(model.num_layers + 1))
    row = table.paths.index(tuple(range(model.num_layers)))
    torch.testing.assert_close(table.flops[row], model.full_depth_flops(x), rtol=1e-12, atol=0)


def test_iteration_stats() -> None:
    iterations = torch.arange(1, 21)
    converged = iterations < 20  # the sample at max_iter did not converge
    stats = iteration_stats(iterations, converged, max_iter=20)
    conv = iterations[converged].double()
    assert stats["p50"] == pytest.approx(float(torch.quantile(conv, 0.5)))
    assert stats["p95_over_p5"] == pytest.approx(stats["p95"] / stats["p5"])
    assert (stats["min"], stats["max"], stats["max_iter"]) == (1.0, 20.0, 20)
    assert stats["share_at_max_iter"] == pytest.approx(1 / 20)
    none = iteration_stats(torch.full((4,), 5), torch.zeros(4, dtype=torch.bool), max_iter=5)
    assert none["p50"] != none["p50"]  # NaN when nothing converged
    assert none["share_at_max_iter"] == 1.0


def test_epochs_for_min_steps_and_example_budget() -> None:
    plain = PretrainConfig(epochs=30, batch_size=64)
    assert plain.epochs_for(674) == 30 and plain.epochs_for(60_000) == 30
    # min_steps: enough epochs for that many optimiser steps (674 images = 11 batches of 64).
    small = PretrainConfig(epochs=30, batch_size=64, min_steps=960)
    assert small.steps_per_epoch(674) == 11
    assert small.epochs_for(674) == 88  # ceil(960 / 11)
    assert small.epochs_for(1000) == 60  # 16 steps per epoch
    assert small.epochs_for(2000) == 30 and small.epochs_for(2500) == 30  # epochs already give >= 960
    # example_budget caps the epochs, min_steps or not, and never below 1.
    capped = PretrainConfig(epochs=30, batch_size=64, min_steps=960, example_budget=240_000)
    assert capped.epochs_for(674) == 88  # the budget (356 epochs of 674) does not bind
    assert capped.epochs_for(30_000) == 8 and PretrainConfig(epochs=30, example_budget=240_000).epochs_for(30_000) == 8
    assert PretrainConfig(epochs=30, min_steps=10_000, example_budget=5_000).epochs_for(1_000) == 5
    assert capped.epochs_for(500_000) == 1


def test_min_steps_per_epoch_shrinks_batches_of_small_sets_only() -> None:
    config = PretrainConfig(batch_size=64, min_steps_per_epoch=31)
    assert config.batch_size_for(674) == 22 and config.steps_per_epoch(674) == 31
    assert config.batch_size_for(2000) == 64 and config.steps_per_epoch(2000) == 32
    assert config.batch_size_for(60_000) == 64 and config.batch_size_for(5) == 1
    assert PretrainConfig(batch_size=64).batch_size_for(674) == 64  # 0 = off
    # epochs_for counts the steps of the smaller batches.
    assert PretrainConfig(epochs=30, batch_size=64, min_steps=960, min_steps_per_epoch=31).epochs_for(674) == 31


def test_image_recipes_keep_their_epochs_on_2000_and_2500_images() -> None:
    """min_steps / min_steps_per_epoch change nothing for the sets the image recipe was measured on;
    small sets get about as many optimiser steps as 2,000 images, per epoch and in all."""
    for name in ("mnist", "mnist5k", "fashion_mnist", "cifar10"):
        config = recipe_for(name)
        assert config.epochs_for(2000) == config.epochs_for(2500) == 30
        assert config.batch_size_for(2000) == config.batch_size_for(2500) == 64
        without = PretrainConfig(**{**config.__dict__, "min_steps": 0, "min_steps_per_epoch": 0})
        for n in (2000, 2500, 30_000, 50_000):
            assert config.epochs_for(n) == without.epochs_for(n)
            assert config.steps_per_epoch(n) == without.steps_per_epoch(n)
        steps_2000 = config.epochs_for(2000) * config.steps_per_epoch(2000)
        for n in (674, 1000, 1500):
            assert config.steps_per_epoch(n) >= 31
            assert steps_2000 <= config.epochs_for(n) * config.steps_per_epoch(n) <= steps_2000 + 32


# --------------------------------------------------------------------------------------------------
# run_pretraining / load_pretrained
# --------------------------------------------------------------------------------------------------


REPORT_KEYS = {"full_depth_accuracy", "accuracy_by_depth", "oracle_accuracy", "iterations_full_depth_path",
               "iterations_all_paths", "provenance", "train_seconds"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    run_dir = tmp_path_factory.mktemp("pretrain_run")
    config = PretrainConfig(epochs=3, max_steps=2)
    checkpoint, report = run_pretraining("digits", run_dir=run_dir, config=config, progress=False)
    return run_dir, checkpoint, report


def test_run_pretraining_writes_checkpoint_and_report(quick_run, digits) -> None:
    run_dir, checkpoint, report = quick_run
    assert checkpoint == run_dir / CHECKPOINT_NAME
    assert sorted(os.listdir(run_dir)) == sorted([CHECKPOINT_NAME, REPORT_NAME])  # no temp files left
    on_disk = json.loads((run_dir / REPORT_NAME).read_text())
    assert REPORT_KEYS <= set(on_disk)
    assert on_disk["provenance"] == report["provenance"]
    assert on_disk["dataset"] == "digits" and on_disk["split"] == "test"
    assert on_disk["n_examples"] == digits.num_examples("test")

    k = 3
    by_depth = on_disk["accuracy_by_depth"]
    assert len(by_depth) == k + 1
    assert on_disk["full_depth_accuracy"] == by_depth[-1]
    assert on_disk["oracle_paths_searched"] == 1 + k + k**2
    # In-order prefixes of length <= max_steps are among the searched paths.
    assert on_disk["oracle_accuracy"] >= max(by_depth[: 2 + 1]) - 1e-12
    assert on_disk["oracle_accuracy"] <= 1.0
    for key in ("iterations_full_depth_path", "iterations_all_paths"):
        assert set(on_disk[key]) == {"layer1", "layer2", "layer3"}
        for stats in on_disk[key].values():
            assert {"p5", "p50", "p95", "p95_over_p5", "share_at_max_iter"} <= set(stats)
            assert 1 <= stats["min"] <= stats["max"] <= stats["max_iter"]
    assert on_disk["train_seconds"] > 0
    assert on_disk["epochs_run"] == 3
    assert on_disk["compute_normalizer_flops"] > 0
    measured = on_disk["lipschitz"]["measured"]
    assert all(v <= on_disk["lipschitz"]["target"] * 1.001 for v in measured.values())


def test_checkpoint_of_a_run_loads_for_its_dataset(quick_run, digits) -> None:
    _, checkpoint, report = quick_run
    model, provenance = load_pretrained(checkpoint, digits)
    assert provenance == report["provenance"]
    x, y = digits.as_tensors("test")
    assert depth_accuracies(model, x, y) == pytest.approx(report["accuracy_by_depth"], abs=1e-9)
    assert model.cost_table().normalizer == pytest.approx(report["compute_normalizer_flops"], rel=1e-12)
    # Without a dataset the name is not checked.
    _, provenance_unchecked = load_pretrained(checkpoint)
    assert provenance_unchecked == provenance


def test_checkpoint_of_a_run_refuses_another_dataset(quick_run) -> None:
    _, checkpoint, _ = quick_run
    other = make_synthetic(sizes=(8, 8, 8, 8), length=8)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(checkpoint, other)
    assert "'digits'" in str(info.value) and "'synthetic'" in str(info.value)


def test_run_pretraining_keeps_the_seed_of_its_config(tmp_path: Path) -> None:
    _, report = run_pretraining("digits", run_dir=tmp_path, config=PretrainConfig(epochs=1, max_steps=1, seed=7),
                                progress=False)
    assert report["pretrain_config"]["seed"] == 7


# --------------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_clear_error(device: str) -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device(device)


def test_cpu_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_unsupported_but_known_device_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="'cpu', 'cuda', 'cuda:N'"):
        resolve_device("meta")


def test_unknown_device_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'cpu', 'cuda', 'cuda:N'"):
        resolve_device("tpu")


def test_unknown_device_raises() -> None:
    with pytest.raises((ValueError, RuntimeError), match="tpu"):
        resolve_device("tpu")


# --------------------------------------------------------------------------------------------------
# Acceptance (slow)
# --------------------------------------------------------------------------------------------------


@pytest.mark.learning
@pytest.mark.slow
def test_default_pretraining_on_digits_reaches_acceptance_accuracy(tmp_path: Path, capsys) -> None:
    start = time.perf_counter()
    _, report = run_pretraining("digits", run_dir=tmp_path, progress=False)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n[default digits pretraining] {elapsed:.1f} s, full_depth_accuracy="
              f"{report['full_depth_accuracy']:.4f}, by depth={[round(a, 4) for a in report['accuracy_by_depth']]}, "
              f"oracle={report['oracle_accuracy']:.4f}, epochs={report['epochs_run']}")
    # benchmarks/results/learning_margins.md (pretrain_digits): seeds 0-4 under two kernel settings.
    assert report["full_depth_accuracy"] >= learning.DIGITS_FULL_DEPTH_ACCURACY



def test_enumerate_paths_without_repeats_skips_immediate_repeats(tiny_digits_model, digits) -> None:
    x, y = digits.as_tensors("val")
    table = enumerate_paths(tiny_digits_model, x[:20], y[:20], max_steps=3, allow_repeats=False)
    k = tiny_digits_model.num_layers
    assert len(table.paths) == 1 + k + k * (k - 1) + k * (k - 1) ** 2
    assert all(a != b for p in table.paths for a, b in zip(p, p[1:], strict=False))
