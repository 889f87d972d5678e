#!/usr/bin/env python
"""DynaLay-Gym command line.

  pretrain   path-robust pre-training of the main model (main_model.pt, pretrain.json)
  train      train an RL agent (SB3 / sb3-contrib, or Ray RLlib) on a DynaLay env, into a resumable run folder
  evaluate   evaluate a trained run on a split against every baseline (report.json/.md, figures)
  sweep      reward-shaping study: multi-objective Optuna sweep, Pareto front vs baselines
  demo       the main job end to end: pre-train, train PPO, evaluate on test, print the table
  profile    measure a main model's latency table on this device (for cost="latency"), beside its checkpoint

Examples::

    python train_agent.py pretrain --dataset mnist1d --run-dir runs/pretrain
    python train_agent.py train --algo ppo --env DynaLay-MNIST1D-v0 --env-kwargs lambda_compute:0.2 \\
        --timesteps 200000 --run-dir runs/ppo
    python train_agent.py train --run-dir runs/ppo --resume
    python train_agent.py train --framework rllib --algo ppo --env DynaLay-Synthetic-v0 --run-dir runs/rllib-ppo
    python train_agent.py train --cotrain --agent-phase 49152 --model-phase 16 --cotrain-lr 1e-4 \\
        --timesteps 196608 --run-dir runs/ppo-cotrain      # the main model learns too
    python train_agent.py evaluate --run-dir runs/ppo --split test --validate
    python train_agent.py sweep --n-trials 12 --workers 2 --run-dir runs/sweep
    python train_agent.py sweep --storage postgresql://user@host/db --study-name s1 --workers 2 \\
        --artifact-dir /shared/artifacts        # on every machine: workers join one study (password: ~/.pgpass)
    python train_agent.py demo --run-dir runs/demo
    python train_agent.py profile --dataset mnist1d --threads 1   # then --env-kwargs cost:latency
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml
from rich.console import Console
from rich.table import Table

from agents.evaluate import validate_report
from agents.minari_export import POLICY_FORMS, datasets_path, export_dataset, minari_root
from agents.pipelines import run_evaluation
from agents.reports import format_choice
from agents.runs import AGENT_NAME, TrainConfig, check_env_builds, env_options
from agents.sweep import STORAGE_ENV, SweepConfig, masked_url, password_warning, run_sweep
from agents.training import load_run, train
from dynalay_env import ENV_IDS
from dynalay_env.atomic import atomic_copy
from dynalay_env.cache import cached_default_model, default_model_path
from dynalay_env.datasets import list_datasets, load_dataset
from dynalay_env.env import make_core
from dynalay_env.latency import DEFAULT_BATCH_SIZES, LatencyTable, profile_latency, save_latency_table
from dynalay_env.model import load_checkpoint
from dynalay_env.options import EnvOptions
from dynalay_env.pretrain import CHECKPOINT_NAME, REPORT_NAME, recipe_for, run_pretraining

DEFAULT_DATASET = EnvOptions.default("dataset")
DEMO_TIMESTEPS = 200_000


def parse_env_kwargs(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """rl-zoo3's ``key:value`` syntax; values are read as YAML (``0.2``, ``true``, ``[hidden, head]``)."""
    if isinstance(items, dict):  # from a --config YAML mapping
        return dict(items)
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ValueError(f"--env-kwargs expects key:value pairs (e.g. lambda_compute:0.2), got {item!r}")
        out[key] = yaml.safe_load(value) if value else None
    return out


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``prog: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, minimum: float, strict: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: a ``kind`` (int or float) ``>= minimum`` (``> minimum`` if ``strict``).
    Integers may be written as ``2e5``; a bad value's message says what the option expects."""
    what = (f"an integer >= {minimum}" if kind is int else
            f"a number {'>' if strict else '>='} {minimum:g}")

    def parse(text: str) -> Any:
        try:
            value = float(text)
            if kind is int:
                if not value.is_integer():
                    raise ValueError
                value = int(value)
        except (TypeError, ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.checks_range = True  # type: ignore[attr-defined]  # re-applied to values from --config
    return parse


POSITIVE_INT = _number(int, 1)
NON_NEGATIVE_INT = _number(int, 0)
POSITIVE_FLOAT = _number(float, 0.0, strict=True)
#: A command-line value that starts like a negative number (``-1.5,0``, ``-5``, ``-.5``).
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def _add_common(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    if dataset:
        parser.add_argument("--dataset", default=None,
                            help=f"registered dataset name (default: {DEFAULT_DATASET}); see `list-datasets`")
    parser.add_argument("--data-root", default=None,
                        help="folder holding local dataset files (mnist, fashion_mnist, cifar10)")
    parser.add_argument("--run-dir", default=None, help="folder for every artefact of this run")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--device", default=EnvOptions.default("device"), help="'cpu', 'cuda' or 'cuda:N' (default: %(default)s)")
    parser.add_argument("--threads", type=POSITIVE_INT, default=1,
                        help="torch CPU threads (default: %(default)s: the default models are small and one "
                             "thread avoids cores fighting; raise it for image datasets or big batches)")
    parser.add_argument("--config", default=None,
                        help="YAML file of options for this command (keys = option names with '_'); "
                             "command-line flags override it")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="train_agent.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="path-robust pre-training of the main model; writes "
                                        "main_model.pt and pretrain.json into --run-dir")
    _add_common(p)
    p.add_argument("--epochs", type=POSITIVE_INT, default=None, help="maximum epochs (default: the dataset's recipe, 40)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None, help="mini-batch size (default: the dataset's recipe, 128)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=None, help="peak learning rate (default: the dataset's recipe, 3e-3)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("train", help="train an agent into --run-dir (resumable)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train an RL agent on a DynaLay env. The run folder receives config.json, "
                                   "main_model.pt, checkpoints/, tb/ (TensorBoard), val_history.json and agent.zip.")
    _add_common(t)
    t.add_argument("--algo", default="ppo", help="algorithm (rl-zoo3 names: ppo, a2c, dqn, qrdqn, trpo, ars, "
                                                 "ppo_lstm; and maskable_ppo, and the supervised value_exit, bc, "
                                                 "dagger; with --framework rllib: ppo, dqn). "
                                                 "Default: %(default)s")
    t.add_argument("--framework", default="sb3", choices=["sb3", "rllib"],
                   help="training library: sb3 (Stable-Baselines3) or rllib (Ray RLlib, for training across "
                        'machines; pip install -e ".[rllib]"). Default: %(default)s')
    t.add_argument("--ray-address", default=None,
                   help="rllib: the Ray cluster to join ('auto' after `ray start --head` on this machine, or "
                        "HOST:6379); default: start Ray on this machine only")
    t.add_argument("--num-env-runners", type=NON_NEGATIVE_INT, default=0,
                   help="rllib: remote env runners, each sampling --n-envs batched episodes (0: the driver "
                        "samples). Default: %(default)s")
    t.add_argument("--env", default=None, help="env id, e.g. DynaLay-MNIST1D-v0 (default: from --dataset)")
    t.add_argument("--model", default=None, help="main-model checkpoint (default: the cached default model)")
    t.add_argument("--env-kwargs", nargs="*", default=None, metavar="KEY:VALUE",
                   help="env options in rl-zoo3 syntax, e.g. lambda_compute:0.2 mask_repeats:true "
                        "observation_groups:[hidden,head]")
    t.add_argument("--timesteps", type=POSITIVE_INT, default=None, help="total env steps (default: hyperparams n_timesteps)")
    t.add_argument("--n-envs", type=POSITIVE_INT, default=None, help="parallel episodes (default: hyperparams n_envs)")
    t.add_argument("--hyperparams", default=None, help="rl-zoo3-style YAML (default: the packaged agents/hyperparams/<algo>.yml)")
    t.add_argument("--checkpoint-freq", type=POSITIVE_INT, default=50_000, help="timesteps between checkpoints")
    t.add_argument("--eval-freq", type=POSITIVE_INT, default=50_000, help="timesteps between val evaluations")
    t.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = t.add_argument_group(
        "co-training", "The main model keeps learning on the paths the agent takes (env mode=cotrain): phases of "
                       "agent learning (model frozen) alternate with phases of main-model fine-tuning on the current "
                       "policy's paths over agent_train episodes. The co-trained model is checkpointed with the agent "
                       "(checkpoints/main_model_<steps>_steps.pt, with its optimiser), restored by --resume, and "
                       "written to main_model.pt at the end (the starting one stays as main_model_initial.pt); "
                       "tb/cotrain logs its updates. Evaluation always runs the model frozen.")
    c.add_argument("--cotrain", action="store_true", help="co-train the main model with the agent")
    c.add_argument("--agent-phase", type=POSITIVE_INT, default=49_152, metavar="STEPS",
                   help="agent timesteps per agent phase; best a multiple of n_steps x n_envs, e.g. 12 PPO "
                        "rollouts of 16 x 256 (default: %(default)s)")
    c.add_argument("--model-phase", type=NON_NEGATIVE_INT, default=16, metavar="UPDATES",
                   help="main-model optimiser steps per model phase, each on --cotrain-every episodes; 0 = no "
                        "phases, the model learns inside the agent's own training steps (default: %(default)s)")
    c.add_argument("--cotrain-lr", type=POSITIVE_FLOAT, default=None,
                   help="Adam step size of the main model (> 0; default: 1e-4)")
    c.add_argument("--cotrain-every", type=POSITIVE_INT, default=None, metavar="M",
                   help="finished episodes per main-model optimiser step (>= 1; default: 64)")

    e = sub.add_parser("evaluate", help="evaluate a trained run against the baselines")
    _add_common(e, dataset=False)
    e.add_argument("--split", default="test", help="split to report on (default: %(default)s)")
    e.add_argument("--n-envs", type=POSITIVE_INT, default=512, help="episodes evaluated in parallel (default: %(default)s)")
    e.add_argument("--n-boot", type=POSITIVE_INT, default=1000, help="bootstrap resamples (default: %(default)s)")
    e.add_argument("--validate", action="store_true",
                   help="replay the paths recorded in the run's report.json and check predictions and costs")
    e.add_argument("--no-figures", action="store_true", help="skip the PNG figures")

    s = sub.add_parser(
        "sweep", help="reward-shaping study: multi-objective Optuna sweep (val accuracy up, compute down)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one agent per trial with a drawn reward, score it on val (accuracy, mean normalised "
                    "compute), re-evaluate the Pareto trials on test against the baselines; writes sweep.json, "
                    "sweep.md and sweep.png into --run-dir. Re-running the command resumes the study.\n\n"
                    "Ranges: LOW,HIGH (uniform), LOW,HIGH,log (log-uniform) or one value (fixed).\n\n"
                    "Storage passwords stay off the command line (where every user of the machine can read "
                    "them): give --storage without a password and let the PostgreSQL driver read it from "
                    "PGPASSWORD, ~/.pgpass (a line host:port:database:user:password, mode 0600) or a "
                    "PGSERVICE service file, or give the whole URL in the environment variable "
                    "DYNALAY_STORAGE. For example:\n\n"
                    "  python train_agent.py sweep --storage postgresql://dynalay@db-host/dynalay ...\n"
                    "  PGSERVICE=dynalay python train_agent.py sweep --storage postgresql:// ...\n"
                    "  export DYNALAY_STORAGE=postgresql://dynalay@db-host/dynalay  # then no --storage\n\n"
                    "Messages, reports and sweep_config.json never show a password.")
    _add_common(s)
    s.add_argument("--env", default=None, help="env id (default: from --dataset)")
    s.add_argument("--model", default=None, help="main-model checkpoint (default: the cached default model)")
    s.add_argument("--env-kwargs", nargs="*", default=None, metavar="KEY:VALUE",
                   help="env options fixed for every trial, e.g. mask_repeats:true")
    s.add_argument("--study-name", default="reward-shaping", help="study name in the storage (default: %(default)s)")
    s.add_argument("--storage", default=None,
                   help="RDB URL shared by all workers, without a password, e.g. postgresql://user@host:5432/db "
                        "(password from PGPASSWORD, ~/.pgpass or PGSERVICE; default: $DYNALAY_STORAGE, else "
                        "sqlite:///<run-dir>/study.db)")
    s.add_argument("--artifact-dir", default=None,
                   help="where trials store their agents (default: <run-dir>/artifacts; a folder every machine sees "
                        "when workers run on several)")
    s.add_argument("--n-trials", type=POSITIVE_INT, default=16, help="completed trials of the whole study (default: %(default)s)")
    s.add_argument("--workers", type=POSITIVE_INT, default=1, help="worker processes on this machine (default: %(default)s)")
    s.add_argument("--timesteps", type=POSITIVE_INT, default=100_000, help="agent timesteps per trial (default: %(default)s)")
    s.add_argument("--n-envs", type=POSITIVE_INT, default=None, help="parallel episodes (default: hyperparams n_envs)")
    s.add_argument("--reward-kinds", default="paper,logprob,blockdrop",
                   help="reward kinds to search, comma-separated (default: %(default)s)")
    s.add_argument("--lambda-compute", default="0.01,1,log", help="range of lambda_compute (default: %(default)s); "
                   "for value_exit, bc and dagger it is their own lambda, not a reward's")
    s.add_argument("--exit-threshold", default=None, help="range of value_exit's exit threshold (default: chosen "
                                                          "on val by lambda_compute)")
    s.add_argument("--mu-redundant", default="0,0.2", help="range of mu_redundant (default: %(default)s)")
    s.add_argument("--correct-reward", default="0.5,1.5", help="range of correct_reward (default: %(default)s)")
    s.add_argument("--wrong-reward", default="-1.5,0", help="range of wrong_reward (default: %(default)s)")
    s.add_argument("--algos", default="ppo", help="algorithms to search, comma-separated (default: %(default)s)")
    s.add_argument("--learning-rate", default=None, help="range of the agent's learning rate, e.g. 1e-4,3e-3,log "
                                                         "(default: the hyperparameter file's)")
    s.add_argument("--hyperparams", default=None, help="rl-zoo3-style YAML (default: the packaged agents/hyperparams/<algo>.yml)")
    s.add_argument("--sampler", default="tpe", help="tpe, nsga2 or random (default: %(default)s)")
    s.add_argument("--heartbeat-interval", type=POSITIVE_INT, default=10,
                   help="seconds between a running trial's heartbeats (default: %(default)s)")
    s.add_argument("--grace-period", type=POSITIVE_INT, default=None,
                   help="seconds without heartbeat after which a trial is failed and retried (default: 3 heartbeats)")
    s.add_argument("--max-retry", type=NON_NEGATIVE_INT, default=2, help="retries of a trial whose worker died (default: %(default)s)")
    s.add_argument("--hv-reference", default=None, metavar="ACC,COMPUTE",
                   help="hypervolume reference point, one for both splits (default: per split, the always-EXIT "
                        "accuracy and 1.1 x the largest compute among the fixed paths and the plotted points)")
    s.add_argument("--n-boot", type=POSITIVE_INT, default=1000, help="bootstrap resamples (default: %(default)s)")

    d = sub.add_parser("demo", help="pre-train (if needed), train PPO on agent_train, evaluate on test "
                                    "against the baselines, print the table")
    _add_common(d)
    d.add_argument("--timesteps", type=POSITIVE_INT, default=DEMO_TIMESTEPS, help="PPO timesteps (default: %(default)s)")
    d.add_argument("--algo", default="ppo", help="algorithm (default: %(default)s)")
    d.add_argument("--n-boot", type=POSITIVE_INT, default=1000, help="bootstrap resamples (default: %(default)s)")

    add_export_parser(sub)
    add_profile_parser(sub)
    sub.add_parser("list-datasets", help="print the registered dataset names")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse, letting ``--config FILE`` supply defaults that explicit flags override."""
    parser = build_parser()
    argv = attach_negative_values(parser, sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config file {path} not found")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"--config {path} must hold a mapping of option: value")
        subparser = _subparsers(parser)[args.command]
        valid = {a.dest for a in subparser._actions if a.dest != "help"}
        unknown = set(values) - valid
        if unknown:
            raise ValueError(f"--config {path}: unknown option(s) {sorted(unknown)}; valid: {sorted(valid)}")
        subparser.set_defaults(**values)
        args = parser.parse_args(argv)
        for action in subparser._actions:  # argparse converts string defaults only: check the others too
            value = getattr(args, action.dest, None)
            if getattr(action.type, "checks_range", False) and value is not None and not isinstance(value, str):
                try:
                    setattr(args, action.dest, action.type(str(value)))
                except argparse.ArgumentTypeError as exc:
                    subparser.error(f"argument {'/'.join(action.option_strings)} (from --config {path}): {exc}")
    return args


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def attach_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Join ``--option -1.5,0`` into ``--option=-1.5,0`` for every option that takes one value.

    argparse reads a value that starts with ``-`` as an option unless it is a plain negative number,
    so ranges such as ``--wrong-reward -1.5,0`` would fail; joined, they reach the option's own check.
    Everything after a ``--`` is left alone."""
    takes_value = {option for sub in _subparsers(parser).values() for action in sub._actions
                   if action.option_strings and action.nargs is None for option in action.option_strings}
    out: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            out.append(token)
            out.extend(tokens)
            break
        if token in takes_value:
            value = next(tokens, None)
            if value is not None and _NEGATIVE_VALUE.match(value):
                out.append(f"{token}={value}")
                continue
            out.append(token)
            if value is not None:
                out.append(value)
            continue
        out.append(token)
    return out


# --------------------------------------------------------------------------------------------------
# pretrain
# --------------------------------------------------------------------------------------------------


def cmd_pretrain(args: argparse.Namespace) -> dict:
    dataset = args.dataset or DEFAULT_DATASET
    run_dir = Path(args.run_dir or f"runs/pretrain-{dataset}")
    config = recipe_for(dataset)
    overrides = {k: getattr(args, k, None) for k in ("epochs", "batch_size", "lr")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    # Explicit --epochs / --batch-size are kept as given: they switch off the recipe's minimum
    # number of steps (in all / per epoch) that would otherwise add epochs or shrink batches.
    if "epochs" in overrides:
        overrides["min_steps"] = 0
    if "batch_size" in overrides:
        overrides["min_steps_per_epoch"] = 0
    config = dataclasses.replace(config, **overrides)
    checkpoint, report = run_pretraining(dataset, run_dir=run_dir, data_root=args.data_root, seed=args.seed,
                                         device=args.device, config=config,
                                         progress=not getattr(args, "quiet", False))
    print_pretrain_summary(report)
    print(f"checkpoint: {checkpoint}\nreport:     {run_dir / 'pretrain.json'}")
    return report


def print_pretrain_summary(report: dict) -> None:
    table = Table(title=f"pre-training on {report['dataset']} ({report['split']} split, "
                        f"{report['n_examples']} examples)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for depth, acc in enumerate(report["accuracy_by_depth"]):
        table.add_row(f"accuracy after layers 1..{depth}" if depth else "accuracy, head on encoder state",
                      f"{acc:.4f}")
    table.add_row("oracle accuracy (some path <= max_steps)", f"{report['oracle_accuracy']:.4f}")
    for name, stats in report["iterations_full_depth_path"].items():
        table.add_row(f"{name} iterations p5/p50/p95 (full-depth path)",
                      f"{stats['p5']:.0f}/{stats['p50']:.0f}/{stats['p95']:.0f}")
    table.add_row("pre-training wall time", f"{report['train_seconds']:.0f} s")
    table.add_row("provenance", report["provenance"])
    Console().print(table)


# --------------------------------------------------------------------------------------------------
# train / evaluate
# --------------------------------------------------------------------------------------------------


def _train_config(args: argparse.Namespace) -> Any:
    if args.env and args.env not in ENV_IDS:
        raise ValueError(f"unknown env id {args.env!r}; valid ids: {', '.join(ENV_IDS)}")
    env_id = args.env or next((i for i, d in ENV_IDS.items() if d == (args.dataset or DEFAULT_DATASET)), "DynaLay-v0")
    env_kwargs = parse_env_kwargs(getattr(args, "env_kwargs", None))
    for option in ("cotrain_lr", "cotrain_every"):
        if getattr(args, option, None) is not None:
            env_kwargs[option] = getattr(args, option)
    cotrain = bool(getattr(args, "cotrain", False))
    return TrainConfig(algo=args.algo, env_id=env_id, dataset=args.dataset, data_root=args.data_root,
                       model=getattr(args, "model", None), env_kwargs=env_kwargs,
                       cotrain=cotrain, agent_phase=getattr(args, "agent_phase", 49_152),
                       model_phase=getattr(args, "model_phase", 16),
                       timesteps=args.timesteps, n_envs=getattr(args, "n_envs", None), seed=args.seed,
                       device=args.device, run_dir=args.run_dir or f"runs/{args.algo}-{env_id}",
                       checkpoint_freq=getattr(args, "checkpoint_freq", 50_000),
                       eval_freq=getattr(args, "eval_freq", 50_000), hyperparams_file=getattr(args, "hyperparams", None),
                       progress_bar=not getattr(args, "no_progress", False),
                       framework=getattr(args, "framework", "sb3"), ray_address=getattr(args, "ray_address", None),
                       num_env_runners=getattr(args, "num_env_runners", 0))


def cmd_train(args: argparse.Namespace) -> Path:
    config = _train_config(args)
    if args.resume and args.run_dir is None:
        raise ValueError("--resume needs --run-dir (the run folder to continue)")
    if args.resume:
        print(f"resuming {args.run_dir}: its config.json is in force; only --timesteps may change it")
    agent, run_dir = train(config, resume=args.resume)
    if (run_dir / "rllib").is_dir():
        print(f"agent: {run_dir / 'rllib'} (RLlib checkpoint, {agent.num_timesteps} timesteps)")
    else:
        print(f"agent: {run_dir / 'agent.zip'} ({agent.num_timesteps} timesteps)\n"
              f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return run_dir


def cmd_evaluate(args: argparse.Namespace) -> dict:
    if not args.run_dir:
        raise ValueError("evaluate needs --run-dir (a folder written by `train`)")
    run_dir = Path(args.run_dir)
    if args.validate:
        return cmd_validate(run_dir, args)
    report = run_evaluation(run_dir, args.split, args.n_envs, args.n_boot, not args.no_figures, args.device)
    print_report_table(report)
    print(f"report: {run_dir / 'report.json'}, {run_dir / 'report.md'}")
    return report


def cmd_validate(run_dir: Path, args: argparse.Namespace) -> dict:
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path} not found: run `evaluate --run-dir {run_dir}` first")
    report = json.loads(report_path.read_text())
    config, _, model_path = load_run(run_dir)
    core = make_core(1, **{**env_options(config, str(model_path)), "split": report["split"]})
    result = validate_report(report, core)
    print(f"replayed {result['n_examples']} paths: predictions match {result['predictions_match']}, "
          f"FLOPs match {result['flops_match']} -> {'VALID' if result['valid'] else 'MISMATCH'}")
    if not result["valid"]:
        raise ValueError(f"report does not replay: first mismatching examples {result['first_mismatches']}")
    return result


def print_report_table(report: dict) -> None:
    table = Table(title=f"{report.get('dataset')} / {report['split']}: {report['n_examples']} examples "
                        f"(compute 1.0 = full depth)")
    for col in ("policy", "accuracy", "mean compute"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    table.add_row(f"agent ({report['policy']})", f"{report['accuracy']:.4f}", f"{report['mean_compute']:.3f}")
    best = report["best_fixed_path"]
    table.add_row(f"best fixed path {best['params']['path']}", f"{best['accuracy']:.4f}", f"{best['mean_compute']:.3f}")
    table.add_row("full depth", f"{report['full_depth']['accuracy']:.4f}", f"{report['full_depth']['mean_compute']:.3f}")
    if "vs_threshold" in report:
        v = report["vs_threshold"]
        table.add_row("confidence threshold at the agent's compute",
                      f"{report['accuracy'] - v['difference']:.4f}", f"{v['agent_mean_compute']:.3f}")
    table.add_row("path oracle (cheapest correct path)", f"{report['oracle']['accuracy']:.4f}",
                  f"{report['oracle']['mean_compute']:.3f}")
    if "prefix_oracle" in report:
        table.add_row("prefix oracle (cheapest correct prefix of 1..K)", f"{report['prefix_oracle']['accuracy']:.4f}",
                      f"{report['prefix_oracle']['mean_compute']:.3f}")
    Console().print(table)
    if "vs_threshold" in report:
        v = report["vs_threshold"]
        verdict = "beats" if v["beats_threshold"] else "does not beat"
        print(f"agent - threshold at matched compute: {v['difference']:+.4f} "
              f"(95% CI [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]): the agent {verdict} thresholding")
    print(f"difficulty correlation (Spearman): {report['difficulty_correlation']}")


# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------


def _sweep_config(args: argparse.Namespace) -> Any:
    """The :class:`agents.sweep.SweepConfig` of the parsed ``sweep`` arguments; the storage is
    ``--storage``, else the ``DYNALAY_STORAGE`` environment variable, else SQLite in the run folder."""
    if args.env and args.env not in ENV_IDS:
        raise ValueError(f"unknown env id {args.env!r}; valid ids: {', '.join(ENV_IDS)}")
    env_id = args.env or next((i for i, d in ENV_IDS.items() if d == (args.dataset or DEFAULT_DATASET)), "DynaLay-v0")
    hv_reference = None
    if args.hv_reference:
        try:
            hv_reference = tuple(float(v) for v in str(args.hv_reference).split(","))
        except ValueError:
            raise ValueError(f"--hv-reference expects ACC,COMPUTE numbers, got {args.hv_reference!r}") from None
    return SweepConfig(
        study_name=args.study_name, run_dir=args.run_dir or "runs/sweep",
        storage=args.storage or os.environ.get(STORAGE_ENV) or None,
        artifact_dir=args.artifact_dir, env_id=env_id, dataset=args.dataset, data_root=args.data_root,
        model=args.model, env_kwargs=parse_env_kwargs(args.env_kwargs), n_trials=args.n_trials,
        workers=args.workers, timesteps=args.timesteps, n_envs=args.n_envs, seed=args.seed, device=args.device,
        threads=args.threads, reward_kinds=args.reward_kinds, lambda_compute=args.lambda_compute,
        mu_redundant=args.mu_redundant, correct_reward=args.correct_reward, wrong_reward=args.wrong_reward,
        algos=args.algos, learning_rate=args.learning_rate, exit_threshold=args.exit_threshold,
        hyperparams_file=args.hyperparams, sampler=args.sampler,
        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period, max_retry=args.max_retry,
        hv_reference=hv_reference, n_boot=args.n_boot)


def cmd_sweep(args: argparse.Namespace) -> dict:
    config = _sweep_config(args).validate()
    warning = password_warning(args.storage) if args.storage else None
    if warning:
        print(warning, file=sys.stderr)
    options = {**config.env_kwargs, "dataset": config.dataset_name(), "model": config.model, "device": config.device}
    if config.data_root:
        options["data_root"] = config.data_root
    check_env_builds(options)  # the env's own checks, before any worker starts
    print(f"study {config.study_name!r}: {config.n_trials} trials of {config.timesteps} timesteps, "
          f"{config.workers} worker(s) here, storage {masked_url(config.storage_url())}"
          f"{f' (from {STORAGE_ENV})' if config.storage and not args.storage else ''}")
    report = run_sweep(config)
    print_sweep_table(report)
    run_dir = Path(config.run_dir)
    print(f"report: {run_dir / 'sweep.json'}, {run_dir / 'sweep.md'}, {run_dir / 'sweep.png'}")
    return report


def print_sweep_table(report: dict) -> None:
    counts = report["counts"]
    table = Table(title=f"Pareto trials of {report['study_name']} ({counts['complete']} complete, {counts['fail']} "
                        f"failed; compute 1.0 = full depth)")
    for col in ("trial", "reward", "val acc", "val compute", "test acc", "test compute", "vs threshold"):
        table.add_column(col, justify="left" if col in ("trial", "reward") else "right")
    for p in report["pareto"]:
        v = p["test_vs_confidence"]
        table.add_row(str(p["number"]), format_choice(p), f"{p['val_accuracy']:.4f}", f"{p['val_mean_compute']:.3f}",
                      f"{p['test_accuracy']:.4f}", f"{p['test_mean_compute']:.3f}",
                      f"{v['difference']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]")
    Console(width=160).print(table)
    for split, h in report["hypervolume"].items():
        print(f"hypervolume on {split}: agent front {h['agent_front']:.5f}, confidence-threshold front "
              f"{h['confidence_threshold_front']:.5f} (reference {h['reference_point']})")


# --------------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    dataset = args.dataset or DEFAULT_DATASET
    run_dir = Path(args.run_dir or "runs/demo")
    pretrain_dir = run_dir / "pretrain"
    checkpoint = pretrain_dir / CHECKPOINT_NAME
    if checkpoint.is_file():
        print(f"[1/3] main model: using {checkpoint}")
    else:
        print(f"[1/3] pre-training the main model on {dataset} -> {pretrain_dir}")
        cmd_pretrain(argparse.Namespace(dataset=dataset, data_root=args.data_root, run_dir=str(pretrain_dir),
                                        seed=args.seed, device=args.device, epochs=None, quiet=False))
    agent_dir = run_dir / "agent"

    if (agent_dir / AGENT_NAME).is_file():
        print(f"[2/3] agent: using {agent_dir / AGENT_NAME}")
    else:
        print(f"[2/3] training {args.algo} for {args.timesteps} timesteps on agent_train -> {agent_dir}")
        resume = (agent_dir / "config.json").is_file()
        cmd_train(argparse.Namespace(algo=args.algo, env=None, dataset=dataset, data_root=args.data_root,
                                     model=str(checkpoint), env_kwargs=None, timesteps=args.timesteps, n_envs=None,
                                     seed=args.seed, device=args.device, run_dir=str(agent_dir),
                                     checkpoint_freq=50_000, eval_freq=100_000, hyperparams=None, resume=resume,
                                     no_progress=False))
    print("[3/3] evaluating on test against the baselines")
    report = run_evaluation(agent_dir, "test", n_boot=args.n_boot, device=args.device)
    print_report_table(report)
    print(f"\nreport:  {agent_dir / 'report.json'}  {agent_dir / 'report.md'}")
    for path in report.get("figures", {}).values():
        print(f"figure:  {path}")
    print(f"demo wall time: {time.perf_counter() - start:.0f} s")
    return report


def add_export_parser(sub: Any) -> argparse.ArgumentParser:
    """``export``: episodes of any policies as a Minari dataset (offline RL)."""
    x = sub.add_parser("export", help="record episodes of policies (oracle, random, thresholds, trained runs, or "
                                      "a mix) as a Minari dataset for offline RL")
    x.add_argument("--dataset-id", required=True, help="Minari dataset id, e.g. dynalay/mnist1d/oracle-random-v0")
    x.add_argument("--policy", action="append", required=True, metavar="POLICY",
                   help=f"a policy ({', '.join(POLICY_FORMS)}); repeat it for a mix, recorded one after the other")
    x.add_argument("--episodes", type=POSITIVE_INT, default=1000, help="episodes per policy (default: %(default)s)")
    x.add_argument("--env", default="DynaLay-MNIST1D-v0", help="env id (default: %(default)s)")
    x.add_argument("--model", default=None, help="main-model checkpoint (default: the cached default model)")
    x.add_argument("--env-kwargs", nargs="*", default=None, metavar="KEY:VALUE",
                   help="env options, e.g. lambda_compute:0.05 mask_repeats:true")
    x.add_argument("--split", default="agent_train", help="split the episodes come from (default: %(default)s)")
    x.add_argument("--out", default=None, help="Minari datasets folder (default: Minari's own, MINARI_DATASETS_PATH)")
    x.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the example stream (default: %(default)s)")
    x.add_argument("--threads", type=POSITIVE_INT, default=1, help="torch threads (default: %(default)s)")
    return x


def cmd_export(args: argparse.Namespace) -> Any:
    """Write the Minari dataset ``--dataset-id`` and print where it is and what it holds."""
    if args.env not in ENV_IDS:
        raise ValueError(f"unknown env id {args.env!r}; valid ids: {', '.join(ENV_IDS)}")

    if importlib.util.find_spec("minari") is None:
        raise ValueError("export needs Minari with its dataset-creation extra: pip install 'dynalay-gym[peers]' "
                         "(or 'minari[create,hdf5]')")

    dataset = export_dataset(args.dataset_id, args.policy, args.episodes, args.env, model=args.model,
                             split=args.split, seed=args.seed, out=args.out, **parse_env_kwargs(args.env_kwargs))
    with datasets_path(args.out):
        where = minari_root() / args.dataset_id
    print(f"Minari dataset {args.dataset_id}: {dataset.total_episodes} episodes, {dataset.total_steps} steps "
          f"({args.episodes} per policy: {', '.join(args.policy)}) in {where}")
    return dataset


def add_profile_parser(sub: Any) -> argparse.ArgumentParser:
    """``profile``: a main model's latency table on this device, written beside its checkpoint."""
    f = sub.add_parser("profile", help="measure a main model's latency table (encoder, head, each layer's injection "
                                       "and iteration, at several batch sizes) on this device and write it beside "
                                       "the checkpoint, for --env-kwargs cost:latency")
    which = f.add_mutually_exclusive_group()
    which.add_argument("--model", default=None, help="main-model checkpoint (its dataset's val inputs are timed)")
    which.add_argument("--dataset", default=None,
                       help=f"profile this dataset's default cached model (default: {DEFAULT_DATASET})")
    f.add_argument("--data-root", default=None, help="folder holding local dataset files (mnist, fashion_mnist, cifar10)")
    f.add_argument("--batch-sizes", type=POSITIVE_INT, nargs="+", default=list(DEFAULT_BATCH_SIZES), metavar="N",
                   help="rows per call to time (default: %(default)s)")
    f.add_argument("--repeats", type=POSITIVE_INT, default=15, help="timed runs per piece; the median is kept "
                                                                    "(default: %(default)s)")
    f.add_argument("--warmup", type=NON_NEGATIVE_INT, default=3, help="untimed runs first (default: %(default)s)")
    f.add_argument("--device", default=EnvOptions.default("device"), help="'cpu', 'cuda' or 'cuda:N' (default: %(default)s)")
    f.add_argument("--threads", type=POSITIVE_INT, default=1,
                   help="torch CPU threads, recorded in the table: profile with the count you train and infer with "
                        "(default: %(default)s, the other commands' default)")
    return f


def cmd_profile(args: argparse.Namespace) -> LatencyTable:
    """Profile the model (``--model``, else ``--dataset``'s default cached model) on its dataset's
    ``val`` inputs, write the table beside the checkpoint and print it as Markdown."""
    if args.model is not None:
        checkpoint_path = Path(args.model)
        dataset = load_dataset(load_checkpoint(checkpoint_path).dataset["name"], data_root=args.data_root)
    else:
        dataset = load_dataset(args.dataset or DEFAULT_DATASET, data_root=args.data_root)
        checkpoint_path = cached_default_model(dataset, data_root=args.data_root)
        if checkpoint_path != default_model_path(dataset):  # the shipped model: profile a user-cache copy,
            # so the table is written beside the checkpoint the env will load, never into the package
            copy = default_model_path(dataset)
            copy.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(checkpoint_path.parent / REPORT_NAME, copy.parent / REPORT_NAME)
            checkpoint_path = atomic_copy(checkpoint_path, copy)
    model = load_checkpoint(checkpoint_path, expected_dataset=dataset.name, device=args.device).model
    x_val, _ = dataset.as_tensors("val", args.device)
    table = profile_latency(model, x_val, batch_sizes=args.batch_sizes, repeats=args.repeats, warmup=args.warmup)
    target = save_latency_table(table, checkpoint_path)
    print(table.markdown())
    print(f"\nlatency table: {target}\nuse it with: --env-kwargs cost:latency (found beside the checkpoint)")
    return table


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        if args.command == "list-datasets":
            print("\n".join(list_datasets()))
            return 0
        {"pretrain": cmd_pretrain, "train": cmd_train, "evaluate": cmd_evaluate, "sweep": cmd_sweep,
         "demo": cmd_demo, "export": cmd_export, "profile": cmd_profile}[args.command](args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
