"""``cost="latency"`` on the agents floor: evaluation records, threshold curves, the path oracle and
``AdaptiveClassifier`` charge from the core's latency table, and FLOPs stay the FLOPs executed. On
the tiny digits model (K = 3 layers, max_steps = 4); no speed figure is asserted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.baselines import ConfidencePolicy, FixedPathPolicy, OraclePolicy, oracle_search
from agents.curves import exact_curve, record_core, records_at_threshold, statistic_flops
from agents.evaluate import cost_of, run_policy
from agents.inference import AdaptiveClassifier
from dynalay_env.latency import LatencyCostTable, LatencyTable, profile_latency
from tests.agent_fixtures import subset_core
from tests.env_fixtures import digits, digits_model, no_default_model_training  # noqa: F401  (autouse)

N = 120
DECISION_FLOPS = 5000.0


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    x_val, _ = digits().as_tensors("val")
    return profile_latency(digits_model(), x_val[:64], batch_sizes=(1, 16), repeats=3, warmup=1)


@pytest.fixture(scope="module")
def cores(table: LatencyTable):
    """(FLOPs core, latency core) over the same examples."""
    return subset_core(16, N), subset_core(16, N, cost="latency", latency_table=table)


def _by_hand(costs: LatencyCostTable, path: np.ndarray, iterations: np.ndarray) -> np.ndarray:
    """The table's charge of each episode: reset, then injection + iterations x iteration + head per step."""
    out = np.full(path.shape[0], costs.reset_flops())
    for i in range(path.shape[0]):
        for action, its in zip(path[i], iterations[i], strict=True):
            if action > 0:
                out[i] += costs.injection[action - 1] + its * costs.iteration[action - 1] + costs.head
    return out


def test_run_policy_charges_latency_from_the_table_and_keeps_executed_flops(cores) -> None:
    flops_core, latency_core = cores
    policy = ConfidencePolicy(0.9, layer_order=(1, 2, 3))
    f = run_policy(flops_core, policy, decision_flops=DECISION_FLOPS)
    lat = run_policy(latency_core, policy, decision_flops=DECISION_FLOPS)
    # Same episodes; the FLOPs executed are the same under either cost.
    np.testing.assert_array_equal(f.path, lat.path)
    np.testing.assert_array_equal(f.flops, lat.flops)
    # Under FLOPs the charged cost is the FLOPs, bit for bit.
    assert f.cost is None and f.unit == "FLOPs (executed)"
    np.testing.assert_array_equal(f.compute, f.flops / flops_core.normalizer)
    # Under latency: the table, by hand from the recorded paths and iterations, plus each decision
    # at its FLOPs' share of full depth.
    costs = latency_core.costs
    assert lat.unit == "seconds (table-estimated)"
    per_flop = latency_core.normalizer / latency_core.flops_normalizer
    expected = _by_hand(costs, lat.path, lat.fpi_iterations) + lat.decisions * DECISION_FLOPS * per_flop
    np.testing.assert_allclose(lat.cost, expected, rtol=1e-12)
    np.testing.assert_allclose(lat.compute, expected / costs.normalizer, rtol=1e-12)
    np.testing.assert_allclose(lat.env_compute, _by_hand(costs, lat.path, lat.fpi_iterations) / costs.normalizer,
                               rtol=1e-12)
    # The decision costs the same share of full depth under both costs.
    np.testing.assert_allclose(lat.compute - lat.env_compute, f.compute - f.env_compute, rtol=1e-9)
    assert cost_of(latency_core) == {"name": "latency", "unit": "seconds (table-estimated)"}
    assert cost_of(flops_core) == {"name": "flops", "unit": "FLOPs (executed)"}


def test_full_depth_is_one_under_the_latency_table_up_to_iteration_spread(cores) -> None:
    _, latency_core = cores
    full = run_policy(latency_core, FixedPathPolicy((1, 2, 3)), decision_flops=0.0)
    costs = latency_core.costs
    np.testing.assert_allclose(full.cost, _by_hand(costs, full.path, full.fpi_iterations), rtol=1e-12)
    assert 0.5 < full.mean_compute < 2.0  # the normaliser is full depth on val at the mean iterations


def test_curves_under_latency_use_the_table(cores) -> None:
    flops_core, latency_core = cores
    record_f, record_l = record_core(flops_core), record_core(latency_core)
    np.testing.assert_array_equal(record_f.flops, record_l.flops)
    assert record_f.cost is None and record_l.unit == "seconds (table-estimated)"
    assert record_l.normalizer == latency_core.normalizer
    # Exiting at depth d costs the table's charge of the first d layers.
    order = np.asarray(record_l.order)
    for d in range(record_l.depth + 1):
        path = np.where(np.arange(record_l.depth) < d, order, -1)[None, :].repeat(record_l.n, 0)
        np.testing.assert_allclose(record_l.cost[:, d], _by_hand(latency_core.costs, path, record_l.iterations),
                                   rtol=1e-12)
    # Every point of the exact curve is what running the rule on the latency core charges.
    cost = statistic_flops("confidence", latency_core.num_classes)
    curve = exact_curve(record_l, "confidence", cost)
    for j in np.unique(np.r_[np.linspace(0, len(curve) - 1, 3).astype(int), len(curve) - 1]):
        tau = curve.threshold[j]
        brute = run_policy(latency_core, ConfidencePolicy(tau, layer_order=(1, 2, 3)))
        exact = records_at_threshold(record_l, "confidence", tau, cost)
        np.testing.assert_array_equal(exact.path, brute.path)
        np.testing.assert_allclose(exact.cost, brute.cost, rtol=1e-12)
        assert curve.mean_compute[j] == pytest.approx(brute.mean_compute, rel=1e-12)
    # The same rule under FLOPs gives another compute: the curves do charge differently.
    curve_f = exact_curve(record_f, "confidence", cost)
    assert not np.allclose(curve_f.mean_compute[:-1], curve.mean_compute[:-1])


def test_the_path_oracle_is_cheapest_in_the_charged_unit(cores) -> None:
    _, latency_core = cores
    search = oracle_search(latency_core.model, latency_core.x, latency_core.y, latency_core.max_steps,
                           costs=latency_core.costs)
    assert search.unit == "seconds (table-estimated)"
    oracle = run_policy(latency_core, OraclePolicy(search), decision_flops=0.0)
    solved = search.solvable
    np.testing.assert_allclose(oracle.compute[solved], search.min_compute[solved], rtol=1e-9)


def test_adaptive_classifier_reports_compute_in_the_charged_unit(cores, table: LatencyTable) -> None:
    flops_core, latency_core = cores
    x = latency_core.x
    policy = ConfidencePolicy(0.9, layer_order=(1, 2, 3))
    model = latency_core.model
    flops_result = AdaptiveClassifier(model, policy, batch_size=64).predict(x)
    lat_clf = AdaptiveClassifier(model, policy, batch_size=64, cost="latency", latency_table=table)
    result = lat_clf.predict(x)
    assert result.unit == lat_clf.unit == "seconds (table-estimated)" and flops_result.unit == "FLOPs (executed)"
    np.testing.assert_array_equal(result.flops, flops_result.flops)
    np.testing.assert_array_equal(flops_result.cost, flops_result.flops)
    path = result.path
    # The iterations of each step: the same episodes run on the latency core (same paths).
    records = run_policy(latency_core, policy)
    np.testing.assert_array_equal(records.path, path)
    costs = latency_core.costs
    expected = _by_hand(costs, path, records.fpi_iterations) + records.decisions * policy.decision_flops() * (
        latency_core.normalizer / latency_core.flops_normalizer)
    np.testing.assert_allclose(result.cost, expected, rtol=1e-9)
    np.testing.assert_allclose(result.compute, expected / costs.normalizer, rtol=1e-9)
    with pytest.raises(ValueError, match="cost='latency' needs latency_table"):
        AdaptiveClassifier(model, policy, cost="latency")
    assert torch.equal(torch.as_tensor(result.prediction), torch.as_tensor(flops_result.prediction))


def test_the_profile_command_writes_the_table_beside_the_checkpoint(tmp_path, capsys) -> None:
    import train_agent
    from dynalay_env.env import make_core
    from dynalay_env.latency import DeviceFingerprint, latency_table_path, load_latency_table
    from dynalay_env.model import save_checkpoint

    ds = digits()
    path = tmp_path / "main_model.pt"
    save_checkpoint(path, digits_model(), {"name": ds.name, "fingerprint": ds.fingerprint})
    threads = torch.get_num_threads()
    try:
        status = train_agent.main(["profile", "--model", str(path), "--batch-sizes", "1", "8", "--repeats", "2",
                                   "--warmup", "0", "--threads", "1"])
        assert status == 0
        out = capsys.readouterr().out
        assert "table-estimated" in out and "| layer 3 iteration |" in out and "1 thread(s)" in out
        target = latency_table_path(path, DeviceFingerprint.current("cpu"))
        assert target.is_file() and target.name == "main_model.latency-cpu-1t.json"
        stored = load_latency_table(path, digits_model())
        assert stored.batch_sizes == (1, 8) and stored.repeats == 2 and stored.warmup == 0
        # The env finds it beside the checkpoint under cost="latency".
        core = make_core(2, dataset="digits", model=str(path), cost="latency")
        assert core.costs.unit == "seconds (table-estimated)" and core.options.latency_table == stored
    finally:
        torch.set_num_threads(threads)
    # --model and --dataset name the model two ways: one at a time.
    with pytest.raises(SystemExit):
        train_agent.main(["profile", "--model", str(path), "--dataset", "digits"])


def test_train_and_evaluate_end_to_end_under_latency(tmp_path) -> None:
    import shutil

    from agents.pipelines import run_evaluation
    from agents.training import train
    from dynalay_env.latency import save_latency_table
    from dynalay_env.model import load_checkpoint
    from tests.agent_fixtures import digits_checkpoint, train_config

    source = tmp_path / "model" / "main_model.pt"
    source.parent.mkdir()
    shutil.copy(digits_checkpoint(), source)
    x_val, _ = digits().as_tensors("val")
    table = profile_latency(load_checkpoint(source).model, x_val[:32], batch_sizes=(1, 8), repeats=2, warmup=0)
    save_latency_table(table, source)
    run_dir = tmp_path / "run"
    train(train_config(run_dir, model=str(source), env_kwargs={"cost": "latency"}))
    # The table travels with the model into the run folder, where evaluation and inference find it.
    assert (run_dir / f"main_model.latency-{table.fingerprint.slug}.json").is_file()
    report = run_evaluation(run_dir, "test", n_envs=64, n_boot=10, figures=False)
    assert report["cost"] == {"name": "latency", "unit": "seconds (table-estimated)"}
    assert report["cost_unit"] == "seconds (table-estimated)"
    assert "table-estimated" in (run_dir / "report.md").read_text()
    result = AdaptiveClassifier.from_run(run_dir, batch_size=64).predict(digits().as_tensors("test")[0][:64])
    assert result.unit == "seconds (table-estimated)"
    assert AdaptiveClassifier.from_run(run_dir, cost="flops").unit == "FLOPs (executed)"
