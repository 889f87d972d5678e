"""Train an SB3 agent on a DynaLay env into one self-contained, resumable run folder.

Run folder layout::

    run_dir/
      config.json        the TrainConfig (what --resume and evaluate read back)
      main_model.pt      the main model the agent was trained against (copied in)
      agent.zip          the final agent (written atomically)
      checkpoints/       agent_<steps>_steps.zip (+ replay_buffer_<steps>_steps.pkl), atomic
      tb/                TensorBoard logs (SB3 logger + dynalay/* and val/* scalars)
      val_history.json   periodic validation accuracy and compute
      train.json         timesteps, wall time, provenance

A crash at any point loses at most the work since the last checkpoint: ``--resume`` loads the
newest checkpoint (weights, optimiser state, step count and, for off-policy algorithms, the replay
buffer) and trains to the requested total.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dynalay_env import ENV_IDS

CONFIG_NAME = "config.json"
AGENT_NAME = "agent.zip"
MODEL_NAME = "main_model.pt"


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

    def dataset_name(self) -> str:
        if self.dataset:
            return self.dataset
        if self.env_id not in ENV_IDS:
            raise ValueError(f"unknown env id {self.env_id!r}; valid ids: {', '.join(ENV_IDS)}")
        return ENV_IDS[self.env_id] or self.env_kwargs.get("dataset", "mnist1d")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)


def env_options(config: TrainConfig, model_path: str) -> dict[str, Any]:
    """The env options of a run: its env kwargs, its dataset and its main model."""
    options = dict(config.env_kwargs)
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
    from dynalay_env.model import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(payload, indent=2, default=str).encode())


def ensure_main_model(config: TrainConfig, run_dir: Path) -> Path:
    """Copy the main model into the run folder (pre-training the cached default if none is given)."""
    target = run_dir / MODEL_NAME
    if target.is_file():
        return target
    source = config.model
    if source is None:
        from dynalay_env.cache import cached_default_model
        from dynalay_env.data import load_dataset

        source = str(cached_default_model(load_dataset(config.dataset_name(), data_root=config.data_root),
                                          data_root=config.data_root))
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return target


def make_train_env(config: TrainConfig, model_path: Path, n_envs: int):
    """The batched SB3 VecEnv (with VecMonitor for episode statistics) of a run."""
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.sb3_vec_env import DynaLayVecEnv

    venv = DynaLayVecEnv(n_envs, **env_options(config, str(model_path)))
    return VecMonitor(venv)


def val_evaluator(config: TrainConfig, model_path: Path, n_slots: int = 512):
    """A function ``agent -> {"accuracy", "mean_compute"}`` over the whole ``val`` split."""
    from agents.evaluate import run_policy
    from dynalay_env.env import make_core

    options = env_options(config, str(model_path))
    core = make_core(n_slots, **{**options, "split": "val", "sample_mode": "sequential"})

    def evaluate(agent: Any) -> dict[str, float]:
        records = run_policy(core, agent)
        return {"accuracy": records.accuracy, "mean_compute": records.mean_compute,
                "mean_steps": float(records.steps.mean())}

    return evaluate


def train(config: TrainConfig, resume: bool = False) -> tuple[Any, Path]:
    """Train (or resume) an agent; returns the trained SB3 model and the run folder."""
    from stable_baselines3.common.callbacks import CallbackList

    from agents.algorithms import check_compatibility, get_algorithm, load_hyperparams, make_model
    from agents.callbacks import (
        AtomicCheckpointCallback,
        EpisodeMetricsCallback,
        PeriodicEvalCallback,
        atomic_save_model,
        list_checkpoints,
        replay_buffer_for,
    )

    if not resume:  # validate before creating anything on disk
        check_compatibility(get_algorithm(config.algo).name, config.env_kwargs)
    config, run_dir = prepare_run_dir(config, resume)
    spec = get_algorithm(config.algo)
    check_compatibility(spec.name, config.env_kwargs)
    hyperparams = {**load_hyperparams(spec.name, config.env_id, config.hyperparams_file), **config.hyperparams}
    timesteps = int(config.timesteps or hyperparams.get("n_timesteps", 100_000))
    n_envs = int(config.n_envs or hyperparams.get("n_envs", 16))
    config.timesteps, config.n_envs = timesteps, n_envs
    if not resume:
        _write_json(run_dir / CONFIG_NAME, asdict(config))
    model_path = ensure_main_model(config, run_dir)
    venv = make_train_env(config, model_path, n_envs)
    venv.seed(config.seed)

    if resume:
        remove_stale_temporaries(run_dir)
    checkpoints = list_checkpoints(run_dir) if resume else []
    if checkpoints:
        # tensorboard_log is stored in the zip: point it at this run folder, wherever it now lives.
        agent = spec.cls.load(checkpoints[-1], env=venv, device=config.device, tensorboard_log=str(run_dir / "tb"))
        buffer = replay_buffer_for(checkpoints[-1])
        if buffer.is_file() and hasattr(agent, "load_replay_buffer"):
            agent.load_replay_buffer(buffer)
        # Fresh examples after a resume, not a replay of the episodes already seen.
        venv.seed(config.seed + agent.num_timesteps)
    else:
        agent = make_model(spec.name, venv, hyperparams, seed=config.seed, device=config.device,
                           tensorboard_log=str(run_dir / "tb"))
    done = int(agent.num_timesteps)
    remaining = max(0, timesteps - done)
    core = venv.venv.core
    callbacks = CallbackList([
        EpisodeMetricsCallback(core.num_actions, core.max_steps),
        PeriodicEvalCallback(val_evaluator(config, model_path), config.eval_freq, run_dir / "val_history.json"),
        AtomicCheckpointCallback(run_dir, config.checkpoint_freq),
    ])
    start = time.perf_counter()
    if remaining > 0:
        agent.learn(total_timesteps=remaining, callback=callbacks, reset_num_timesteps=not checkpoints,
                    tb_log_name=spec.name, progress_bar=config.progress_bar)
    atomic_save_model(agent, run_dir / AGENT_NAME)
    summary = {"algo": spec.name, "timesteps_requested": timesteps, "timesteps_done": int(agent.num_timesteps),
               "resumed_from": done if checkpoints else None, "wall_seconds": time.perf_counter() - start,
               "provenance": core.provenance}
    _write_json(run_dir / "train.json", summary)
    return agent, run_dir


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the hidden temporaries a killed save can leave (a SIGKILL skips every cleanup)."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        for pattern in (".*.zip", ".*.pkl", ".*.tmp", ".*.tmp.png"):
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def load_run(run_dir: str | Path) -> tuple[TrainConfig, Any, Path]:
    """(config, trained agent, main-model path) of a finished run folder."""
    from agents.algorithms import get_algorithm

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a DynaLay training run: no {CONFIG_NAME}")
    config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    agent_path = run_dir / AGENT_NAME
    if not agent_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {AGENT_NAME}: the run has not finished (use train --resume)")
    agent = get_algorithm(config.algo).cls.load(agent_path, device=config.device)
    return config, agent, run_dir / MODEL_NAME
