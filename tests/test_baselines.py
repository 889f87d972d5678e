"""``agents.baselines``: the non-learned policies, played through ``agents.evaluate.run_policy`` on
sequential cores of the tiny digits model (val: 359 examples; K = 3 layers, max_steps = 4)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from agents.baselines import (
    ConfidencePolicy,
    EntropyPolicy,
    FixedPathPolicy,
    OraclePolicy,
    RandomPolicy,
    StablePredictionPolicy,
    calibrate_random,
    costliest_layer,
    matched_random,
    oracle_search,
)
from agents.curves import full_depth_order
from agents.evaluate import candidate_paths, run_policy
from dynalay_env.paths import enumerate_paths
from tests.agent_fixtures import digits_model, encoder_stats, seq_core, subset_core
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)

K = 3
MAX_STEPS = 4
FULL_ORDER = (1, 2, 3)  # full_depth_order(3, 4): the threshold policies' default, then EXIT


@pytest.fixture(scope="module")
def val_core():
    return seq_core(64, "val")


def expected_path_rows(path: tuple[int, ...], n: int) -> np.ndarray:
    row = (list(path) + [-1] * MAX_STEPS)[:MAX_STEPS]
    return np.tile(np.asarray(row), (n, 1))


def test_full_depth_order():
    assert full_depth_order(3, 4) == FULL_ORDER
    assert full_depth_order(3, 2) == (1, 2)
    assert full_depth_order(2, 5) == (1, 2)


# ---- FixedPathPolicy ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [(), (1,), (2, 1), (1, 2, 3), (3, 3, 1, 2)])
def test_fixed_path_follows_its_path_then_exits(path):
    core = subset_core(16, 60)
    records = run_policy(core, FixedPathPolicy(path))
    np.testing.assert_array_equal(records.path, expected_path_rows(path, 60))
    np.testing.assert_array_equal(records.steps, np.full(60, len(path)))
    assert records.policy == "fixed_path" and records.params == {"path": list(path)}
    # Every step of the path ran the solver (iterations >= 1), the rest did not.
    assert (records.fpi_iterations[:, :len(path)] >= 1).all()
    assert (records.fpi_iterations[:, len(path):] == 0).all()


def test_fixed_path_longer_than_max_steps_is_cut_by_the_forced_exit():
    records = run_policy(subset_core(8, 30), FixedPathPolicy((1, 2, 3, 3, 1, 1)))
    np.testing.assert_array_equal(records.path, expected_path_rows((1, 2, 3, 3), 30))


def test_fixed_path_full_depth_matches_the_model_forward(val_core):
    records = run_policy(val_core, FixedPathPolicy((1, 2, 3)))
    with torch.no_grad():
        expected = digits_model()(val_core.x).argmax(1).numpy()
    np.testing.assert_array_equal(records.prediction, expected)
    # Compute is normalised by the mean full-depth FLOPs on val: the full path on val averages 1.0.
    assert records.mean_compute == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("bad", [(0,), (4,), (1, 5)])
def test_fixed_path_rejects_layers_out_of_range(bad):
    with pytest.raises(ValueError, match=r"1\.\.3"):
        run_policy(subset_core(4, 8), FixedPathPolicy(bad))


# ---- thresholded policies ----------------------------------------------------------------------


@pytest.mark.parametrize("tau", [1.01, 2.0])
def test_confidence_above_one_never_exits_early(tau):
    records = run_policy(subset_core(16, 60), ConfidencePolicy(tau))
    np.testing.assert_array_equal(records.path, expected_path_rows(FULL_ORDER, 60))


@pytest.mark.parametrize("tau", [0.0, -0.5])
def test_confidence_at_or_below_zero_exits_at_once(tau):
    records = run_policy(subset_core(16, 60), ConfidencePolicy(tau))
    assert (records.steps == 0).all()
    assert (records.path == -1).all()


def test_confidence_exits_exactly_where_the_head_is_confident(val_core):
    top1, _ = encoder_stats(val_core.x)
    tau = float(np.median(top1))
    records = run_policy(val_core, ConfidencePolicy(tau))
    clear = np.abs(top1 - tau) > 1e-5                          # keep away from float ties
    np.testing.assert_array_equal((records.steps == 0)[clear], (top1 >= tau)[clear])
    assert 0 < (records.steps == 0).mean() < 1                 # a real mix of depths


def test_confidence_custom_layer_order_is_followed_then_exits():
    records = run_policy(subset_core(8, 30), ConfidencePolicy(1.01, layer_order=(2, 1)))
    np.testing.assert_array_equal(records.path, expected_path_rows((2, 1), 30))


@pytest.mark.parametrize("h", [-0.01, -1.0])
def test_entropy_below_zero_never_exits_early(h):
    records = run_policy(subset_core(16, 60), EntropyPolicy(h))
    np.testing.assert_array_equal(records.path, expected_path_rows(FULL_ORDER, 60))


@pytest.mark.parametrize("h", [1.0 + 1e-6, 1.01])
def test_entropy_at_or_above_one_exits_at_once(h):
    records = run_policy(subset_core(16, 60), EntropyPolicy(h))
    assert (records.steps == 0).all()


def test_entropy_exits_exactly_where_the_head_is_certain(val_core):
    _, entropy = encoder_stats(val_core.x)
    h = float(np.median(entropy))
    records = run_policy(val_core, EntropyPolicy(h))
    clear = np.abs(entropy - h) > 1e-5
    np.testing.assert_array_equal((records.steps == 0)[clear], (entropy <= h)[clear])
    assert 0 < (records.steps == 0).mean() < 1


@torch.no_grad()
def prefix_predictions(x: torch.Tensor) -> np.ndarray:
    """[K + 1, n] predictions after each prefix of the default layer order."""
    model = digits_model()
    return np.stack([model(x, path=[a - 1 for a in FULL_ORDER[:t]]).argmax(1).numpy()
                     for t in range(len(FULL_ORDER) + 1)])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_stable_prediction_exits_after_k_unchanged_steps(val_core, k):
    preds = prefix_predictions(val_core.x)
    expected = np.full(val_core.num_examples, len(FULL_ORDER))  # the order ends: EXIT after layer K
    for t in range(len(FULL_ORDER), k - 1, -1):  # the smallest t whose last k steps kept the prediction
        stable = (preds[t - k:t + 1] == preds[t]).all(0)
        expected[stable] = t
    records = run_policy(val_core, StablePredictionPolicy(k))
    np.testing.assert_array_equal(records.steps, expected)
    assert (records.steps >= k).all()


def test_stable_prediction_state_follows_slot_reuse():
    """Per-slot counters restart when a slot takes a new example: 5 slots and 60 slots agree."""
    few = run_policy(subset_core(5, 60), StablePredictionPolicy(1))
    many = run_policy(subset_core(60, 60), StablePredictionPolicy(1))
    np.testing.assert_array_equal(few.steps, many.steps)
    np.testing.assert_array_equal(few.path, many.path)


def test_stable_prediction_rejects_k_below_one():
    with pytest.raises(ValueError, match="k must be >= 1"):
        StablePredictionPolicy(0)


# ---- RandomPolicy ------------------------------------------------------------------------------


def test_random_exit_probability_one_exits_at_once():
    records = run_policy(subset_core(16, 60), RandomPolicy(1.0))
    assert (records.steps == 0).all()


def test_random_exit_probability_zero_never_exits():
    records = run_policy(subset_core(16, 60), RandomPolicy(0.0, seed=3))
    assert (records.steps == MAX_STEPS).all()
    assert set(np.unique(records.path)) <= {1, 2, 3}
    assert len(set(np.unique(records.path))) == 3  # uniformly random layers: all of them appear


def test_random_is_seeded():
    a = run_policy(subset_core(16, 60), RandomPolicy(0.3, seed=7))
    b = run_policy(subset_core(16, 60), RandomPolicy(0.3, seed=7))
    c = run_policy(subset_core(16, 60), RandomPolicy(0.3, seed=8))
    np.testing.assert_array_equal(a.path, b.path)
    assert not np.array_equal(a.path, c.path)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_random_rejects_bad_probability(p):
    with pytest.raises(ValueError, match=r"p_exit must be in \[0, 1\]"):
        RandomPolicy(p)


@pytest.mark.parametrize("target", [0.3, 0.8])
def test_calibrate_random_hits_the_target_compute(val_core, target):
    policy = calibrate_random(lambda p: run_policy(val_core, p).mean_compute, target, seed=0)
    assert isinstance(policy, RandomPolicy) and 0 < policy.p_exit < 1 and policy.deep == 0.0
    assert run_policy(val_core, policy).mean_compute == pytest.approx(target, abs=0.03)


def test_random_deep_takes_the_costliest_layer(val_core):
    layer = costliest_layer(val_core.model)
    records = run_policy(subset_core(16, 60), RandomPolicy(0.0, seed=0, deep=1.0))
    assert (records.path == layer).all() and (records.steps == MAX_STEPS).all()


def test_random_family_spans_every_compute_a_policy_can_spend():
    """Exit at once .. the costliest layer for max_steps: every fixed path's compute lies inside, the
    most expensive one at the end, and compute rises with the level."""
    core = subset_core(60, 60)
    compute = [run_policy(core, RandomPolicy.at_level(level)).mean_compute for level in (0.0, 0.5, 1.0, 1.5, 2.0)]
    assert compute == sorted(compute) and compute[0] < compute[-1]
    deepest = run_policy(core, FixedPathPolicy((costliest_layer(core.model),) * MAX_STEPS)).mean_compute
    assert compute[-1] == pytest.approx(deepest, rel=1e-9)
    for path in itertools.product(range(1, K + 1), repeat=MAX_STEPS):
        assert run_policy(core, FixedPathPolicy(path)).mean_compute <= compute[-1] * (1 + 1e-9)


def test_random_family_under_repeat_masks_takes_only_allowed_layers():
    """With mask_repeats a masked choice would become EXIT: the family draws among the allowed layers,
    so its deep end still walks max_steps layers (alternating the two costliest) and compute rises."""
    core = subset_core(60, 60, mask_repeats=True)
    levels = (0.5, 1.0, 1.5, 2.0)
    runs = [run_policy(core, RandomPolicy.at_level(level)) for level in levels]
    assert [r.mean_compute for r in runs] == sorted(r.mean_compute for r in runs)
    deepest = runs[-1]
    assert (deepest.steps == MAX_STEPS).all()
    assert (deepest.path[:, 1:] != deepest.path[:, :-1]).all()  # never the same layer twice in a row
    assert deepest.path[0, 0] == costliest_layer(core.model)


@pytest.mark.parametrize("level", [-0.1, 2.5])
def test_random_level_out_of_range(level):
    with pytest.raises(ValueError, match=r"level must be in \[0, 2.0\]"):
        RandomPolicy.at_level(level)
    with pytest.raises(ValueError, match=r"deep must be in \[0, 1\]"):
        RandomPolicy(0.0, deep=level + 2)


def test_matched_random_beyond_uniform_layers(val_core):
    """A policy deeper than uniformly random layers reach (MaskablePPO and DQN learned to) still gets a
    random policy at its compute: the family tilts towards the costliest layer."""
    uniform_ceiling = run_policy(val_core, RandomPolicy(0.0)).mean_compute
    target = uniform_ceiling * 1.15
    match = matched_random(lambda p: run_policy(val_core, p), target)
    assert match.matched and match.policy.p_exit == 0.0 and match.policy.deep > 0
    assert run_policy(val_core, match.policy).mean_compute == pytest.approx(target, rel=0.02)
    assert match.to_json()["params"]["deep"] == round(match.policy.deep, 4)


def test_matched_random_says_when_no_random_policy_reaches_the_target(val_core):
    ceiling = run_policy(val_core, RandomPolicy.at_level(2.0)).mean_compute
    match = matched_random(lambda p: run_policy(val_core, p), ceiling * 1.5)
    assert not match.matched
    assert match.compute == pytest.approx(ceiling, rel=1e-3)
    assert "no random policy reaches compute" in match.note and f"{ceiling:.4f}" in match.note


# ---- oracle --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brute_force():
    """Every path up to max_steps played in the env on the first 12 val examples:
    {path: (correct [12], flops [12])}."""
    out = {}
    for depth in range(MAX_STEPS + 1):
        for path in itertools.product(range(1, K + 1), repeat=depth):
            r = run_policy(subset_core(12, 12), FixedPathPolicy(path))
            out[path] = (r.correct, r.flops)
    return out


def test_oracle_best_path_is_correct_and_cheapest(brute_force):
    core = subset_core(12, 12)
    search = oracle_search(digits_model(), core.x, core.y, MAX_STEPS)
    assert search.paths_searched == len(brute_force) == 1 + 3 + 9 + 27 + 81
    normalizer = digits_model().cost_table().normalizer
    for i in range(12):
        correct_costs = {p: flops[i] for p, (correct, flops) in brute_force.items() if correct[i]}
        if not correct_costs:
            assert not search.solvable[i] and search.best_path[i] == () and np.isnan(search.min_compute[i])
            continue
        best = search.best_path[i]
        assert search.solvable[i]
        assert best in correct_costs, f"example {i}: oracle path {best} is not correct"
        assert correct_costs[best] == pytest.approx(min(correct_costs.values()), rel=1e-12)
        assert search.min_compute[i] == pytest.approx(correct_costs[best] / normalizer, rel=1e-12)
    # The search runs each prefix once: its FLOPs are the sum of every path's last step.
    expected = sum((flops - (brute_force[p[:-1]][1] if p else 0.0)).sum() for p, (_, flops) in brute_force.items())
    assert search.search_flops == pytest.approx(expected, rel=1e-9)


def test_oracle_search_agrees_with_enumerate_paths_and_batching():
    core = subset_core(12, 12)
    model = digits_model()
    table = enumerate_paths(model, core.x, core.y, MAX_STEPS)
    whole = oracle_search(model, core.x, core.y, MAX_STEPS)
    batched = oracle_search(model, core.x, core.y, MAX_STEPS, batch_size=5)
    np.testing.assert_array_equal(whole.solvable, table.correct.any(0).numpy())
    assert whole.best_path == batched.best_path
    np.testing.assert_allclose(whole.min_compute, batched.min_compute, rtol=1e-12)


def test_oracle_policy_accuracy_is_the_solvable_share_and_beats_every_fixed_path(val_core):
    search = oracle_search(digits_model(), val_core.x, val_core.y, MAX_STEPS)
    oracle = run_policy(val_core, OraclePolicy(search))
    assert oracle.accuracy == pytest.approx(search.solvable.mean())
    np.testing.assert_array_equal(oracle.correct, search.solvable)
    np.testing.assert_allclose(oracle.compute[search.solvable], search.min_compute[search.solvable], rtol=1e-9)
    assert (oracle.steps[~search.solvable] == 0).all()  # nothing to find: exit at once
    for path in candidate_paths(K, MAX_STEPS):
        assert oracle.accuracy >= run_policy(val_core, FixedPathPolicy(path)).accuracy


# ---- bind / predict ----------------------------------------------------------------------------


def test_unbound_policy_says_how_to_bind():
    with pytest.raises(RuntimeError, match=r"bind\(core\)"):
        ConfidencePolicy(0.5).predict(np.zeros((1, 3), np.float32))


def test_oracle_bound_to_another_split_size_errors():
    core = subset_core(4, 12)
    search = oracle_search(digits_model(), core.x, core.y, MAX_STEPS)
    with pytest.raises(ValueError, match=r"12 examples.*359"):
        OraclePolicy(search).bind(seq_core(4, "val"))


def test_predict_returns_int64_actions_and_state():
    core = subset_core(4, 8)
    core.reset()
    policy = FixedPathPolicy((2, 1)).bind(core)
    actions, state = policy.predict(core.observations_tensor().numpy(), state="keep")
    assert actions.dtype == np.int64 and actions.shape == (4,)
    np.testing.assert_array_equal(actions, [2, 2, 2, 2])
    assert state == "keep"


def test_predict_falls_back_to_exit_where_the_mask_forbids():
    core = subset_core(4, 8, mask_repeats=True)
    core.reset()
    core.step(np.ones(4, dtype=np.int64))  # every slot applied layer 1; repeating it is now masked
    policy = FixedPathPolicy((1, 1, 2)).bind(core)
    obs = core.observations_tensor().numpy()
    unmasked, _ = policy.predict(obs)
    masked, _ = policy.predict(obs, action_masks=core.action_masks())
    np.testing.assert_array_equal(unmasked, [1, 1, 1, 1])
    np.testing.assert_array_equal(masked, [0, 0, 0, 0])
    # run_policy passes the masks: the path stops at the forbidden repeat.
    records = run_policy(subset_core(4, 8, mask_repeats=True), FixedPathPolicy((1, 1, 2)))
    np.testing.assert_array_equal(records.path, expected_path_rows((1,), 8))


# ---- thresholds are chosen on val, never on the reported split -----------------------------------


def thresholds_with(splits: dict[str, str]) -> dict[str, float]:
    """``thresholds_chosen_on_val`` of a baselines-only evaluation on ``test`` whose cores hold the
    first 60 examples of the digits splits named in ``splits`` (``{"val": ..., "test": ...}``)."""
    from agents.evaluate import evaluate

    report = evaluate(lambda split: subset_core(60, 60, splits[split]), agent=None, split="test", n_boot=10,
                      figures=False)
    return report["thresholds_chosen_on_val"]


def test_thresholds_are_chosen_on_val_and_never_on_the_reported_split():
    """Replacing the reported split's examples leaves every threshold as it was; replacing val's
    examples moves them. On ``model_train`` the model is over-confident, so a threshold chosen there
    differs from one chosen on ``val``."""
    chosen = thresholds_with({"val": "val", "test": "test"})
    assert thresholds_with({"val": "val", "test": "model_train"}) == chosen
    assert thresholds_with({"val": "model_train", "test": "test"}) != chosen
