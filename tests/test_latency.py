"""Latency tables (``dynalay_env.latency``): profiling, the cost table they give, storage beside the
checkpoint and the refusal of a table measured elsewhere. No speed figure is asserted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from dynalay_env.latency import (
    DeviceFingerprint,
    LatencyCostTable,
    LatencyTable,
    latency_table_path,
    load_latency_table,
    profile_latency,
    save_latency_table,
)
from dynalay_env.model import run_path
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
