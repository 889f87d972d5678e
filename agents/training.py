"""Train an agent (SB3, or Ray RLlib with ``framework="rllib"``) on a DynaLay env into one
self-contained, resumable run folder.

Run folder layout::

    run_dir/
      config.json        the TrainConfig (what --resume and evaluate read back)
      main_model.pt      the main model the agent was trained against (copied in; for a co-trained
                         run, the co-trained model, written when the run finishes)
      main_model_initial.pt   co-trained runs only: the model the run started from
      cotrain_state.pt   co-trained runs only: final model + optimiser state (dynalay_env.cotrain)
      agent.zip          the final agent (written atomically)
      checkpoints/       agent_<steps>_steps.zip (+ replay_buffer_<steps>_steps.pkl, + for co-trained
                         runs main_model_<steps>_steps.pt: model weights and optimiser), atomic
      tb/                TensorBoard logs (SB3 logger + dynalay/* and val/* scalars; tb/cotrain:
                         the main model's updates)
      val_history.json   periodic validation accuracy and compute
      train.json         timesteps, wall time, provenance
      rllib/             RLlib runs (framework="rllib", agents.rllib_backend) only: the final RLlib
                         checkpoint, in place of agent.zip; their periodic checkpoints are
                         checkpoints/rllib_<steps>_steps/ folders (no tb/: RLlib's own metrics)

A crash at any point loses at most the work since the last checkpoint: ``--resume`` loads the
newest checkpoint (weights, optimiser state, step count and, for off-policy algorithms, the replay
buffer; for co-trained runs the main model and its optimiser) and trains to the requested total.

Co-training (``TrainConfig.cotrain`` / ``train --cotrain``, or the env option ``mode: cotrain``): one
process holds one main model, trained in place by the training env's core (``dynalay_env.cotrain``).
With ``model_phase > 0`` the schedule alternates: ``agent_phase`` agent timesteps with the model
frozen, then ``model_phase`` main-model optimiser steps on the paths of the current policy (the
agent acts, stochastically as in training, on fresh ``agent_train`` episodes, and does not learn),
and so on; the run ends with an agent phase. With ``model_phase == 0`` both learn at once: every
``cotrain_every`` finished training episodes, one model step. Validation during training and every
evaluation use the model in ``frozen`` mode.

Memory: an SB3 run fixes glibc's mmap and trim thresholds when it starts
(:func:`agents.allocator.fix_mmap_threshold`; opt out with ``DYNALAY_MMAP_THRESHOLD=0``).
"""

from __future__ import annotations

import collections.abc
import json
import math
import shutil
import time
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from dynalay_env import ENV_IDS
from dynalay_env.atomic import atomic_copy, atomic_write_json, stale_temporaries

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
    device: str = "cpu"
    run_dir: str = "runs/train"
    checkpoint_freq: int = 50_000
    eval_freq: int = 50_000
    hyperparams: dict[str, Any] = field(default_factory=dict)
    hyperparams_file: str | None = None
    progress_bar: bool = True
    cotrain: bool = False        # co-train the main model (env option mode: cotrain)
    agent_phase: int = 49_152    # co-training: agent timesteps per agent phase (model frozen)
    model_phase: int = 16        # co-training: main-model optimiser steps per model phase; 0 = concurrent
    #: FLOPs per decision the training reward charged (env option ``decision_flops``): the value
    #: given in ``env_kwargs`` if any, else the measured cost of the policy built (set by ``train``).
    decision_flops: float | None = None
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
            from dynalay_env.cotrain import DEFAULT_COTRAIN_EVERY, DEFAULT_COTRAIN_LR, check_options

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
        """The dataset of the run: ``dataset``, else the env id's, else ``env_kwargs`` or ``mnist1d``;
        ``ValueError`` for an unknown env id.
        """
        if self.dataset:
            return self.dataset
        if self.env_id not in ENV_IDS:
            raise ValueError(f"unknown env id {self.env_id!r}; valid ids: {', '.join(ENV_IDS)}")
        return ENV_IDS[self.env_id] or self.env_kwargs.get("dataset", "mnist1d")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config a saved ``config.json`` dict describes; unknown keys raise ``ValueError``."""
        return config_from_dict(cls, d, "training")

    def check_options(self) -> None:
        """Resolve the options given twice (:func:`take_flag_options`) and check every env option's
        type (:func:`check_env_kwargs`); ``ValueError`` names the bad one."""
        take_flag_options(self)
        check_env_kwargs(self.env_kwargs)


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
    from dynalay_env.options import EnvOptions

    return EnvOptions.types()


def check_env_kwargs(env_kwargs: dict[str, Any]) -> None:
    """Refuse an unknown env option, or a value of the wrong type, with a ``ValueError`` naming the
    option and what it expects; then let the env's reward check the reward's values (a bad name, a
    negative ``lambda_compute``, ...). The env checks the other values when it is built."""
    from dynalay_env.env import REWARD_PARAM_NAMES
    from dynalay_env.rewards import make_reward

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
    params = {**reward_kwargs, **{k: v for k, v in env_kwargs.items() if k in REWARD_PARAM_NAMES}}
    try:
        make_reward(env_kwargs.get("reward", "paper"), **params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--env-kwargs: {exc}") from None


def check_env_builds(options: dict[str, Any]) -> None:
    """Build a one-episode core from ``options`` (what :func:`env_options` returns), so that the env's
    own checks refuse a bad value, a foreign or corrupt model, or a missing data file before a run
    creates anything on disk. Its errors come back as ``ValueError``/``FileNotFoundError``."""
    from dynalay_env.env import make_core
    from dynalay_env.model import CheckpointError

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


def env_options(config: TrainConfig, model_path: Any, training: bool = False) -> dict[str, Any]:
    """The env options of a run: its env kwargs, its dataset and its main model (a path or a model
    object). Unless ``training``, the env is ``frozen`` whatever the run's mode: validation and
    evaluation never co-train (and never touch ``val``/``test`` with an optimiser)."""
    options = dict(config.env_kwargs)
    if training and config.cotrain:
        options["mode"] = "cotrain"
    if not training:
        for key in COTRAIN_OPTIONS:
            options.pop(key, None)
    options.update(dataset=config.dataset_name(), model=model_path, device=config.device)
    if config.data_root:
        options["data_root"] = config.data_root
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


def _write_json(path: Path, payload: Any) -> None:
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
        from dynalay_env.cache import cached_default_model
        from dynalay_env.data import load_dataset

        source = str(cached_default_model(load_dataset(config.dataset_name(), data_root=config.data_root),
                                          data_root=config.data_root))
    return atomic_copy(source, target)


def make_train_env(config: TrainConfig, model_path: Path, n_envs: int):
    """The batched SB3 VecEnv (with VecMonitor for episode statistics) of a run: one core, one main
    model (in ``mode="cotrain"`` the model the core trains)."""
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.sb3_vec_env import DynaLayVecEnv

    venv = DynaLayVecEnv(n_envs, **env_options(config, str(model_path), training=True))
    return VecMonitor(venv)


def val_evaluator(config: TrainConfig, model_path: Path | Any, n_slots: int = 512):
    """A function ``agent -> {"accuracy", "mean_compute"}`` over the whole ``val`` split.
    ``model_path`` may be the model object itself: a co-trained run validates with the very model
    being trained (frozen during the pass)."""
    from agents.evaluate import run_policy
    from dynalay_env.env import make_core

    options = env_options(config, model_path if not isinstance(model_path, Path) else str(model_path))
    core = make_core(n_slots, **{**options, "split": "val", "sample_mode": "sequential"})

    def evaluate(agent: Any) -> dict[str, float]:
        records = run_policy(core, agent)
        return {"accuracy": records.accuracy, "mean_compute": records.mean_compute,
                "mean_steps": float(records.steps.mean())}

    return evaluate


def train(config: TrainConfig, resume: bool = False) -> tuple[Any, Path]:
    """Train (or resume) an agent into ``config.run_dir``; returns the trained agent
    (:class:`agents.interface.Agent`) and the run folder."""
    from stable_baselines3.common.callbacks import CallbackList

    from agents.algorithms import check_compatibility, get_algorithm, load_hyperparams
    from agents.allocator import fix_mmap_threshold
    from agents.callbacks import (
        AtomicCheckpointCallback,
        CoTrainLogger,
        CoTrainMetricsCallback,
        EpisodeMetricsCallback,
        PeriodicEvalCallback,
        atomic_save_model,
        list_checkpoints,
        replay_buffer_for,
    )
    from dynalay_env.model import provenance_of

    if not resume:  # validate before creating anything on disk
        check_framework(config.framework, config.algo)
        if config.framework == "rllib" and config.uses_cotrain():
            raise ValueError("--framework rllib does not co-train the main model (each env runner holds its own "
                             "copy); drop --cotrain / mode: cotrain")
        config.check_options()
        check_compatibility(get_algorithm(config.algo).name, config.env_kwargs)
        config.check_cotrain()
        check_env_builds(env_options(config, config.model, training=True))
    config, run_dir = prepare_run_dir(config, resume)
    if config.framework == "rllib":
        from agents.rllib_backend import train_rllib

        return train_rllib(config, run_dir, resume)
    # Before the env and the agent allocate anything: keeps RSS flat over a long run (agents/allocator.py).
    fix_mmap_threshold()
    spec = get_algorithm(config.algo)
    check_compatibility(spec.name, config.env_kwargs)
    config.check_cotrain()
    hyperparams = {**load_hyperparams(spec.name, config.env_id, config.hyperparams_file), **config.hyperparams}
    timesteps = int(config.timesteps or hyperparams.get("n_timesteps", 100_000))
    n_envs = int(config.n_envs or hyperparams.get("n_envs", 16))
    config.timesteps, config.n_envs = timesteps, n_envs
    if not resume:
        _write_json(run_dir / CONFIG_NAME, asdict(config))
    model_path = ensure_main_model(config, run_dir)
    venv = make_train_env(config, model_path, n_envs)
    venv.seed(config.seed)
    core = venv.venv.core
    cotrainer = core.cotrainer
    provenance_initial = core.provenance
    model_provenance_initial = provenance_of(core.model, core.dataset)

    if resume:
        remove_stale_temporaries(run_dir)
    checkpoints = list_checkpoints(run_dir) if resume else []
    if checkpoints:
        if cotrainer is not None:
            restore_cotrain_state(cotrainer, checkpoints[-1])
        # tensorboard_log is stored in the zip: point it at this run folder, wherever it now lives.
        agent = spec.load(checkpoints[-1], env=venv, device=config.device, tensorboard_log=str(run_dir / "tb"))
        buffer = replay_buffer_for(checkpoints[-1])
        if buffer.is_file() and hasattr(agent, "load_replay_buffer"):
            agent.load_replay_buffer(buffer)
        # Fresh examples after a resume, not a replay of the episodes already seen.
        venv.seed(config.seed + agent.num_timesteps)
    else:
        agent = spec.build(venv, hyperparams, seed=config.seed, device=config.device,
                           tensorboard_log=str(run_dir / "tb"))
    # The reward charges the policy's own decisions: the measured cost unless env_kwargs give one.
    given = config.env_kwargs.get("decision_flops")
    core.set_option("decision_flops", given if given is not None else agent.decision_flops())
    if config.decision_flops != core.decision_flops:
        config.decision_flops = core.decision_flops
        if not resume:  # a resumed run keeps its config.json (as for the other fields)
            _write_json(run_dir / CONFIG_NAME, asdict(config))
    done = int(agent.num_timesteps)
    checkpointer = AtomicCheckpointCallback(run_dir, config.checkpoint_freq)
    # A co-trained run validates with the very model being trained (frozen during the pass).
    evaluate_val = val_evaluator(config, core.model if cotrainer is not None else model_path)
    callback_list = [
        EpisodeMetricsCallback(core.num_actions, core.max_steps),
        PeriodicEvalCallback(evaluate_val, config.eval_freq, run_dir / "val_history.json"),
        checkpointer,
    ]
    cotrain_logger = None
    if cotrainer is not None:
        cotrain_logger = CoTrainLogger(run_dir, cotrainer)
        callback_list.append(CoTrainMetricsCallback(cotrain_logger))
    callbacks = CallbackList(callback_list)
    start = time.perf_counter()
    learn_kwargs = dict(callback=callbacks, tb_log_name=spec.name, progress_bar=config.progress_bar)
    if config.schedule() == "alternate":
        run_alternating_schedule(config, agent, core, timesteps, fresh=not checkpoints, learn_kwargs=learn_kwargs,
                                 run_dir=run_dir, cotrain_logger=cotrain_logger, evaluate_val=evaluate_val,
                                 keep=checkpointer.keep)
    else:
        if cotrainer is not None:
            cotrainer.active = True  # concurrent: the model learns inside every env step
        remaining = max(0, timesteps - done)
        if remaining > 0:
            agent.learn(total_timesteps=remaining, reset_num_timesteps=not checkpoints, **learn_kwargs)
    summary = {"algo": spec.name, "timesteps_requested": timesteps, "timesteps_done": int(agent.num_timesteps),
               "resumed_from": done if checkpoints else None, "wall_seconds": time.perf_counter() - start,
               "provenance": core.provenance}
    if cotrainer is not None:
        assert cotrain_logger is not None
        cotrain_logger.log_updates()
        cotrain_logger.close()
        summary.update(save_cotrained_model(run_dir, core))
        summary["provenance_initial"] = provenance_initial
        summary["model_provenance_initial"] = model_provenance_initial
    summary["model_provenance"] = provenance_of(core.model, core.dataset)
    atomic_save_model(agent, run_dir / AGENT_NAME)
    _write_json(run_dir / "train.json", summary)
    return agent, run_dir


#: Training libraries and the algorithms each offers (:func:`check_framework`).
FRAMEWORKS: tuple[str, ...] = ("sb3", "rllib")


def check_framework(framework: str, algo: str) -> None:
    """``ValueError`` for an unknown ``framework`` (listing the valid ones), for ``rllib`` without Ray
    installed (naming the extra), or for an algorithm the framework does not offer (listing those
    it does)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; valid: {', '.join(FRAMEWORKS)}")
    if framework == "rllib":
        from agents.rllib_backend import check_algorithm, require_ray

        check_algorithm(algo)
        require_ray()
    else:
        from agents.algorithms import get_algorithm

        get_algorithm(algo)


def restore_cotrain_state(cotrainer: Any, checkpoint: Path) -> Path:
    """Load the main model and optimiser saved with the agent checkpoint ``checkpoint`` into
    ``cotrainer`` (the training core's); returns the state file. A missing file is an error: the
    agent would otherwise resume against the wrong model."""
    from agents.callbacks import cotrain_state_for

    state_path = cotrain_state_for(checkpoint)
    if not state_path.is_file():
        raise ValueError(f"--resume: {checkpoint.name} has no co-training state {state_path.name} beside it "
                         f"(main model + optimiser of a mode=cotrain run); cannot resume the main model")
    cotrainer.load(state_path)
    return state_path


def save_cotrained_model(run_dir: Path, core: Any) -> dict[str, Any]:
    """Write the co-trained main model to ``main_model.pt`` (what ``evaluate`` and inference load)
    and its full state, optimiser included, to ``cotrain_state.pt``; both atomic. Returns the
    figures that go into ``train.json``."""
    from dynalay_env.model import save_checkpoint

    cotrainer = core.cotrainer
    info = {"updates": cotrainer.updates, "episodes_seen": cotrainer.episodes_seen, "lr": cotrainer.lr,
            "every": cotrainer.every, **cotrainer.extra}
    cotrainer.save(run_dir / COTRAIN_STATE_NAME)
    dataset_meta = {"name": core.dataset.name, "fingerprint": core.dataset.fingerprint,
                    "input_shape": list(core.dataset.input_shape), "num_classes": core.dataset.num_classes}
    provenance = save_checkpoint(run_dir / MODEL_NAME, core.model, dataset_meta,
                                 extra={"cotrain": info, "initial_model": INITIAL_MODEL_NAME})
    return {"provenance": provenance, "cotrain": info}


def run_model_phase(core: Any, agent: Any, updates: int, deterministic: bool = False) -> list[Any]:
    """``updates`` main-model optimiser steps on the paths of ``agent``'s current policy.

    Every slot of ``core`` starts a fresh ``agent_train`` episode; the agent acts (sampling, as it
    does in training, unless ``deterministic``) without learning, and the core's co-trainer takes one
    step per ``cotrain_every`` finished episodes until ``updates`` steps are done. Episodes left over
    are dropped, so the next phase learns from the policy of its own time. Returns the steps' stats.
    """
    from agents.evaluate import _predict

    cotrainer = core.cotrainer
    if cotrainer is None:
        raise ValueError("run_model_phase needs a core in mode='cotrain'")
    first = cotrainer.updates
    cotrainer.clear_pending()
    cotrainer.update_limit = first + updates
    cotrainer.active = True
    try:
        obs = core.reset().cpu().numpy()
        episode_start = np.ones(core.num_envs, dtype=bool)
        state = None
        while cotrainer.updates < first + updates:
            actions, state = _predict(agent, obs, state, episode_start, core, deterministic)
            out = core.step(actions)
            done = np.flatnonzero(out.terminated.cpu().numpy())
            episode_start = np.zeros(core.num_envs, dtype=bool)
            if done.size:
                core.reset(done)
                episode_start[done] = True
            obs = core.observations_tensor().cpu().numpy()
    finally:
        cotrainer.active = False
        cotrainer.update_limit = None
        cotrainer.clear_pending()
    return [s for s in cotrainer.history if s.update > first]


def run_alternating_schedule(config: TrainConfig, agent: Any, core: Any, timesteps: int, *, fresh: bool,
                             learn_kwargs: dict[str, Any], run_dir: Path, cotrain_logger: Any,
                             evaluate_val: Any, keep: int = 2) -> None:
    """Agent phases of ``config.agent_phase`` timesteps (model frozen) and model phases of
    ``config.model_phase`` optimiser steps, alternating, until the agent has ``timesteps``.

    Model phase i follows the agent's crossing of ``(i + 1) * agent_phase`` timesteps; the run ends
    with an agent phase, so there are ``(timesteps - 1) // agent_phase`` model phases. The number done
    is checkpointed with the model (``cotrainer.extra["model_phases_done"]``), and a checkpoint is
    written after every model phase, so a resumed run neither repeats nor skips one."""
    from agents.callbacks import save_run_checkpoint

    cotrainer = core.cotrainer
    cotrainer.active = False
    total_phases = max(0, (timesteps - 1) // config.agent_phase)
    first_learn = fresh
    while True:
        owed = min(int(agent.num_timesteps) // config.agent_phase, total_phases)
        if cotrainer.extra.get("model_phases_done", 0) < owed:
            stats = run_model_phase(core, agent, config.model_phase)
            cotrainer.extra["model_phases_done"] = cotrainer.extra.get("model_phases_done", 0) + 1
            agent._last_obs = None  # the model phase played in the env: the next learn() resets it
            cotrain_logger.log_updates()
            cotrain_logger.log_phase(int(agent.num_timesteps), stats, evaluate_val(agent))
            save_run_checkpoint(run_dir, agent, cotrainer, keep)
            continue
        if agent.num_timesteps >= timesteps:
            break
        boundary = min((int(agent.num_timesteps) // config.agent_phase + 1) * config.agent_phase, timesteps)
        agent.learn(total_timesteps=boundary - int(agent.num_timesteps), reset_num_timesteps=first_learn,
                    **learn_kwargs)
        first_learn = False


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


def load_run(run_dir: str | Path) -> tuple[TrainConfig, Any, Path]:
    """(config, trained agent (:class:`agents.interface.Agent`), main-model path) of a finished run folder."""
    from agents.algorithms import get_algorithm

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a DynaLay training run: no {CONFIG_NAME}")
    config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    if config.framework == "rllib":
        from agents.rllib_backend import RLLIB_DIR, load_agent

        if not (run_dir / RLLIB_DIR).is_dir():
            raise FileNotFoundError(f"{run_dir} has no {RLLIB_DIR}/: the run has not finished (use train --resume)")
        return config, load_agent(run_dir / RLLIB_DIR, config.algo, device=config.device), run_dir / MODEL_NAME
    agent_path = run_dir / AGENT_NAME
    if not agent_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {AGENT_NAME}: the run has not finished (use train --resume)")
    agent = get_algorithm(config.algo).load(agent_path, device=config.device)
    return config, agent, run_dir / MODEL_NAME
