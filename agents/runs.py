"""Run folders: the :class:`TrainConfig` of a run, its checks, its env options, its main model, and
the helpers every trainer shares (SB3 and the supervised learners in :mod:`agents.training`, Ray RLlib
in :mod:`agents.rllib_backend`). The folder's layout is described in :mod:`agents.training`.
"""

from __future__ import annotations

import collections.abc
import json
import math
import shutil
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agents.evaluate import run_policy
from agents.interface import Agent
from dynalay_env import ENV_IDS
from dynalay_env import cache as model_cache
from dynalay_env.atomic import atomic_copy, atomic_write_json, stale_temporaries
from dynalay_env.cotrain import DEFAULT_COTRAIN_EVERY, DEFAULT_COTRAIN_LR, check_options
from dynalay_env.datasets import load_dataset
from dynalay_env.env import make_core
from dynalay_env.model import CheckpointError
from dynalay_env.options import AGENT_TRAIN_OPTIONS, REWARD_PARAM_NAMES, EnvOptions

CONFIG_NAME = "config.json"
AGENT_NAME = "agent.zip"
MODEL_NAME = "main_model.pt"
INITIAL_MODEL_NAME = "main_model_initial.pt"
COTRAIN_STATE_NAME = "cotrain_state.pt"
#: Env options that only concern co-training; evaluation envs drop them (and run ``frozen``).
COTRAIN_OPTIONS: tuple[str, ...] = ("mode", "cotrain_lr", "cotrain_every")
#: Env options that a run also takes as its own field (and the CLI as a flag): given in ``env_kwargs``
#: they move to that field, and a clash between the two is refused (:func:`take_flag_options`).
FLAG_OPTIONS: tuple[str, ...] = ("model", "dataset", "data_root", "device")
#: ``config.json`` keys of runs written by older versions that are no longer part of the config:
#: ``decision_flops`` (the FLOPs per decision the reward charged) is in ``train.json``
#: (:func:`charge_decision_flops`).
DERIVED_KEYS: frozenset[str] = frozenset({"decision_flops"})


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``timesteps`` / ``n_envs`` default to the algorithm's
    hyperparameter file; ``env_kwargs`` are DynaLay env options (reward, masks, ...)."""

    algo: str = "ppo"
    env_id: str = "DynaLay-MNIST1D-v0"
    dataset: str | None = None
    data_root: str | None = None
    model: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    timesteps: int | None = None
    n_envs: int | None = None
    seed: int = 0
    device: str = EnvOptions.default("device")
    run_dir: str = "runs/train"
    checkpoint_freq: int = 50_000
    eval_freq: int = 50_000
    hyperparams: dict[str, Any] = field(default_factory=dict)
    hyperparams_file: str | None = None
    progress_bar: bool = True
    cotrain: bool = False        # co-train the main model (env option mode: cotrain)
    agent_phase: int = 49_152    # co-training: agent timesteps per agent phase (model frozen)
    model_phase: int = 16        # co-training: main-model optimiser steps per model phase; 0 = concurrent
    #: Training library: ``sb3`` (Stable-Baselines3 / sb3-contrib) or ``rllib`` (Ray RLlib,
    #: :mod:`agents.rllib_backend`; ``pip install -e ".[rllib]"``).
    framework: str = "sb3"
    #: RLlib only: the Ray cluster to join (``auto`` or ``host:port``; None: start Ray locally) and
    #: how many remote env runners sample (0: the driver samples).
    ray_address: str | None = None
    num_env_runners: int = 0

    def uses_cotrain(self) -> bool:
        """Whether the training env runs in ``mode="cotrain"`` (by ``cotrain`` or the env option)."""
        return self.cotrain or self.env_kwargs.get("mode") == "cotrain"

    def check_cotrain(self) -> None:
        """Clear errors for inconsistent co-training options."""
        mode = self.env_kwargs.get("mode", "frozen")
        if self.cotrain and mode != "cotrain" and "mode" in self.env_kwargs:
            raise ValueError(f"--cotrain conflicts with the env option mode: {mode!r}; drop one of them")
        if self.uses_cotrain():
            check_options(self.env_kwargs.get("cotrain_lr", DEFAULT_COTRAIN_LR),
                          self.env_kwargs.get("cotrain_every", DEFAULT_COTRAIN_EVERY))
            if isinstance(self.agent_phase, bool) or not isinstance(self.agent_phase, int) or self.agent_phase < 1:
                raise ValueError(f"agent_phase must be an integer >= 1 (agent timesteps), got {self.agent_phase!r}")
            if isinstance(self.model_phase, bool) or not isinstance(self.model_phase, int) or self.model_phase < 0:
                raise ValueError(f"model_phase must be an integer >= 0 (main-model optimiser steps; 0 = learn "
                                 f"concurrently), got {self.model_phase!r}")
        else:
            given = [k for k in ("cotrain_lr", "cotrain_every") if k in self.env_kwargs]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to co-training: add --cotrain (env option "
                                 f"mode: cotrain)")

    def schedule(self) -> str:
        """``frozen``, ``alternate`` (phases) or ``concurrent`` (the model learns inside every env step)."""
        if not self.uses_cotrain():
            return "frozen"
        return "alternate" if self.cotrain and self.model_phase > 0 else "concurrent"

    def dataset_name(self) -> str:
        """The dataset of the run: ``dataset``, else the env id's, else ``env_kwargs`` or the env's default;
        ``ValueError`` for an unknown env id.
        """
        if self.dataset:
            return self.dataset
        if self.env_id not in ENV_IDS:
            raise ValueError(f"unknown env id {self.env_id!r}; valid ids: {', '.join(ENV_IDS)}")
        return ENV_IDS[self.env_id] or self.env_kwargs.get("dataset", EnvOptions.default("dataset"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config a saved ``config.json`` dict describes; unknown keys raise ``ValueError``. Keys
        that older versions wrote and this one derives instead (:data:`DERIVED_KEYS`) are dropped."""
        return config_from_dict(cls, {k: v for k, v in d.items() if k not in DERIVED_KEYS}, "training")

    def check_options(self) -> None:
        """Resolve the options given twice (:func:`take_flag_options`), check the co-training options
        (:meth:`check_cotrain`) and every env option, as the training env will get them
        (:func:`check_env_kwargs`); ``ValueError`` names the bad one."""
        take_flag_options(self)
        self.check_cotrain()
        check_env_kwargs({**self.env_kwargs, "mode": "cotrain"} if self.cotrain else self.env_kwargs)


def config_from_dict(cls: type, d: dict[str, Any], what: str) -> Any:
    """``cls(**d)`` for a config dataclass, refusing unknown keys with the list of valid ones."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {what} option(s) {sorted(unknown)}; valid: {sorted(known)}")
    return cls(**d)


def take_flag_options(config: Any) -> None:
    """Move :data:`FLAG_OPTIONS` out of ``config.env_kwargs`` into ``config``'s own fields.

    ``config`` is a :class:`TrainConfig` or a sweep config (fields ``env_id``, ``env_kwargs`` and one
    per flag option). An option given both ways with different values is refused, naming the flag to
    use; ``device`` counts as given whenever it differs from the field (whose default is ``cpu``). A
    dataset that contradicts the env id's own dataset is refused too."""
    kwargs = dict(config.env_kwargs)
    for key in FLAG_OPTIONS:
        if key not in kwargs:
            continue
        value = kwargs.pop(key)
        flag = "--" + key.replace("_", "-")
        if not isinstance(value, str) or not value:
            raise ValueError(f"--env-kwargs {key}: expected a non-empty string, got {value!r}; "
                             f"give it as {flag}")
        current = getattr(config, key)
        if current is None:
            setattr(config, key, value)
        elif current != value:
            raise ValueError(f"{key} is given twice, as {flag} {current}{' (the default)' if key == 'device' else ''} "
                             f"and as --env-kwargs {key}:{value}; give it once, as {flag}")
    config.env_kwargs = kwargs
    fixed = ENV_IDS.get(config.env_id)
    if fixed and config.dataset and config.dataset != fixed:
        own = next((i for i, d in ENV_IDS.items() if d == config.dataset), None)
        raise ValueError(f"env {config.env_id} is the dataset {fixed!r}, but the dataset {config.dataset!r} was "
                         f"given; use --env {own or 'DynaLay-v0'} (or --dataset {config.dataset} alone)")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML-read ``value`` fits the type annotation ``hint`` of an env option."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if origin in (collections.abc.Sequence, list, tuple):
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return False  # callables and other objects cannot come from a command line


def _expected(hint: Any) -> str:
    """What a user may write for an option of type ``hint`` (in ``key:value`` YAML)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        words = [w for w in (_expected(h) for h in args) if w]
        return " or ".join(dict.fromkeys(words))
    if origin in (collections.abc.Sequence, list, tuple):
        return f"a list of {_expected(args[0]).removeprefix('a ')}s, e.g. [a, b]"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
            type(None): "nothing (key: with no value)", dict: "a mapping, e.g. {key: value}"}.get(
        origin if origin is dict else hint, "")


def env_option_types() -> dict[str, Any]:
    """The type annotation of every env option (:meth:`~dynalay_env.options.EnvOptions.types`)."""
    return EnvOptions.types()


def check_env_kwargs(env_kwargs: dict[str, Any]) -> None:
    """Refuse an unknown env option, or a value of the wrong type, with a ``ValueError`` naming the
    option and what it expects (the types of :class:`~dynalay_env.options.EnvOptions`); then let
    ``EnvOptions`` check every value once (a bad reward name, a negative ``lambda_compute``,
    ``max_steps`` below 1, ...). Files and the main model are checked by :func:`check_env_builds`."""
    types_of = env_option_types()
    for key, value in env_kwargs.items():
        if key not in types_of:
            raise ValueError(f"--env-kwargs: unknown env option {key!r}; valid options: {', '.join(sorted(types_of))}")
        if not _fits(value, types_of[key]):
            raise ValueError(f"--env-kwargs {key}: expected {_expected(types_of[key])}, got {value!r}")
    reward_kwargs = env_kwargs.get("reward_kwargs") or {}
    for key, value in reward_kwargs.items():  # unknown names: make_reward lists the valid ones
        if key in REWARD_PARAM_NAMES and not _fits(value, types_of[key]):
            raise ValueError(f"--env-kwargs reward_kwargs.{key}: expected {_expected(types_of[key])}, "
                             f"got {value!r}")
    try:
        EnvOptions.from_kwargs(env_kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--env-kwargs: {exc}") from None


def check_env_builds(options: dict[str, Any]) -> None:
    """Build a one-episode core from ``options`` (what :func:`env_options` returns), so that the env's
    own checks refuse a bad value, a foreign or corrupt model, or a missing data file before a run
    creates anything on disk. Its errors come back as ``ValueError``/``FileNotFoundError``."""
    try:
        make_core(1, **options)
    except TypeError as exc:
        raise ValueError(f"--env-kwargs: {exc}") from None
    except CheckpointError as exc:
        message = str(exc)
        if "\n" in message:  # torch's own unpickling story: keep the verdict, drop the multi-line advice
            message = message.split(" (", 1)[0]
        raise CheckpointError(f"main model: {message}; pass a main_model.pt written by `train_agent.py pretrain` "
                              f"for this dataset") from None


def evaluation_kwargs(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` without the options that only training uses (co-training and the
    ``agent_train``-only options): evaluation plays whole ``val``/``test`` splits, frozen and
    unaugmented."""
    return {k: v for k, v in env_kwargs.items() if k not in (*COTRAIN_OPTIONS, *AGENT_TRAIN_OPTIONS)}


def env_options(config: TrainConfig, model_path: Any, training: bool = False) -> dict[str, Any]:
    """The env options of a run: its env kwargs, its dataset and its main model (a path or a model
    object). Unless ``training``, the env is ``frozen`` whatever the run's mode: validation and
    evaluation never co-train (and never touch ``val``/``test`` with an optimiser), and they play
    whole splits unaugmented (the ``agent_train``-only options are dropped)."""
    options = dict(config.env_kwargs) if training else evaluation_kwargs(config.env_kwargs)
    if training and config.cotrain:
        options["mode"] = "cotrain"
    options.update(dataset=config.dataset_name(), model=model_path, device=config.device)
    if config.data_root:
        options["data_root"] = config.data_root
    return options


def resolved_model_options(core: Any) -> dict[str, Any]:
    """Options that build more cores on ``core``'s main model without loading it again: the model
    object and, under ``cost="latency"``, the latency table found beside its checkpoint (a model
    object has no checkpoint to find it beside)."""
    options: dict[str, Any] = {"model": core.model}
    if core.options.cost == "latency":
        options["latency_table"] = core.options.latency_table
    return options


def prepare_run_dir(config: TrainConfig, resume: bool) -> tuple[TrainConfig, Path]:
    """Create (or, with ``resume``, validate and reload) the run folder; returns the config in force."""
    run_dir = Path(config.run_dir)
    config_path = run_dir / CONFIG_NAME
    if resume:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume: run folder {run_dir} does not exist")
        if not config_path.is_file():
            raise ValueError(f"--resume: {run_dir} is not a DynaLay training run (no {CONFIG_NAME}); "
                             f"start a new run without --resume or pick the right folder")
        try:
            saved = TrainConfig.from_dict(json.loads(config_path.read_text()))
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            raise ValueError(f"--resume: {config_path} is unreadable or foreign: {exc}") from exc
        # The requested total may grow on resume; everything else is the run's own.
        if config.timesteps is not None:
            saved.timesteps = config.timesteps
        saved.progress_bar = config.progress_bar
        return saved, run_dir
    if config_path.is_file():
        raise ValueError(f"{run_dir} already holds a training run; use --resume to continue it or pick a new --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return config, run_dir


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` to ``path`` as JSON, atomically (values JSON cannot hold as their ``str``)."""
    atomic_write_json(path, payload, default=str)


def ensure_main_model(config: TrainConfig, run_dir: Path) -> Path:
    """Copy the main model into the run folder (pre-training the cached default if none is given).

    Co-trained runs keep the starting model as ``main_model_initial.pt`` too, and return that path:
    the training env always starts from it (a resume then restores the checkpointed weights), while
    ``main_model.pt`` receives the co-trained model when the run finishes."""
    target = run_dir / MODEL_NAME
    if config.uses_cotrain():
        initial = run_dir / INITIAL_MODEL_NAME
        if not initial.is_file():
            source = _copy_main_model(config, target) if not target.is_file() else target
            atomic_copy(source, initial)
        return initial
    if target.is_file():
        return target
    return _copy_main_model(config, target)


def _copy_main_model(config: TrainConfig, target: Path) -> Path:
    source = config.model
    if source is None:
        source = str(model_cache.cached_default_model(load_dataset(config.dataset_name(), data_root=config.data_root),
                                          data_root=config.data_root))
    copied = atomic_copy(source, target)
    stem = Path(source).stem  # its latency tables travel with it: cost="latency" finds them beside the model
    for table in Path(source).parent.glob(f"{stem}.latency-*.json"):
        atomic_copy(table, target.with_name(target.stem + table.name[len(stem):]))
    return copied



def val_evaluator(config: TrainConfig, model_path: Path | Any, n_slots: int = 512):
    """A function ``agent -> {"accuracy", "mean_compute"}`` over the whole ``val`` split.
    ``model_path`` may be the model object itself: a co-trained run validates with the very model
    being trained (frozen during the pass)."""
    options = env_options(config, model_path if not isinstance(model_path, Path) else str(model_path))
    core = make_core(n_slots, **{**options, "split": "val", "sample_mode": "sequential"})

    def evaluate(agent: Any) -> dict[str, float]:
        records = run_policy(core, agent)
        return {"accuracy": records.accuracy, "mean_compute": records.mean_compute,
                "mean_steps": float(records.steps.mean())}

    return evaluate



def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the hidden temporaries a killed save can leave (a SIGKILL skips every cleanup)."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        # stale_temporaries: the helper's own names; .zip/.pkl: those of runs written by older versions.
        for path in sorted({*stale_temporaries(folder), *folder.glob(".*.zip"), *folder.glob(".*.pkl")}):
            if path.is_dir():  # a folder checkpoint's (RLlib) temporary
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def charge_decision_flops(config: TrainConfig, agent: Agent, set_option: Callable[[str, Any], None]) -> float:
    """Make the training reward charge the policy's own decisions, for every trainer (SB3, the
    supervised learners, RLlib): the env option ``decision_flops`` of ``config.env_kwargs`` when the
    run gives one, else the agent's measured :meth:`~agents.interface.Agent.decision_flops`, set into
    the training env(s) with ``set_option("decision_flops", value)``. Returns the FLOPs per decision
    (recorded in ``train.json``)."""
    given = config.env_kwargs.get("decision_flops")
    value = float(given if given is not None else agent.decision_flops())
    set_option("decision_flops", value)
    return value
