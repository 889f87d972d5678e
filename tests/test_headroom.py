"""agents.headroom: the routing and exit headroom follow their definitions on a real path table."""

from __future__ import annotations

import numpy as np
import pytest

from agents.headroom import exit_headroom, selection_headroom
from dynalay_env.paths import enumerate_paths, prefix_oracle_by_order
from tests.vec_fixtures import tiny_model


def test_routing_headroom_is_the_path_oracle_over_the_best_fixed_order():
    model, dataset = tiny_model("synthetic")
    out = selection_headroom(model, dataset, max_steps=3, auroc=False)
    routing = out["routing"]
    x, y = dataset.as_tensors("test")
    table = enumerate_paths(model, x, y, 3)
    orders = prefix_oracle_by_order(table, model.num_layers, 3)
    assert routing["prefix_oracle_by_order"] == orders and len(orders) == 6  # 3 layers: 3! orders
    best = max(orders, key=orders.get)
    assert routing["best_fixed_order"] == best
    assert routing["path_oracle_accuracy"] == pytest.approx(float(table.correct.any(0).double().mean()))
    assert routing["routing_headroom"] == pytest.approx(routing["path_oracle_accuracy"] - orders[best])
    assert routing["routing_headroom"] >= 0  # every prefix of an order is a path
    # The exit headroom is measured along that best order, from the same prefix oracle.
    ex = out["exit_headroom"]
    assert ex["order"] == [int(a) for a in best.split("-")]
    assert ex["prefix_oracle_accuracy"] == pytest.approx(orders[best])
    assert ex["exit_headroom"] == pytest.approx(ex["prefix_oracle_accuracy"] - ex["confidence_hull_at_that_compute"])
    assert out["auroc"] is None


def test_the_exit_headroom_of_another_order_is_its_own():
    model, dataset = tiny_model("synthetic")
    a = exit_headroom(model, dataset, (1, 2, 3), 3)
    b = exit_headroom(model, dataset, (3, 2, 1), 3)
    assert a["order"] == [1, 2, 3] and b["order"] == [3, 2, 1]
    assert 0 < a["prefix_oracle_mean_compute"] and np.isfinite(b["exit_headroom"])


def test_the_auroc_table_comes_with_it():
    model, dataset = tiny_model("digits")
    out = selection_headroom(model, dataset, max_steps=2)
    assert [row["features"] for row in out["auroc"]["rows"]][-1] == "all"
    assert set(out["auroc"]["classifiers"]) == {"logistic"}
