"""How much does each observation group say? AUROC of two questions, per group and for all groups.

Every state visited along the full-depth order (:func:`agents.curves.full_depth_order`: layers 1..K
cut at ``max_steps``, depths ``d = 0..D``, the encoder state being depth 0) of every example is one
row, observed exactly as the env observes it (a :class:`~dynalay_env.core.DynaLayCore` with every
observation group, ``history`` included, stepped along the order in batches). Two binary targets:

* ``correct``: the head's prediction at the state is right. Every depth ``0..D`` counts.
* ``continue_helps``: the prediction at depth ``d`` is wrong and some deeper state of the order
  (``d' > d``) is right, i.e. continuing, with a well-chosen later exit, turns a wrong answer into a
  right one. Defined at ``d < D`` only (the order ends at D), so states at depth D are left out.

For each group alone and for ``all`` of them together, two classifiers (scikit-learn, standardised
inputs) are fitted on the states of ``agent_train`` and scored by AUROC on the states of ``val``:
``logistic`` (logistic regression) and ``mlp`` (one hidden layer of 32 ReLUs, at most 100 epochs). As a
reference without fitting, ``confidence`` ranks states by the top-1 probability (``correct``) and by
one minus it (``continue_helps``). A target with one class only on a split has no AUROC (None).

    python -m agents.introspection_features --env DynaLay-MNIST1D-v0 \\
        --out benchmarks/results/introspection_auroc_mnist1d.json   # also writes the .md beside it
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from agents.curves import full_depth_order
from dynalay_env import ENV_IDS
from dynalay_env.atomic import atomic_write_json, atomic_write_text
from dynalay_env.core import DynaLayCore, available_observation_groups
from dynalay_env.datasets import Dataset
from dynalay_env.env import make_core
from dynalay_env.model import FPIModel, provenance_of

TARGETS: dict[str, str] = {
    "correct": "the head's prediction at the state is right (every depth 0..D of the full-depth order)",
    "continue_helps": ("the prediction at depth d is wrong and a deeper state d' > d of the full-depth order "
                       "is right (states at d < D only)"),
}
CLASSIFIERS: dict[str, str] = {
    "logistic": "StandardScaler + LogisticRegression(max_iter=2000)",
    "mlp": "StandardScaler + MLPClassifier(hidden_layer_sizes=(32,), batch_size=256, max_iter=100)",
}
ALL = "all"


@dataclass
class StateTable:
    """Every state of a split along the full-depth order: ``n`` examples x ``D + 1`` depths.

    ``obs`` ``[n, D + 1, obs_dim]`` float32 (the env's observation with every group the model can fill),
    ``correct`` ``[n, D + 1]`` bool, ``columns`` maps each group to its observation columns."""

    obs: np.ndarray
    correct: np.ndarray
    columns: dict[str, slice]
    names: list[str]
    order: tuple[int, ...]

    def targets(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``target -> (rows [m, obs_dim], labels [m] bool)``, rows flattened example-major."""
        later = np.zeros_like(self.correct)  # some deeper depth is right
        later[:, :-1] = np.maximum.accumulate(self.correct[:, :0:-1], axis=1)[:, ::-1]
        helps = ~self.correct[:, :-1] & later[:, :-1]
        dim = self.obs.shape[2]
        return {"correct": (self.obs.reshape(-1, dim), self.correct.reshape(-1)),
                "continue_helps": (self.obs[:, :-1].reshape(-1, dim), helps.reshape(-1))}


@torch.no_grad()
def collect_states(model: FPIModel, dataset: Dataset, split: str, *, max_steps: int = 4, batch: int = 1024,
                   device: str = "cpu") -> StateTable:
    """Observe every example of ``split`` at every depth of the full-depth order, ``batch`` examples
    at a time (one batched reset and ``D`` batched steps per batch)."""
    n = int(dataset.as_tensors(split)[1].shape[0])
    core = DynaLayCore(model, dataset, min(batch, n), split=split, sample_mode="sequential", max_steps=max_steps,
                       observation_groups=available_observation_groups(model), device=device)
    order = full_depth_order(core.num_layers, max_steps)
    obs = np.zeros((n, len(order) + 1, core.observation_dim), dtype=np.float32)
    correct = np.zeros((n, len(order) + 1), dtype=bool)
    for start in range(0, n, core.num_envs):
        examples = np.arange(start, min(start + core.num_envs, n))
        m = examples.size
        obs[examples, 0] = core.reset(np.arange(m), examples).cpu().numpy()
        correct[examples, 0] = (core.logits[:m].argmax(1) == core.label[:m]).cpu().numpy()
        active = np.arange(core.num_envs) < m
        for d, action in enumerate(order, start=1):
            out = core.step(np.full(core.num_envs, action), active=active)
            obs[examples, d] = out.obs[:m].cpu().numpy()
            correct[examples, d] = out.info["correct"][:m]
    return StateTable(obs, correct, dict(core.observation_group_slices), list(core.observation_names), order)


def _classifier(kind: str, seed: int) -> Any:
    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if kind == "mlp":
        # No early stopping: sklearn's stops on validation *accuracy*, which a rare target leaves flat
        # (always "no"), so it stops at a nearly untrained net. The training loss's tolerance stops it.
        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), batch_size=256, max_iter=100,
                                                             random_state=seed))
    raise ValueError(f"unknown classifier {kind!r}; valid: {', '.join(CLASSIFIERS)}")


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < labels.size else None


def auroc_table(train: StateTable, val: StateTable, *, groups: Sequence[str] | None = None, seed: int = 0,
                classifiers: Sequence[str] = tuple(CLASSIFIERS)) -> dict[str, Any]:
    """The AUROC table: fit on ``train``'s states, score on ``val``'s (see the module docstring).

    Returns ``{"rows": [{"features", "n_features", "correct": {clf: auroc}, "continue_helps": {...}}],
    "reference": {"confidence": {target: auroc}}, "n_states", "positive_rate", ...}``; rows are each
    group of ``groups`` (default every group) alone, then ``all`` (those groups together)."""
    if train.names != val.names:
        raise ValueError("train and val states must come from the same observation layout")
    groups = list(train.columns) if groups is None else list(groups)
    for group in groups:
        if group not in train.columns:
            raise ValueError(f"unknown observation group {group!r}; valid: {', '.join(map(repr, train.columns))}")
    for kind in classifiers:
        if kind not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {kind!r}; valid: {', '.join(CLASSIFIERS)}")

    train_sets, val_sets = train.targets(), val.targets()
    feature_sets = [(g, np.arange(train.columns[g].start, train.columns[g].stop)) for g in groups]
    feature_sets.append((ALL, np.concatenate([cols for _, cols in feature_sets])))
    rows = []
    for name, cols in feature_sets:
        row: dict[str, Any] = {"features": name, "n_features": int(cols.size)}
        for target in TARGETS:
            (x_tr, y_tr), (x_va, y_va) = train_sets[target], val_sets[target]
            scores: dict[str, float | None] = {}
            for kind in classifiers:
                if not 0 < y_tr.sum() < y_tr.size:  # one class only: nothing to fit
                    scores[kind] = None
                    continue
                with warnings.catch_warnings():  # max_iter reached: the fit is what the budget gives
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    clf = _classifier(kind, seed).fit(x_tr[:, cols], y_tr)
                scores[kind] = _auroc(y_va, clf.predict_proba(x_va[:, cols])[:, 1])
            row[target] = scores
        rows.append(row)
    top1 = train.names.index("top1_prob")
    reference = {"confidence": {"correct": _auroc(val_sets["correct"][1], val_sets["correct"][0][:, top1]),
                                "continue_helps": _auroc(val_sets["continue_helps"][1],
                                                         1 - val_sets["continue_helps"][0][:, top1])}}
    return {
        "order": list(train.order), "targets": TARGETS, "classifiers": {k: CLASSIFIERS[k] for k in classifiers},
        "seed": seed, "rows": rows, "reference": reference,
        "n_states": {s: {t: int(y.size) for t, (_, y) in sets.items()}
                     for s, sets in (("train", train_sets), ("val", val_sets))},
        "positive_rate": {s: {t: float(y.mean()) if y.size else None for t, (_, y) in sets.items()}
                          for s, sets in (("train", train_sets), ("val", val_sets))},
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def to_markdown(table: dict[str, Any]) -> str:
    """The table as markdown: one row per feature set, AUROC on val per target and classifier."""
    kinds = list(table["classifiers"])
    head = ["features", "n"] + [f"{t}: {k}" for t in TARGETS for k in kinds]
    lines = [f"# Introspection features: AUROC on `{table.get('eval_split', 'val')}` "
             f"({table.get('task', '')})".rstrip(), ""]
    if "command" in table:
        lines += [f"`{table['command']}`", ""]
    lines += [f"Fitted on `{table.get('train_split', 'agent_train')}`; states along the full-depth order "
              f"{table['order']} (depth 0 = the encoder state).", ""]
    lines += [f"- `{t}`: {d}; positive rate on val {_fmt(table['positive_rate']['val'][t])}"
              for t, d in TARGETS.items()]
    lines += [f"- `{k}`: {d}" for k, d in table["classifiers"].items()]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        cells = [f"`{row['features']}`", str(row["n_features"])]
        cells += [_fmt(row[t][k]) for t in TARGETS for k in kinds]
        lines.append("| " + " | ".join(cells) + " |")
    ref = table["reference"]["confidence"]
    cells = ["top-1 probability, unfitted", "1"] + [_fmt(ref[t]) for t in TARGETS for _ in kinds]
    lines.append("| " + " | ".join(cells) + " |")
    if "model_provenance" in table:
        lines += ["", f"Main model: `{table['model_provenance']['id']}` (recipe "
                      f"{table['model_provenance']['recipe_version']})."]
    return "\n".join(lines) + "\n"


def write_table(table: dict[str, Any], path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``path`` (JSON) and the markdown beside it (same name, ``.md``), each atomically."""
    json_path = Path(path)
    md_path = json_path.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(json_path, table)
    atomic_write_text(md_path, to_markdown(table))
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m agents.introspection_features``: print the feature-group AUROC table of a task;
    returns its figures.
    """
    parser = argparse.ArgumentParser(prog="python -m agents.introspection_features",
                                     description=__doc__.splitlines()[0])
    named = [e for e, d in ENV_IDS.items() if d is not None]
    parser.add_argument("--env", default="DynaLay-MNIST1D-v0", choices=named, help="the task (a registered env id)")
    parser.add_argument("--model", default=None, help="main-model checkpoint (default: the cached default model)")
    parser.add_argument("--out", default=None,
                        help="JSON path; the .md goes beside it (default "
                             "benchmarks/results/introspection_auroc_<dataset>.json)")
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1024, help="examples observed at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    dataset_name = ENV_IDS[args.env]
    probe = make_core(1, dataset=dataset_name, model=args.model)  # resolves (and caches) the model once
    model, dataset = probe.model, probe.dataset
    assert dataset is not None
    train = collect_states(model, dataset, "agent_train", max_steps=args.max_steps, batch=args.batch)
    val = collect_states(model, dataset, "val", max_steps=args.max_steps, batch=args.batch)
    table = {"task": dataset.name, "env": args.env, "train_split": "agent_train", "eval_split": "val",
             "max_steps": args.max_steps,
             **auroc_table(train, val, seed=args.seed)}
    shown = ["--env", args.env, *(["--model", str(args.model)] if args.model else []),
             *(["--out", str(args.out)] if args.out else []), "--max-steps", str(args.max_steps),
             "--seed", str(args.seed)]
    table["command"] = "python -m agents.introspection_features " + shlex.join(shown)
    table["model_provenance"] = provenance_of(model, dataset)
    table["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count(), "python": platform.python_version(),
                        "torch": torch.__version__, "torch_threads": args.threads}
    table["seconds"] = round(time.perf_counter() - start, 1)
    out = args.out or f"benchmarks/results/introspection_auroc_{dataset.name}.json"
    json_path, md_path = write_table(table, out)
    sys.stdout.write(to_markdown(table))
    print(f"wrote {json_path} and {md_path}")
    return table


if __name__ == "__main__":
    main()
