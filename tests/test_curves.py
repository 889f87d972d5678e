"""``agents.curves``: exact threshold curves and the prefix oracle from one recorded pass, checked
against brute-force runs of the exit rules on the tiny digits model (K = 3 layers, max_steps = 4)
and on hand-made records."""

from __future__ import annotations

import numpy as np
import pytest

from agents.baselines import (
    ConfidencePolicy,
    EntropyPolicy,
    FixedPathPolicy,
    MarginPolicy,
    OraclePolicy,
    StablePredictionPolicy,
    oracle_search,
)
from agents.curves import (
    STATISTICS,
    DepthRecord,
    exact_curve,
    exit_flops,
    prefix_oracle,
    record_core,
    records_at_exits,
    records_at_threshold,
    statistic_flops,
    vs_curve,
)
from agents.evaluate import run_policy, vs_threshold
from agents.records import hull_accuracy_at
from dynalay_env.paths import enumerate_paths, oracle_episode_compute
from tests.agent_fixtures import subset_core
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)

ORDER = (1, 2, 3)
N = 150
POLICIES = {"confidence": ConfidencePolicy, "entropy": EntropyPolicy, "margin": MarginPolicy,
            "stable_prediction": lambda k, layer_order: StablePredictionPolicy(int(k), layer_order)}


@pytest.fixture(scope="module")
def core():
    return subset_core(32, N)


@pytest.fixture(scope="module")
def record(core):
    return record_core(core)


def test_the_record_follows_the_full_depth_order(record):
    assert record.order == ORDER and record.n == N
    assert record.prediction.shape == record.flops.shape == (N, 4) and record.iterations.shape == (N, 3)
    assert (np.diff(record.flops, axis=1) > 0).all()  # every step costs: deeper exits are dearer
    for name in STATISTICS:
        assert record.statistics[name].shape == (N, 4)


@pytest.mark.parametrize("statistic", list(STATISTICS))
def test_the_analytic_sweep_matches_brute_force_runs_of_the_exit_rule(core, record, statistic):
    # Both sides charge the rule's statistic per decision, so the decision counts must agree too.
    cost = statistic_flops(statistic, core.num_classes)
    curve = exact_curve(record, statistic, cost)
    assert len(curve) == np.unique(curve.threshold).size >= 3
    assert (np.diff(curve.mean_compute) >= -1e-12).all()
    # A few thresholds across the curve, the last one (never exits early) included.
    picks = np.unique(np.r_[np.linspace(0, len(curve) - 1, 4).astype(int), len(curve) - 1])
    for j in picks:
        threshold = curve.threshold[j]
        brute = run_policy(core, POLICIES[statistic](threshold, layer_order=ORDER))
        exact = records_at_threshold(record, statistic, threshold, cost)
        np.testing.assert_array_equal(exact.decisions, brute.decisions)
        np.testing.assert_array_equal(exact.prediction, brute.prediction)
        np.testing.assert_array_equal(exact.steps, brute.steps)
        np.testing.assert_array_equal(exact.path, brute.path)
        np.testing.assert_allclose(exact.flops, brute.flops, rtol=1e-12)
        assert curve.accuracy[j] == pytest.approx(brute.accuracy, abs=1e-12)
        assert curve.mean_compute[j] == pytest.approx(brute.mean_compute, rel=1e-12)


DEFAULT_POLICIES = {"confidence": ConfidencePolicy, "entropy": EntropyPolicy, "margin": MarginPolicy,
                    "stable_prediction": lambda k: StablePredictionPolicy(int(k))}


@pytest.mark.parametrize("statistic", list(STATISTICS))
def test_a_default_constructed_rule_played_lands_on_its_curve_point(core, record, statistic):
    """A threshold rule built with its threshold only (the default order, as run_policy,
    AdaptiveClassifier and benchmarks/adaptive_inference.py play it) is the curve's point for that
    threshold: accuracy, mean compute with the decisions charged, and the decision counts."""
    cost = statistic_flops(statistic, core.num_classes)
    curve = exact_curve(record, statistic, cost)
    for j in np.unique(np.r_[np.linspace(0, len(curve) - 1, 4).astype(int), len(curve) - 1]):
        threshold = curve.threshold[j]
        played = run_policy(core, DEFAULT_POLICIES[statistic](threshold))
        exact = records_at_threshold(record, statistic, threshold, cost)
        np.testing.assert_array_equal(played.decisions, exact.decisions)
        np.testing.assert_array_equal(played.path, exact.path)
        assert played.accuracy == pytest.approx(curve.accuracy[j], abs=1e-12)
        assert played.mean_compute == pytest.approx(curve.mean_compute[j], rel=1e-12)


@pytest.mark.parametrize("statistic", list(STATISTICS))
def test_every_threshold_lands_on_a_point_of_the_curve(record, statistic):
    """Any threshold, not only the swept ones, gives the point of the first swept threshold at or
    beyond it in the rule's direction (the last point stands for every threshold past the values):
    the curve misses no operating point."""
    curve = exact_curve(record, statistic)
    higher = STATISTICS[statistic].higher
    rng = np.random.default_rng(0)
    values = record.statistics[statistic]
    low = values.min() - 0.1 if STATISTICS[statistic].minimum is None else STATISTICS[statistic].minimum  # k >= 1
    for t in rng.uniform(low, values.max() + 0.1, 25):
        direction = curve.threshold >= t if higher else curve.threshold <= t
        j = np.flatnonzero(direction)[0] if direction.any() else len(curve) - 1  # the last covers all beyond
        got = records_at_threshold(record, statistic, float(t))
        assert got.accuracy == pytest.approx(curve.accuracy[j], abs=1e-12)
        assert got.mean_compute == pytest.approx(curve.mean_compute[j], rel=1e-12)


def corner_record() -> DepthRecord:
    """One layer (D = 1). 60 examples are right at once with confidence 0.961; 40 are wrong at once
    with confidence 0.955 and right after the layer. Only a tau in (0.955, 0.961] exits the first
    group and continues the second: accuracy 1.0 at compute 0.4, the hull's corner."""
    easy, hard = 60, 40
    label = np.zeros(easy + hard, np.int64)
    prediction = np.zeros((easy + hard, 2), np.int64)
    prediction[easy:, 0] = 1
    confidence = np.r_[np.full(easy, 0.961), np.full(hard, 0.955)][:, None] * np.ones((1, 2))
    flops = np.tile([0.0, 1.0], (easy + hard, 1))
    return DepthRecord((1,), label, prediction, flops, np.ones((easy + hard, 1), np.int64),
                       {"confidence": confidence.astype(np.float32)}, 1.0, 1)


def test_the_exact_curve_finds_the_hull_corner_that_a_grid_misses():
    record = corner_record()
    curve = exact_curve(record, "confidence")
    assert hull_accuracy_at(curve.mean_compute, curve.accuracy, 0.4) == pytest.approx(1.0)
    # The grid the reports used before: no value falls between 0.955 and 0.961.
    grid = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.01)
    points = [records_at_threshold(record, "confidence", t) for t in grid]
    grid_c, grid_a = np.array([p.mean_compute for p in points]), np.array([p.accuracy for p in points])
    assert hull_accuracy_at(grid_c, grid_a, 0.4) == pytest.approx(0.6 + 0.4 * 0.4)  # the chord
    # A policy at the corner "beats" the grid's hull by 0.24 and only ties the exact one.
    corner = records_at_exits(record, np.r_[np.zeros(60, np.int64), np.ones(40, np.int64)], "agent", {})
    assert vs_threshold(corner, points, n_boot=20)["difference"] == pytest.approx(0.24)
    assert vs_curve(corner, curve, n_boot=20)["difference"] == pytest.approx(0.0, abs=1e-12)


def test_the_exact_bootstrap_refits_the_hull_as_the_per_threshold_bootstrap_does(core, record):
    curve = exact_curve(record, "confidence")
    points = [records_at_threshold(record, "confidence", t) for t in curve.threshold]
    agent = run_policy(core, ConfidencePolicy(0.13, layer_order=(1, 2, 3, 3)))  # repeats layer 3: off the curve
    exact = vs_curve(agent, curve, n_boot=40, seed=5)
    brute = vs_threshold(agent, points, n_boot=40, seed=5)
    assert exact["difference"] == pytest.approx(brute["difference"], abs=1e-12)
    np.testing.assert_allclose(exact["ci95"], brute["ci95"], atol=1e-9)
    assert "favours the threshold" in exact["hull_fitted_on"]
    stable = exact_curve(record, "stable_prediction")  # k >= 1 only, its bootstrap refits exactly too
    assert stable.threshold.tolist() == [1, 2, 3]  # 3 = never early (3 layers)
    points = [records_at_threshold(record, "stable_prediction", k) for k in stable.threshold]
    exact, brute = vs_curve(agent, stable, n_boot=40, seed=5), vs_threshold(agent, points, n_boot=40, seed=5)
    np.testing.assert_allclose(exact["ci95"], brute["ci95"], atol=1e-9)


def test_a_corrected_interval_comes_from_the_same_resamples_and_is_wider(core, record):
    curve = exact_curve(record, "confidence")
    agent = run_policy(core, ConfidencePolicy(0.13, layer_order=(1, 2, 3, 3)))
    plain = vs_curve(agent, curve, n_boot=60, seed=3)
    same = vs_curve(agent, curve, n_boot=60, seed=3, level=0.95)
    np.testing.assert_allclose(same["ci"], plain["ci95"], atol=1e-12)
    bonferroni = vs_curve(agent, curve, n_boot=60, seed=3, level=1 - 0.05 / 3)
    assert bonferroni["ci"][0] <= plain["ci95"][0] and bonferroni["ci"][1] >= plain["ci95"][1]
    assert bonferroni["ci"][1] - bonferroni["ci"][0] > plain["ci95"][1] - plain["ci95"][0]
    with pytest.raises(ValueError, match="confidence in"):
        vs_curve(agent, curve, n_boot=5, level=95)


def test_vs_curve_refuses_records_of_another_split(core, record):
    agent = run_policy(subset_core(8, 40), FixedPathPolicy(()))
    with pytest.raises(ValueError, match="same split"):
        vs_curve(agent, exact_curve(record, "confidence"), n_boot=5)


def test_the_prefix_oracle_matches_brute_force(core, record):
    prefixes = [run_policy(core, FixedPathPolicy(ORDER[:d])) for d in range(len(ORDER) + 1)]
    correct = np.stack([p.correct for p in prefixes], 1)
    flops = np.stack([p.flops for p in prefixes], 1)
    cost = np.where(correct, flops, np.inf)
    solvable = correct.any(1)
    oracle = prefix_oracle(record)
    np.testing.assert_array_equal(oracle.extra["solvable"], solvable)
    np.testing.assert_array_equal(oracle.correct, solvable)
    np.testing.assert_allclose(oracle.flops[solvable], cost.min(1)[solvable], rtol=1e-12)
    np.testing.assert_allclose(oracle.flops[~solvable], flops[~solvable, 0], rtol=1e-12)  # exits at once
    # No exit rule along the order beats it; the path oracle (any path) is at least as accurate.
    for name in STATISTICS:
        assert exact_curve(record, name).accuracy.max() <= oracle.accuracy + 1e-12
    path_oracle = run_policy(core, OraclePolicy(oracle_search(core.model, core.x, core.y, core.max_steps)))
    assert oracle.accuracy <= path_oracle.accuracy


def test_the_prefix_oracle_is_the_pretraining_reports_one(core, record):
    """agents.curves.prefix_oracle and the pre-training report's prefix oracle share one rule
    (dynalay_env.pretrain.cheapest_correct) and give identical numbers; so does the path oracle
    with OraclePolicy's."""
    table = enumerate_paths(core.model, core.x, core.y, core.max_steps)
    normalizer = core.model.cost_table().normalizer
    solvable, compute = oracle_episode_compute(table, normalizer, prefix_only=True, num_layers=len(ORDER))
    oracle = prefix_oracle(record)
    np.testing.assert_array_equal(oracle.correct, solvable)
    np.testing.assert_array_equal(oracle.compute, compute)
    path_solvable, path_compute = oracle_episode_compute(table, normalizer)
    played = run_policy(core, OraclePolicy(oracle_search(core.model, core.x, core.y, core.max_steps)))
    np.testing.assert_array_equal(played.correct, path_solvable)
    np.testing.assert_allclose(played.compute, path_compute, rtol=1e-12)


def test_decision_flops_are_charged_per_decision(record):
    plain, charged = exact_curve(record, "confidence"), exact_curve(record, "confidence", decision_flops=1000.0)
    np.testing.assert_array_equal(plain.accuracy, charged.accuracy)
    # Exiting at depth d took d + 1 decisions (the end of the order 1..3 is not max_steps = 4).
    extra = exit_flops(record, 1000.0) - record.flops
    np.testing.assert_allclose(extra[0], [1000.0, 2000.0, 3000.0, 4000.0])
    assert charged.mean_compute[0] - plain.mean_compute[0] == pytest.approx(1000.0 / record.normalizer)
    assert charged.mean_compute[-1] - plain.mean_compute[-1] == pytest.approx(4000.0 / record.normalizer)
    with pytest.raises(ValueError, match="decision_flops must be >= 0"):
        exact_curve(record, "confidence", decision_flops=-1.0)


def test_an_unknown_statistic_names_the_valid_ones(record):
    with pytest.raises(ValueError, match="valid: confidence, entropy, margin, stable_prediction"):
        exact_curve(record, "top2")
