"""``agents.inference.AdaptiveClassifier``: adaptive inference on raw inputs gives exactly what the
env's sequential evaluation gives, and loads from a training run folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.baselines import ConfidencePolicy, FixedPathPolicy, StablePredictionPolicy
from agents.evaluate import run_policy
from agents.inference import POLICY_OPTIONS, AdaptiveClassifier, InferenceResult
from agents.training import load_run
from dynalay_env.options import EnvOptions
from tests.agent_fixtures import digits_dataset, digits_model, encoder_stats, seq_core, trained_ppo_run
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)


@pytest.fixture(scope="module")
def val_inputs():
    return digits_dataset().as_tensors("val")


@pytest.fixture(scope="module")
def tau(val_inputs):
    return float(np.median(encoder_stats(val_inputs[0])[0]))


def assert_same(result: InferenceResult, records) -> None:
    np.testing.assert_array_equal(result.prediction, records.prediction)
    np.testing.assert_array_equal(result.steps, records.steps)
    np.testing.assert_array_equal(result.path, records.path)
    np.testing.assert_allclose(result.flops, records.flops, rtol=1e-12)
    np.testing.assert_allclose(result.compute, records.compute, rtol=1e-12)


@pytest.mark.parametrize("batch_size", [1024, 50])
def test_predictions_and_compute_equal_the_env_evaluation(val_inputs, tau, batch_size):
    x, _ = val_inputs
    result = AdaptiveClassifier(digits_model(), ConfidencePolicy(tau), batch_size=batch_size).predict(x)
    records = run_policy(seq_core(64, "val"), ConfidencePolicy(tau))
    assert 0 < (records.steps == 0).mean() < 1  # a mix of depths
    assert result.prediction.shape == result.compute.shape == (x.shape[0],)
    assert_same(result, records)


@pytest.mark.parametrize("batch_size", [1024, 70])
def test_a_stateful_baseline_sees_episode_starts_as_in_the_env(val_inputs, batch_size):
    """StablePredictionPolicy counts unchanged predictions from each episode's start: the classifier
    must flag starts only at the first decision of its inputs, as the env's evaluation does."""
    x, _ = val_inputs
    result = AdaptiveClassifier(digits_model(), StablePredictionPolicy(1), batch_size=batch_size).predict(x)
    records = run_policy(seq_core(64, "val"), StablePredictionPolicy(1))
    assert 0 < (records.steps < 3).mean() < 1
    assert_same(result, records)


def test_numpy_inputs_are_accepted(val_inputs, tau):
    x, _ = val_inputs
    clf = AdaptiveClassifier(digits_model(), ConfidencePolicy(tau))
    np.testing.assert_array_equal(clf.predict(x[:40].numpy()).prediction, clf.predict(x[:40]).prediction)


def test_options_shape_the_episodes(val_inputs):
    x, _ = val_inputs
    result = AdaptiveClassifier(digits_model(), ConfidencePolicy(1.01), max_steps=2).predict(x[:30])
    assert (result.steps == 2).all() and result.path.shape == (30, 2)
    np.testing.assert_array_equal(result.path, np.tile([1, 2], (30, 1)))


def test_options_are_the_envs_own(val_inputs):
    """Defaults and checks come from EnvOptions; options that do not shape a policy are refused."""
    clf = AdaptiveClassifier(digits_model(), ConfidencePolicy(0.5))
    assert clf.options == {k: EnvOptions.default(k) for k in POLICY_OPTIONS}
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
        AdaptiveClassifier(digits_model(), ConfidencePolicy(0.5), max_steps=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lambda_compute'"):
        AdaptiveClassifier(digits_model(), ConfidencePolicy(0.5), lambda_compute=0.2)


def test_full_depth_equals_the_model_forward(val_inputs):
    x, _ = val_inputs
    clf = AdaptiveClassifier(digits_model(), ConfidencePolicy(0.5), batch_size=100)
    with torch.no_grad():
        expected = digits_model()(x).argmax(1)
    assert torch.equal(clf.predict_full_depth(x), expected)
    fixed = AdaptiveClassifier(digits_model(), FixedPathPolicy((1, 2, 3))).predict(x)
    np.testing.assert_array_equal(fixed.prediction, expected.numpy())


@pytest.mark.parametrize("shape", [(10, 63), (64,), (10, 8, 8)])
def test_wrong_input_shape_says_what_was_expected(shape):
    clf = AdaptiveClassifier(digits_model(), ConfidencePolicy(0.5))
    with pytest.raises(ValueError, match=r"expected inputs of shape \[n, 64\]"):
        clf.predict(torch.zeros(shape))


def test_from_run_classifies_like_the_trained_agent(val_inputs):
    x, _ = val_inputs
    clf = AdaptiveClassifier.from_run(trained_ppo_run())
    result = clf.predict(x)
    _, agent, _ = load_run(trained_ppo_run())
    records = run_policy(seq_core(64, "val"), agent)
    assert_same(result, records)
    assert result.prediction.shape == (x.shape[0],) and set(np.unique(result.prediction)) <= set(range(10))


def test_from_run_of_a_missing_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        AdaptiveClassifier.from_run(tmp_path)
