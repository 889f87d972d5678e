"""Latency tables (``dynalay_env.latency``): profiling, the cost table they give, storage beside the
checkpoint and the refusal of a table measured elsewhere. No speed figure is asserted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dynalay_env.core import DynaLayCore
from dynalay_env.env import make_core
from dynalay_env.latency import (
    DeviceFingerprint,
    LatencyCostTable,
    LatencyTable,
    latency_table_path,
    load_latency_table,
    profile_latency,
    save_latency_table,
)
from dynalay_env.model import run_path, save_checkpoint
from dynalay_env.options import EnvOptions
from tests.env_fixtures import digits, digits_model, no_default_model_training  # noqa: F401


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    x_val, _ = digits().as_tensors("val")
    return profile_latency(digits_model(), x_val[:64], batch_sizes=(1, 8, 32), repeats=3, warmup=1)


def test_profile_covers_every_piece_at_every_batch_size(table: LatencyTable) -> None:
    model = digits_model()
    assert table.batch_sizes == (1, 8, 32)
    assert table.num_layers == model.num_layers
    for values in (table.encoder, table.head, *table.injection, *table.iteration):
        assert len(values) == 3
        assert all(v >= 0.0 and v < 1.0 for v in values)  # seconds per sample: finite, non-negative
    assert all(v > 0.0 for v in table.head)
    assert table.weights_hash
    assert table.fingerprint == DeviceFingerprint.current("cpu")
    # The full-depth iterations are the model's own on these inputs.
    x_val, _ = digits().as_tensors("val")
    full = run_path(model, x_val[:64], list(range(model.num_layers)))
    assert table.full_depth_iterations == tuple(float(r.iterations.double().mean()) for r in full.results)


def test_profiling_leaves_the_model_unchanged(table: LatencyTable) -> None:
    model = digits_model()
    assert [(layer.tol, layer.max_iter) for layer in model.layers] == [
        (layer.tol, layer.max_iter) for layer in type(model)(model.config).layers]
    assert not model.training


def test_cost_table_charges_from_the_table(table: LatencyTable) -> None:
    model = digits_model()
    costs = table.cost_table(model.cost_table(), batch_size=8)
    assert isinstance(costs, LatencyCostTable)
    assert costs.unit == "seconds (table-estimated)"
    assert costs.encoder == table.encoder[1] and costs.head == table.head[1]
    assert costs.injection == tuple(row[1] for row in table.injection)
    # The normaliser is the full-depth path at the mean iterations: 1.0 = full depth under either cost.
    expected = costs.encoder + costs.head + sum(
        inj + its * it + costs.head for inj, its, it in zip(costs.injection, table.full_depth_iterations,
                                                            costs.iteration, strict=True))
    assert costs.normalizer == pytest.approx(expected, rel=1e-12)
    # A step is charged iterations x the table's per-iteration latency, never the executed FLOPs.
    x_val, _ = digits().as_tensors("val")
    run = run_path(model, x_val[:16], [0, 2], costs=costs)
    iters = [r.iterations.double() for r in run.results]
    by_hand = (costs.encoder + costs.head + costs.injection[0] + iters[0] * costs.iteration[0] + costs.head
               + costs.injection[2] + iters[1] * costs.iteration[2] + costs.head)
    torch.testing.assert_close(run.flops, by_hand)


def test_cost_table_interpolates_in_log_batch_size(table: LatencyTable) -> None:
    flops = digits_model().cost_table()
    lo, hi = table.cost_table(flops, 8), table.cost_table(flops, 32)
    mid = table.cost_table(flops, 16)  # halfway between 8 and 32 in log scale
    assert mid.encoder == pytest.approx((lo.encoder + hi.encoder) / 2)
    assert table.cost_table(flops, 1000).head == hi.head  # clamped beyond the profiled sizes
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        table.cost_table(flops, 0)


def test_stored_beside_the_checkpoint_and_reloaded(table: LatencyTable, tmp_path: Path) -> None:
    checkpoint = tmp_path / "main_model.pt"
    path = save_latency_table(table, checkpoint)
    assert path == latency_table_path(checkpoint, table.fingerprint)
    assert path == tmp_path / f"main_model.latency-{table.fingerprint.slug}.json"
    assert load_latency_table(checkpoint, digits_model()) == table
    assert json.loads(path.read_text())["unit"] == "seconds per sample"


def test_a_table_from_elsewhere_is_refused_unless_forced(table: LatencyTable, tmp_path: Path) -> None:
    checkpoint = tmp_path / "main_model.pt"
    other = dataclasses.replace(table, fingerprint=dataclasses.replace(table.fingerprint, torch_version="1.0.0"))
    save_latency_table(other, checkpoint)
    with pytest.raises(ValueError, match="torch_version: '1.0.0'"):
        load_latency_table(checkpoint, digits_model())
    assert load_latency_table(checkpoint, digits_model(), force=True) == other
    wrong_model = dataclasses.replace(table, weights_hash="0" * 16)
    save_latency_table(wrong_model, checkpoint)
    with pytest.raises(ValueError, match="weights_hash"):
        load_latency_table(checkpoint, digits_model())


def test_a_missing_table_names_the_file_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dynalay profile --model"):
        load_latency_table(tmp_path / "main_model.pt", digits_model())


def test_json_round_trip_and_bad_format(table: LatencyTable) -> None:
    assert LatencyTable.from_json(json.loads(json.dumps(table.to_json()))) == table
    with pytest.raises(ValueError, match="unsupported latency table format"):
        LatencyTable.from_json({**table.to_json(), "format": 99})
    with pytest.raises(ValueError, match="one entry per batch size"):
        dataclasses.replace(table, encoder=table.encoder[:1])


def test_markdown_names_the_unit_and_the_machine(table: LatencyTable) -> None:
    text = table.markdown()
    assert "microseconds per sample" in text and "table-estimated" in text
    assert table.fingerprint.device in text
    assert text.count("| layer ") == 2 * table.num_layers


# ---- cost="latency" in the env ---------------------------------------------------------------------


def _latency_checkpoint(table: LatencyTable, folder: Path) -> Path:
    """The digits model saved as a checkpoint, its latency table beside it."""
    ds = digits()
    path = folder / "main_model.pt"
    save_checkpoint(path, digits_model(), {"name": ds.name, "fingerprint": ds.fingerprint})
    save_latency_table(table, path)
    return path


def test_latency_cost_is_charged_from_the_table_and_flops_stay_executed(table: LatencyTable) -> None:
    model, ds = digits_model(), digits()
    flops_core = DynaLayCore(model, ds, 4, split="val", sample_mode="sequential")
    latency_core = DynaLayCore(model, ds, 4, split="val", sample_mode="sequential", cost="latency",
                               latency_table=table)
    costs = latency_core.costs
    assert isinstance(costs, LatencyCostTable) and costs.batch_size == table.batch_sizes[-1]
    assert latency_core.normalizer == costs.normalizer and latency_core.flops_normalizer == flops_core.normalizer
    flops_core.reset()
    latency_core.reset()
    charged = torch.full((4,), costs.reset_flops(), dtype=torch.float64)
    for step, actions in enumerate(([1, 2, 3, 0], [3, 3, 1, 0])):
        active = ~latency_core.done
        out_f = flops_core.step(torch.tensor(actions), active=active)
        out_l = latency_core.step(torch.tensor(actions), active=active)
        its = torch.as_tensor(out_l.info["fpi_iterations"])[:, step].double()  # [N, max_steps]: this step's
        for slot, action in enumerate(actions):
            if action and bool(active[slot]):
                charged[slot] += costs.injection[action - 1] + float(its[slot]) * costs.iteration[action - 1] \
                    + costs.head
        # Same transitions; FLOPs executed are the same under either cost; compute is the table's.
        np.testing.assert_array_equal(out_f.info["flops"], out_l.info["flops"])
        np.testing.assert_allclose(out_l.info["compute"], (charged / costs.normalizer).numpy(), rtol=1e-12)
    np.testing.assert_array_equal(out_f.info["prediction"], out_l.info["prediction"])


def test_make_core_finds_the_table_beside_the_checkpoint(table: LatencyTable, tmp_path: Path) -> None:
    path = _latency_checkpoint(table, tmp_path)
    core = make_core(2, dataset="digits", model=str(path), cost="latency")
    assert isinstance(core.costs, LatencyCostTable) and core.options.latency_table == table
    for other in tmp_path.glob("*.latency-*.json"):
        other.unlink()
    with pytest.raises(FileNotFoundError, match="dynalay profile --model"):
        make_core(2, dataset="digits", model=str(path), cost="latency")


def test_latency_options_are_checked() -> None:
    with pytest.raises(ValueError, match="latency_table only applies to cost='latency'"):
        EnvOptions(latency_table="table.json")
    with pytest.raises(ValueError, match="unknown cost 'seconds'"):
        EnvOptions(cost="seconds")
    with pytest.raises(ValueError, match="cost='latency' needs latency_table"):
        DynaLayCore(digits_model(), digits(), 1, cost="latency")
    with pytest.raises(ValueError, match="a model object needs latency_table"):
        make_core(1, dataset="digits", model=digits_model(), cost="latency")
