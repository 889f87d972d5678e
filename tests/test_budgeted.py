"""``agents.budgeted``: MSDNet's budgeted score on hand-made records (no model, no env).

One recorded pass of 400 examples over three layers gives the confidence rule's exact curve; runs
are exit-depth choices on the same examples (paired with the curve, as a played policy is)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.budgeted import (
    BUDGETS,
    BudgetRun,
    budget_entry,
    budgeted_score,
    common_range_hypervolume,
    margin_resamples,
    render_markdown,
    score_families,
)
from agents.curves import DepthRecord, exact_curve, records_at_exits
from agents.records import hull_accuracy_at

N = 400
# Exit cost per depth 0..3 (normalised compute, 1.0 = full depth).
DEPTH_COST = np.array([0.05, 0.25, 0.6, 1.0])


def make_record(seed: int = 0) -> DepthRecord:
    """Examples of rising difficulty: deeper exits are right more often, confidence tracks it."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, N)
    difficulty = rng.uniform(0, 1, N)
    right = difficulty[:, None] < np.array([0.3, 0.55, 0.75, 0.85])[None, :]
    wrong = (label[:, None] + 1 + rng.integers(0, 9, (N, 4))) % 10
    prediction = np.where(right, label[:, None], wrong)
    confidence = np.clip(np.where(right, 0.9, 0.5) + rng.normal(0, 0.1, (N, 4)), 0.1, 1.0).astype(np.float32)
    flops = DEPTH_COST[None, :] * (1 + 0.02 * rng.uniform(size=(N, 1)))
    return DepthRecord((1, 2, 3), label, prediction, flops, np.ones((N, 3), np.int64),
                       {"confidence": confidence}, 1.0, 4)


@pytest.fixture(scope="module")
def record() -> DepthRecord:
    return make_record()


@pytest.fixture(scope="module")
def curve(record):
    return exact_curve(record, "confidence")


def run_at(record: DepthRecord, depth: int | np.ndarray, name: str, val_accuracy: float,
           val_compute: float) -> BudgetRun:
    exits = np.broadcast_to(np.asarray(depth, dtype=np.int64), (N,)).copy()
    return BudgetRun(name, val_accuracy, val_compute, records_at_exits(record, exits, name, {}))


@pytest.fixture(scope="module")
def family(record) -> list[BudgetRun]:
    # An oracle-like run (exits where right) at about 0.2 compute, and fixed depths.
    right = record.correct
    oracle_exits = np.where(right.any(1), right.argmax(1), 0)
    return [run_at(record, 0, "exit-now", 0.30, 0.05),
            run_at(record, oracle_exits, "smart", 0.84, 0.18),
            run_at(record, 1, "depth-1", 0.55, 0.26),
            run_at(record, 2, "depth-2", 0.74, 0.61)]


def test_the_entry_is_the_best_val_run_within_the_budget(family):
    assert budget_entry(family, 0.1).name == "exit-now"
    assert budget_entry(family, 0.2).name == "smart"
    assert budget_entry(family, 0.5).name == "smart"  # depth-1 fits too but is worse on val
    assert budget_entry(family, 0.04) is None
    tied = [BudgetRun("dear", 0.8, 0.19, family[1].test), BudgetRun("cheap", 0.8, 0.1, family[1].test)]
    assert budget_entry(tied, 0.2).name == "cheap"  # ties go to the cheaper run on val


def test_the_margin_is_the_entry_against_the_hull_at_the_budget(family, curve):
    out = budgeted_score(family, curve, n_boot=200)
    assert [b["budget"] for b in out["budgets"]] == list(BUDGETS)
    margins = []
    for b in out["budgets"]:
        entry = b["entry"]
        run = budget_entry(family, b["budget"])
        hull = hull_accuracy_at(curve.mean_compute, curve.accuracy, b["budget"])
        assert entry["run"] == run.name and entry["hull_test_accuracy"] == pytest.approx(hull)
        assert entry["margin"] == pytest.approx(run.test.accuracy - hull)
        assert entry["test_compute"] == pytest.approx(run.test.mean_compute)
        assert entry["ci"][0] <= entry["margin"] <= entry["ci"][1]
        margins.append(entry["margin"])
    assert out["score"] == pytest.approx(np.mean(margins))
    assert out["ci"][0] <= out["score"] <= out["ci"][1]
    assert out["complete"] and out["budgets_scored"] == list(BUDGETS)
    # The oracle-like run beats the confidence hull at 0.2 by a clear margin.
    assert out["budgets"][1]["entry"]["ci"][0] > 0


def test_resamples_pair_the_run_with_a_refitted_hull(family, record):
    """Each resample equals the brute force: the run's accuracy on the resampled examples minus the
    hull of the exact curve recomputed from those examples."""
    run = family[1]
    rng = np.random.default_rng(7)
    idx = [rng.integers(0, N, N) for _ in range(3)]
    weights = np.stack([np.bincount(i, minlength=N) for i in idx]).astype(float)
    got = margin_resamples(run.test, exact_curve(record, "confidence"), 0.35, weights)
    for b, i in enumerate(idx):
        sub = DepthRecord(record.order, record.label[i], record.prediction[i], record.flops[i],
                          record.iterations[i], {"confidence": record.statistics["confidence"][i]}, 1.0, 4)
        brute = exact_curve(sub, "confidence")
        expected = run.test.correct[i].mean() - hull_accuracy_at(brute.mean_compute, brute.accuracy, 0.35)
        assert got[b] == pytest.approx(expected, abs=1e-9)


def test_a_run_above_every_budget_leaves_the_score_unchanged(family, record, curve):
    before = budgeted_score(family, curve, n_boot=200)
    # Perfect on val and test, but at full depth: above every budget, so never an entry.
    perfect = BudgetRun("full-depth-perfect", 1.0, 0.95, records_at_exits(record, np.full(N, 3), "x", {}))
    perfect.test.correct[:] = True
    after = budgeted_score([*family, perfect], curve, n_boot=200)
    assert after == before


def test_a_run_within_a_budget_can_change_the_score(family, record, curve):
    before = budgeted_score(family, curve, n_boot=200)
    better = run_at(record, 1, "depth-1-lucky-on-val", 0.99, 0.26)  # best on val within 0.35 and 0.5
    after = budgeted_score([*family, better], curve, n_boot=200)
    assert [b["entry"]["run"] for b in after["budgets"]] == ["exit-now", "smart", "depth-1-lucky-on-val",
                                                              "depth-1-lucky-on-val"]
    assert after["score"] != pytest.approx(before["score"])
    assert after["budgets"][:2] == before["budgets"][:2]  # the budgets it does not fit are untouched


def test_an_entry_whose_test_compute_overshoots_is_flagged(record, curve):
    # Chosen on val at 0.19 compute, but it spends 0.25 on test: more than 5 % over B = 0.2.
    drifted = run_at(record, 1, "drifted", 0.6, 0.19)
    out = budgeted_score([drifted], curve, budgets=(0.2, 0.35), n_boot=50)
    assert out["budgets"][0]["entry"]["over_budget"] and not out["budgets"][1]["entry"]["over_budget"]
    assert out["flagged"] == [0.2]
    within = budgeted_score([drifted], curve, budgets=(0.2,), n_boot=50, tolerance=0.5)
    assert within["flagged"] == []


def test_a_family_without_runs_under_a_budget_has_no_entry_there(family, curve):
    out = budgeted_score(family[2:], curve, n_boot=100)  # cheapest val compute 0.26
    assert [b["entry"] is None for b in out["budgets"]] == [True, True, False, False]
    assert out["budgets_scored"] == [0.35, 0.5] and not out["complete"]
    assert out["score"] == pytest.approx(np.mean([b["entry"]["margin"] for b in out["budgets"][2:]]))
    none = budgeted_score(family[3:], curve, budgets=(0.1, 0.2), n_boot=50)
    assert none["score"] is None and none["ci"] is None


def test_a_smaller_alpha_widens_the_interval(family, curve):
    wide = budgeted_score(family, curve, n_boot=300, alpha=0.05 / 6)
    narrow = budgeted_score(family, curve, n_boot=300, alpha=0.05)
    assert wide["score"] == narrow["score"]
    assert wide["ci"][0] <= narrow["ci"][0] and wide["ci"][1] >= narrow["ci"][1]
    assert wide["ci"] != narrow["ci"]
    with pytest.raises(ValueError, match="alpha must be in"):
        budgeted_score(family, curve, alpha=0.0)


def test_hypervolume_counts_only_the_range_both_fronts_cover():
    pytest.importorskip("optuna")
    # front covers compute 0.1..0.8, other 0.3..0.5: the common range is [0.3, 0.5].
    front = [(0.6, 0.1), (0.9, 0.8)]
    other = [(0.7, 0.3), (0.8, 0.5)]
    out = common_range_hypervolume(front, other, floor_accuracy=0.5)
    assert out["range"] == [0.3, 0.5]
    # front: only (0.6, 0.1) counts, from 0.3 to 0.5: 0.2 x 0.1. other: 0.2 x 0.2.
    assert out["front"] == pytest.approx(0.2 * 0.1)
    assert out["other"] == pytest.approx(0.2 * 0.2)
    # Coverage beyond the common range adds nothing.
    wider = common_range_hypervolume([*front, (0.99, 2.0)], other, floor_accuracy=0.5)
    assert wider["front"] == pytest.approx(out["front"])
    assert common_range_hypervolume([(0.9, 0.1)], [(0.9, 0.5)], 0.5)["range"] is None


def test_families_share_the_resamples_and_render_as_a_table(family, curve):
    scores = score_families({"learned": family, "fixed": family[2:]}, curve, n_boot=100, alpha=0.05 / 2)
    assert scores["learned"] == budgeted_score(family, curve, n_boot=100, alpha=0.05 / 2)
    table = render_markdown(scores)
    assert table.count("\n| ") == 2 and "\n| learned | " in table  # one row per family after the header
    assert "| fixed | no run | no run |" in table and "over 2 budgets" in table
    assert "97.5 % interval" in table
    assert render_markdown({}) == "No family has a run.\n"


def test_per_budget_intervals_take_their_own_correction(family, curve):
    loose = budgeted_score(family, curve, n_boot=200, alpha=0.05)
    strict = budgeted_score(family, curve, n_boot=200, alpha=0.05, budget_alpha=0.05 / len(BUDGETS))
    assert strict["ci"] == loose["ci"] and strict["budget_alpha"] == pytest.approx(0.0125)
    for a, b in zip(loose["budgets"], strict["budgets"], strict=True):
        if a["entry"] is not None:  # wider: a claim at the best-looking budget picks among them
            assert b["entry"]["ci"][0] <= a["entry"]["ci"][0] and b["entry"]["ci"][1] >= a["entry"]["ci"][1]
    with pytest.raises(ValueError, match="budget_alpha must be in"):
        budgeted_score(family, curve, budget_alpha=0.0)
    named = budgeted_score(family, curve, n_boot=0, curve_name="router_confidence")
    assert named["compared_with"].startswith("the router_confidence hull")
