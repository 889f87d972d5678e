"""agents.introspection_features: the states along the full-depth order, the two targets and the
AUROC table, on a tiny model."""

# Tests take the imported fixtures as parameters of the same name (pytest); not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from agents.curves import record_depths
from agents.introspection_features import (
    ALL,
    StateTable,
    auroc_table,
    collect_states,
    to_markdown,
    write_table,
)
from dynalay_env.options import OBSERVATION_GROUPS, ROUTER_GROUPS
from tests.vec_fixtures import _one_thread, digits_model  # noqa: F401  (fixtures)


def test_continue_helps_means_wrong_now_and_right_deeper() -> None:
    correct = np.array([[False, False, True], [True, False, False], [False, False, False], [False, True, True]])
    obs = np.arange(4 * 3, dtype=np.float32).reshape(4, 3, 1)
    table = StateTable(obs, correct, {"x": slice(0, 1)}, ["x"], (1, 2))
    targets = table.targets()
    rows, helps = targets["continue_helps"]
    np.testing.assert_array_equal(helps, [True, True, False, False, False, False, True, False])
    np.testing.assert_array_equal(rows[:, 0], obs[:, :2].reshape(-1))  # depth D is left out
    np.testing.assert_array_equal(targets["correct"][1], correct.reshape(-1))


def test_states_table_and_markdown_on_a_tiny_model(digits_model, tmp_path: Path) -> None:
    model, dataset = digits_model
    train = collect_states(model, dataset, "agent_train", max_steps=2, batch=100)  # a partial last batch
    val = collect_states(model, dataset, "val", max_steps=2, batch=100)
    x, y = dataset.as_tensors("val")
    record = record_depths(model, x, y, max_steps=2)
    assert val.order == record.order == (1, 2)
    assert val.obs.shape == (y.shape[0], 3, len(val.names))
    np.testing.assert_array_equal(val.correct, record.correct)  # the env's states are the recorded pass's
    cols = {name: val.names.index(name) for name in ("top1_prob", "previous_top1_prob", "prediction_run")}
    np.testing.assert_allclose(val.obs[:, :, cols["top1_prob"]], record.statistics["confidence"], atol=1e-5)
    np.testing.assert_allclose(val.obs[:, 1:, cols["previous_top1_prob"]], record.statistics["confidence"][:, :-1],
                               atol=1e-5)
    np.testing.assert_allclose(val.obs[:, :, cols["prediction_run"]] * 2, record.statistics["stable_prediction"],
                               atol=1e-5)

    # every group the model can fill is observed (a model without a router has no router group)
    assert list(val.columns) == [g for g in OBSERVATION_GROUPS if g not in ROUTER_GROUPS]
    table = auroc_table(train, val, groups=["head", "history"], seed=0)  # two groups keep the test fast
    assert [row["features"] for row in table["rows"]] == ["head", "history", ALL]
    for row in table["rows"]:
        for target in ("correct", "continue_helps"):
            assert set(row[target]) == {"logistic", "mlp"}
    everything = table["rows"][-1]
    assert everything["n_features"] == sum(len(range(len(val.names))[val.columns[g]]) for g in ("head", "history"))
    assert everything["correct"]["logistic"] > 0.75  # the model's own state says when it is right
    labels = val.correct.reshape(-1)
    assert table["reference"]["confidence"]["correct"] == pytest.approx(
        roc_auc_score(labels, val.obs[:, :, cols["top1_prob"]].reshape(-1)))
    assert table["n_states"]["val"] == {"correct": labels.size, "continue_helps": val.correct[:, :-1].size}

    json_path, md_path = write_table({**table, "task": "digits"}, tmp_path / "t.json")
    assert json.loads(json_path.read_text())["rows"] == table["rows"]
    markdown = md_path.read_text()
    assert markdown == to_markdown({**table, "task": "digits"})
    assert all(f"| `{row['features']}` |" in markdown for row in table["rows"])

    with pytest.raises(ValueError, match="unknown observation group 'pixels'; valid: 'hidden'"):
        auroc_table(train, val, groups=["pixels"])
    with pytest.raises(ValueError, match="unknown classifier 'svm'; valid: logistic, mlp"):
        auroc_table(train, val, classifiers=["svm"])
