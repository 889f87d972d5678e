"""``agents.evaluate``: the sequential pass, the hull and bootstrap, difficulty and action statistics,
and the full report (``evaluate``, ``write_report``, ``validate_report``) on the tiny digits model."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from agents.baselines import (
    ConfidencePolicy,
    FixedPathPolicy,
    OracleSearch,
    StablePredictionPolicy,
    costliest_layer,
)
from agents.curves import STATISTICS, statistic_flops
from agents.evaluate import (
    EpisodeRecords,
    action_frequencies,
    difficulty_stats,
    evaluate,
    hull_accuracy_at,
    run_policy,
    validate_report,
    vs_threshold,
)
from agents.records import upper_hull
from dynalay_env.env import make_core
from tests.agent_fixtures import digits_dataset, digits_model, encoder_stats, hidden_files, seq_core, subset_core
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)

MAX_STEPS = 4
FIGURES = ("accuracy_vs_compute.png", "action_histogram.png", "compute_vs_difficulty.png")


def make_records(correct, compute, name: str = "policy", steps=None, path=None) -> EpisodeRecords:
    """Hand-made records of ``n`` episodes (labels 0, predictions from ``correct``)."""
    correct = np.asarray(correct, dtype=bool)
    n = correct.size
    steps = np.zeros(n, np.int64) if steps is None else np.asarray(steps, np.int64)
    path = np.full((n, MAX_STEPS), -1, np.int64) if path is None else np.asarray(path, np.int64)
    return EpisodeRecords(name, {}, np.arange(n), np.zeros(n, np.int64), (~correct).astype(np.int64), correct,
                          np.asarray(compute, float) * np.ones(n), np.asarray(compute, float) * np.ones(n) * 1e6,
                          steps, path, np.zeros((n, MAX_STEPS), np.int64))


# ---- run_policy ----------------------------------------------------------------------------------


def counting_resets(core):
    """Wrap ``core.start_episodes`` (which ``reset`` calls too) to record every example an episode
    starts on."""
    seen: list[int] = []
    original = core.start_episodes

    def start_episodes(indices=None, examples=None):
        idx = original(indices, examples)
        seen.extend(core.example[idx].tolist())
        return idx

    core.start_episodes = start_episodes
    return seen


@pytest.fixture(scope="module")
def mixed_tau():
    """A confidence threshold that sends about half of the val examples deeper."""
    return float(np.median(encoder_stats(digits_dataset().as_tensors("val")[0])[0]))


@pytest.mark.parametrize("policy_name", ["confidence", "stable"])
def test_run_policy_visits_each_example_once_whatever_the_slot_count(policy_name, mixed_tau):
    n = 60
    make_policy = (lambda: ConfidencePolicy(mixed_tau)) if policy_name == "confidence" else (
        lambda: StablePredictionPolicy(1))
    results = {}
    for slots in (1, 7, n, 100):  # N < n, N == n, N > n
        core = subset_core(slots, n)
        seen = counting_resets(core)
        results[slots] = run_policy(core, make_policy())
        assert sorted(seen) == list(range(n)), f"N={slots}: episodes started on {sorted(seen)}"
    reference = results[1]
    np.testing.assert_array_equal(reference.example, np.arange(n))
    np.testing.assert_array_equal(reference.label, digits_dataset().as_tensors("val")[1][:n].numpy())
    assert 0 < (reference.steps == 0).mean() < 1 or policy_name == "stable"
    for slots, records in results.items():
        for key in ("example", "label", "prediction", "correct", "steps", "path", "fpi_iterations"):
            np.testing.assert_array_equal(getattr(records, key), getattr(reference, key), err_msg=f"N={slots} {key}")
        np.testing.assert_allclose(records.flops, reference.flops, rtol=1e-12, err_msg=f"N={slots}")
        np.testing.assert_allclose(records.compute, reference.compute, rtol=1e-12, err_msg=f"N={slots}")


def test_run_policy_is_repeatable_on_the_same_core(mixed_tau):
    core = subset_core(7, 40)
    a = run_policy(core, ConfidencePolicy(mixed_tau))
    b = run_policy(core, ConfidencePolicy(mixed_tau))
    np.testing.assert_array_equal(a.path, b.path)
    np.testing.assert_array_equal(a.prediction, b.prediction)


def test_run_policy_needs_a_sequential_core():
    core = make_core(4, dataset=digits_dataset(), model=digits_model(), split="val", sample_mode="random")
    with pytest.raises(ValueError, match="sequential"):
        run_policy(core, ConfidencePolicy(0.5))


# ---- hull ----------------------------------------------------------------------------------------


def test_upper_hull_drops_dominated_points_and_the_falling_tail():
    compute = np.array([0.0, 0.5, 0.5, 1.0, 2.0, 1.5])
    accuracy = np.array([0.5, 0.6, 0.55, 0.9, 0.8, 0.9])
    hc, ha = upper_hull(compute, accuracy)
    np.testing.assert_allclose(hc, [0.0, 1.0])
    np.testing.assert_allclose(ha, [0.5, 0.9])
    assert hull_accuracy_at(compute, accuracy, 0.5) == pytest.approx(0.7)   # mixing the two ends
    assert hull_accuracy_at(compute, accuracy, 3.0) == pytest.approx(0.9)   # flat beyond the last point
    assert hull_accuracy_at(compute, accuracy, -1.0) == pytest.approx(0.5)  # flat before the first


def test_upper_hull_keeps_points_above_the_chord():
    compute = np.array([0.0, 0.25, 0.5, 1.0])
    accuracy = np.array([0.5, 0.8, 0.6, 0.9])
    hc, ha = upper_hull(compute, accuracy)
    np.testing.assert_allclose(hc, [0.0, 0.25, 1.0])
    np.testing.assert_allclose(ha, [0.5, 0.8, 0.9])
    assert hull_accuracy_at(compute, accuracy, 0.5) == pytest.approx(0.8 + 0.1 / 3)


def test_upper_hull_of_one_point_and_of_duplicates():
    hc, ha = upper_hull(np.array([0.3]), np.array([0.7]))
    np.testing.assert_allclose(hc, [0.3])
    assert hull_accuracy_at(np.array([0.3]), np.array([0.7]), 5.0) == pytest.approx(0.7)
    hc, ha = upper_hull(np.array([0.3, 0.3, 0.3]), np.array([0.6, 0.7, 0.65]))
    np.testing.assert_allclose(ha, [0.7])  # the best point of a tied compute


@pytest.mark.parametrize("seed", range(5))
def test_upper_hull_is_a_concave_envelope(seed):
    rng = np.random.default_rng(seed)
    compute, accuracy = rng.random(30) * 2, rng.random(30)
    hc, ha = upper_hull(compute, accuracy)
    assert (np.diff(hc) > 0).all() and (np.diff(ha) > 0).all()    # rising only
    slopes = np.diff(ha) / np.diff(hc)
    assert (np.diff(slopes) <= 1e-12).all()                       # concave
    envelope = np.interp(compute, hc, ha)
    assert (accuracy <= envelope + 1e-12).all()                   # every point on or under it
    assert set(zip(hc, ha, strict=True)) <= set(zip(compute, accuracy, strict=True))  # real operating points


# ---- vs_threshold --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def threshold_curve():
    rng = np.random.default_rng(0)
    n = 400
    return [make_records(rng.random(n) < p, c, f"t{i}") for i, (p, c) in enumerate([(0.6, 0.2), (0.8, 0.5),
                                                                                    (0.85, 1.0)])]


def test_vs_threshold_of_a_threshold_point_is_zero(threshold_curve):
    agent = copy.deepcopy(threshold_curve[1])
    result = vs_threshold(agent, threshold_curve, n_boot=300, seed=0)
    assert result["difference"] == pytest.approx(0.0, abs=1e-12)
    low, high = result["ci95"]
    assert low <= 1e-12 and high >= -1e-12
    assert not result["beats_threshold"]
    assert result["n_bootstrap"] == 300 and result["agent_mean_compute"] == pytest.approx(0.5)


def test_vs_threshold_detects_a_clearly_better_agent(threshold_curve):
    rng = np.random.default_rng(1)
    agent = make_records(rng.random(400) < 0.95, 0.5, "agent")
    result = vs_threshold(agent, threshold_curve, n_boot=300, seed=0)
    assert result["difference"] == pytest.approx(agent.accuracy - threshold_curve[1].accuracy)
    assert result["ci95"][0] > 0 and result["beats_threshold"]
    assert result["ci95"][0] <= result["difference"] <= result["ci95"][1]


def test_vs_threshold_detects_a_clearly_worse_agent(threshold_curve):
    rng = np.random.default_rng(2)
    agent = make_records(rng.random(400) < 0.5, 0.5, "agent")
    result = vs_threshold(agent, threshold_curve, n_boot=300, seed=0)
    assert result["ci95"][1] < 0 and not result["beats_threshold"]


def test_vs_threshold_bootstrap_is_paired_over_examples():
    """Agent and threshold point right on the same hard-to-guess examples, the agent on 8 more: the
    difference is +0.02 on every resample of the examples, so a paired interval is narrow and above 0.
    An unpaired bootstrap (agent and curve resampled apart) would spread about +-0.06 around it and
    include 0 (two accuracies near 0.7 from 400 examples each)."""
    rng = np.random.default_rng(5)
    n = 400
    shared = rng.random(n) < 0.7
    curve = [make_records(rng.random(n) < 0.5, 0.1, "t0"), make_records(shared, 1.0, "t1")]
    better = shared.copy()
    better[np.flatnonzero(~shared)[:8]] = True
    result = vs_threshold(make_records(better, 1.0, "agent"), curve, n_boot=400, seed=0)
    assert result["difference"] == pytest.approx(8 / n)
    low, high = result["ci95"]
    assert 0 < low <= 8 / n <= high
    assert high - low < 0.03, f"interval [{low:.4f}, {high:.4f}] is as wide as an unpaired bootstrap's"
    assert result["beats_threshold"]
    # The same agent compared with itself: zero on every resample, so the paired interval is a point.
    same = vs_threshold(make_records(shared, 1.0, "agent"), curve, n_boot=200, seed=0)
    assert same["ci95"] == [pytest.approx(0.0, abs=1e-12)] * 2


# ---- difficulty and action statistics ------------------------------------------------------------


def search_with(min_compute, solvable=None) -> OracleSearch:
    min_compute = np.asarray(min_compute, float)
    solvable = np.ones(min_compute.size, bool) if solvable is None else np.asarray(solvable)
    return OracleSearch([()] * min_compute.size, solvable, np.where(solvable, min_compute, np.nan), 121, 0.0, 0.0)


def test_difficulty_spearman_sign():
    rng = np.random.default_rng(0)
    difficulty = rng.random(50)
    search = search_with(difficulty)
    follows = make_records(np.ones(50, bool), 2 * difficulty + 0.01 * rng.random(50))
    opposes = make_records(np.ones(50, bool), 1 - difficulty)
    assert difficulty_stats(follows, search)["spearman"] > 0.9
    assert difficulty_stats(opposes, search)["spearman"] == pytest.approx(-1.0)
    assert np.isnan(difficulty_stats(make_records(np.ones(50, bool), 0.5), search)["spearman"])


def test_difficulty_buckets_count_every_example_and_the_unsolvable():
    difficulty = np.linspace(0.1, 1.0, 40)
    solvable = np.arange(40) % 5 != 0
    stats = difficulty_stats(make_records(np.arange(40) % 2 == 0, difficulty), search_with(difficulty, solvable))
    assert sum(b["n"] for b in stats["buckets"]) == 40
    unsolvable = [b for b in stats["buckets"] if b["difficulty_range"] == "unsolvable"]
    assert len(unsolvable) == 1 and unsolvable[0]["n"] == 8


def test_action_frequencies_counts_layers_and_chosen_exits():
    path = np.array([[1, 2, -1, -1], [-1, -1, -1, -1], [1, 1, 1, 1]])
    records = make_records(np.ones(3, bool), 0.5, steps=[2, 0, 4], path=path)
    freqs = action_frequencies(records, 4)
    # exits by choice: episodes 0 and 1 (episode 2 was forced at max_steps); layer1 x5, layer2 x1.
    assert freqs == pytest.approx({"exit": 2 / 8, "layer1": 5 / 8, "layer2": 1 / 8, "layer3": 0.0})


def test_action_frequencies_sum_to_one_on_real_records(mixed_tau):
    records = run_policy(subset_core(16, 60), ConfidencePolicy(mixed_tau))
    freqs = action_frequencies(records, 4)
    assert set(freqs) == {"exit", "layer1", "layer2", "layer3"}
    assert sum(freqs.values()) == pytest.approx(1.0)


# ---- the full evaluation -------------------------------------------------------------------------


def make_eval_core(split: str):
    return seq_core(128, split)


#: The agent of the report tests: a confidence rule along the full-depth order, so that it is a
#: point of the exact curve (tau 0.13 exits at every depth of this weak tiny model on test).
def eval_agent() -> ConfidencePolicy:
    return ConfidencePolicy(0.13, layer_order=(1, 2, 3))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evaluate_run")
    metadata = {"env_id": "DynaLay-Digits-v0", "reward": "paper(lambda_compute=0.1)"}
    report = evaluate(make_eval_core, agent=eval_agent(), agent_name="confidence_agent", split="test",
                      seed=3, n_boot=200, metadata=metadata, run_dir=run_dir)
    return report, run_dir


REQUIRED_KEYS = ("env_id", "split", "policy", "reward", "seed", "provenance", "n_examples", "accuracy",
                 "mean_compute", "mean_flops", "mean_steps", "action_frequencies", "difficulty_correlation",
                 "full_depth", "vs_threshold", "baselines", "oracle", "prefix_oracle", "best_fixed_path",
                 "thresholds_chosen_on_val", "curves", "examples")


def test_report_has_the_required_keys(evaluated):
    report, run_dir = evaluated
    saved = json.loads((run_dir / "report.json").read_text())
    for key in REQUIRED_KEYS:
        assert key in saved, f"report.json lacks {key!r}"
    assert saved["env_id"] == "DynaLay-Digits-v0" and saved["reward"] == "paper(lambda_compute=0.1)"
    assert saved["split"] == "test" and saved["seed"] == 3 and saved["policy"] == "confidence_agent"
    assert saved["n_examples"] == 359 == len(saved["examples"]["example"])
    assert saved["provenance"] == seq_core(1, "test").provenance
    provenance = saved["model_provenance"]  # the full identity of the main model, beside its id
    assert provenance["id"] == saved["provenance"] and provenance["dataset"]["name"] == "digits"
    assert {"weights_hash", "config_hash", "package_version", "recipe_version"} <= set(provenance)
    assert set(saved["full_depth"]) >= {"accuracy", "mean_compute"}
    assert saved["full_depth"]["mean_compute"] == pytest.approx(1.0, abs=0.1)  # 1.0 = full depth on val
    assert set(saved["vs_threshold"]) >= {"difference", "ci95"} and len(saved["vs_threshold"]["ci95"]) == 2
    assert sum(saved["action_frequencies"].values()) == pytest.approx(1.0)
    for name, param in (("confidence", "tau"), ("entropy", "h"), ("margin", "m"), ("stable_prediction", "k")):
        curve = saved["curves"][name]  # every distinct threshold of the split, one point each
        assert len(curve["threshold"]) == len(curve["accuracy"]) == len(curve["mean_compute"]) == curve["n_thresholds"]
        assert curve["param"] == param and param in saved["thresholds_chosen_on_val"]
    assert len(saved["curves"]["confidence"]["threshold"]) > 100
    # The compute unit is the model's own normaliser (mean full-depth FLOPs on val, fixed at pre-training).
    assert saved["flops_per_unit_compute"] == pytest.approx(digits_model().cost_table().normalizer)
    for baseline in saved["baselines"]:
        assert set(baseline) >= {"name", "params", "accuracy", "mean_compute"}
    names = {b["name"] for b in saved["baselines"]}
    assert names >= {"fixed_path", "confidence", "entropy", "margin", "stable_prediction", "random", "oracle",
                     "prefix_oracle"}
    assert saved["prefix_oracle"]["accuracy"] <= saved["oracle"]["accuracy"] + 1e-12  # a prefix is a path
    # Decisions counted: the agent (a confidence rule) pays its statistic; env-only compute beside it.
    assert saved["decision_flops"] == statistic_flops("confidence", 10) > 0
    assert saved["mean_env_compute"] < saved["mean_compute"]
    for baseline in saved["baselines"]:
        assert baseline["mean_env_compute"] <= baseline["mean_compute"]
        assert (baseline["decision_flops"] > 0) == (baseline["name"] in STATISTICS)
    assert "env only" in (run_dir / "report.md").read_text()
    # Adaptivity per episode, for the focus policy and every baseline.
    for stats in [saved["episode_compute"]] + [b["episode_compute"] for b in saved["baselines"]]:
        assert stats["p5"] <= stats["p50"] <= stats["p95"] and stats["n"] == 359
    focus = saved["episode_compute"]
    assert focus["p95_over_p5"] == pytest.approx(focus["p95"] / focus["p5"])
    assert focus["mean"] == pytest.approx(saved["mean_compute"])
    full = next(b for b in saved["baselines"] if b["name"] == "fixed_path" and b["params"]["path"] == [])
    assert full["episode_compute"]["spearman_with_difficulty"] is None  # constant compute: no correlation


def test_report_names_its_dataset_without_metadata(evaluated):
    report, _ = evaluated
    assert report.get("dataset") == "digits"


def test_report_figures_are_consistent(evaluated):
    report, run_dir = evaluated
    baselines = report["baselines"]
    oracle = next(b for b in baselines if b["name"] == "oracle")
    assert oracle["accuracy"] == pytest.approx(report["oracle"]["accuracy"])
    for b in baselines:  # no policy can be right where no path is
        assert b["accuracy"] <= oracle["accuracy"] + 1e-12, b
    assert report["accuracy"] <= oracle["accuracy"]
    full = next(b for b in baselines if b["name"] == "fixed_path" and b["params"]["path"] == [1, 2, 3])
    assert full["accuracy"] == pytest.approx(report["full_depth"]["accuracy"])
    # The agent (tau=0.13) is itself a point of the exact threshold curve: it cannot beat its hull.
    assert report["vs_threshold"]["difference"] <= 1e-12
    assert not report["vs_threshold"]["beats_threshold"]
    # The agent's records replayed here agree with the report.
    agent = run_policy(make_eval_core("test"), eval_agent())
    assert report["accuracy"] == pytest.approx(agent.accuracy)
    assert report["mean_compute"] == pytest.approx(agent.mean_compute)
    assert report["mean_flops"] == pytest.approx(agent.flops.mean())
    assert report["examples"]["prediction"] == agent.prediction.tolist()


def test_report_files_are_written_atomically(evaluated):
    report, run_dir = evaluated
    md = (run_dir / "report.md").read_text()
    assert "confidence_agent" in md and "path oracle" in md and "prefix oracle" in md
    assert f"Main model `{report['provenance']}`" in md
    for name in FIGURES:
        data = (run_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000, name
        assert f"]({name})" in md
    assert hidden_files(run_dir) == []


def test_validate_report_accepts_the_report_and_detects_tampering(evaluated):
    report, _ = evaluated
    core = seq_core(1, "test")
    result = validate_report(report, core)
    assert result["valid"], result
    assert result["predictions_match"] == result["flops_match"] == result["n_examples"] == 359

    tampered = copy.deepcopy(report)
    tampered["examples"]["prediction"][5] = (tampered["examples"]["prediction"][5] + 1) % 10
    result = validate_report(tampered, core)
    assert not result["valid"] and result["predictions_match"] == 358 and result["flops_match"] == 359
    assert result["first_mismatches"] == [tampered["examples"]["example"][5]]

    tampered = copy.deepcopy(report)
    tampered["examples"]["flops"][7] *= 1.0001
    result = validate_report(tampered, core)
    assert not result["valid"] and result["flops_match"] == 358
    assert result["first_mismatches"] == [tampered["examples"]["example"][7]]


def test_validate_report_needs_per_example_paths():
    with pytest.raises(ValueError, match="per-example paths"):
        validate_report({"split": "test"}, seq_core(1, "test"))


def test_evaluate_without_agent_reports_the_confidence_baseline(tmp_path):
    built: list[str] = []

    def counting_make_core(split: str):
        built.append(split)
        return make_eval_core(split)

    report = evaluate(counting_make_core, agent=None, split="val", n_boot=10, run_dir=tmp_path, figures=False)
    assert built == ["val", "val"]  # the evaluated split and val, each built once
    assert report["policy"] == "confidence"
    assert "vs_threshold" not in report and "examples" not in report
    chosen = run_policy(make_eval_core("val"), ConfidencePolicy(report["thresholds_chosen_on_val"]["tau"],
                                                                layer_order=(1, 2, 3)))
    assert report["accuracy"] == pytest.approx(chosen.accuracy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]
    json.loads((tmp_path / "report.json").read_text())


def test_full_path_records_match_the_fixed_path_baseline():
    records = run_policy(seq_core(64, "val"), FixedPathPolicy((1, 2, 3)))
    assert records.summary()["name"] == "fixed_path"
    assert records.summary()["mean_steps"] == 3.0


class _CostlyDeepPolicy(FixedPathPolicy):
    """The costliest layer for max_steps, with a decision as costly as the whole model: more compute
    than any random policy can spend."""

    def decision_flops(self) -> int:
        return int(self._core().normalizer)


@pytest.mark.parametrize("costly_decisions", [False, True])
def test_report_says_whether_the_random_row_is_at_matched_compute(tmp_path, costly_decisions):
    core = make_eval_core("val")
    path = (costliest_layer(core.model),) * core.max_steps
    agent = _CostlyDeepPolicy(path) if costly_decisions else FixedPathPolicy(path)
    report = evaluate(make_eval_core, agent=agent, split="val", n_boot=10, run_dir=tmp_path, figures=False)
    match = report["random_match"]
    assert match["target_compute"] == pytest.approx(report["mean_compute"])
    random_row = next(b for b in report["baselines"] if b["name"] == "random")
    markdown = (tmp_path / "report.md").read_text()
    if costly_decisions:  # beyond the family's end: said, never presented as a match
        assert not match["matched"] and "no random policy reaches compute" in match["note"]
        assert "The random row is not at matched compute" in markdown
        assert random_row["mean_compute"] < 0.8 * report["mean_compute"]
    else:  # the deepest policy the env allows still gets its random twin
        assert match["matched"] and match["params"]["deep"] > 0.9
        assert random_row["mean_compute"] == pytest.approx(report["mean_compute"], rel=0.05)
        assert "not at matched compute" not in markdown
