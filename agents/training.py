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

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.vec_env import VecMonitor

from agents.algorithms import get_algorithm
from agents.allocator import fix_mmap_threshold
from agents.callbacks import (
    AtomicCheckpointCallback,
    CoTrainLogger,
    CoTrainMetricsCallback,
    EpisodeMetricsCallback,
    PeriodicEvalCallback,
    atomic_save_model,
    cotrain_state_for,
    list_checkpoints,
    replay_buffer_for,
    save_run_checkpoint,
)
from agents.evaluate import predict_actions
from agents.hyperparams import load_hyperparams
from agents.interface import Agent
from agents.rllib_backend import RLLIB_DIR, check_algorithm, load_agent, require_ray, train_rllib
from agents.runs import (
    AGENT_NAME,
    CONFIG_NAME,
    COTRAIN_STATE_NAME,
    INITIAL_MODEL_NAME,
    MODEL_NAME,
    TrainConfig,
    charge_decision_flops,
    check_env_builds,
    ensure_main_model,
    env_options,
    prepare_run_dir,
    remove_stale_temporaries,
    val_evaluator,
    write_json,
)
from agents.sb3_vec_env import DynaLayVecEnv
from dynalay_env.model import provenance_of, save_checkpoint


def make_train_env(config: TrainConfig, model_path: Path, n_envs: int):
    """The batched SB3 VecEnv (with VecMonitor for episode statistics) of a run: one core, one main
    model (in ``mode="cotrain"`` the model the core trains), its batch shapes warmed up
    (:meth:`dynalay_env.core.DynaLayCore.warm_up`: memory flat over a long run)."""
    venv = DynaLayVecEnv(n_envs, **env_options(config, str(model_path), training=True))
    venv.core.warm_up()
    return VecMonitor(venv)




def train(config: TrainConfig, resume: bool = False) -> tuple[Agent, Path]:
    """Train (or resume) an agent into ``config.run_dir``; returns the trained agent
    (:class:`agents.interface.Agent`) and the run folder."""
    if not resume:  # validate before creating anything on disk
        check_framework(config.framework, config.algo)
        if config.framework == "rllib" and config.uses_cotrain():
            raise ValueError("--framework rllib does not co-train the main model (each env runner holds its own "
                             "copy); drop --cotrain / mode: cotrain")
        # Once per run, before anything exists on disk; a resumed run was checked when it started.
        config.check_options()  # co-training options included
        get_algorithm(config.algo).check_compatibility(config.env_kwargs)
        check_env_builds(env_options(config, config.model, training=True))
    config, run_dir = prepare_run_dir(config, resume)
    spec = get_algorithm(config.algo)
    if config.framework == "rllib":
        return train_rllib(spec, config, run_dir, resume)
    # Before the env and the agent allocate anything: keeps RSS flat over a long run (agents/allocator.py).
    fix_mmap_threshold()
    hyperparams = {**load_hyperparams(spec.name, config.env_id, config.hyperparams_file), **config.hyperparams}
    timesteps = int(config.timesteps or hyperparams.get("n_timesteps", 100_000))
    n_envs = int(config.n_envs or hyperparams.get("n_envs", 16))
    config.timesteps, config.n_envs = timesteps, n_envs
    if not resume:
        write_json(run_dir / CONFIG_NAME, asdict(config))
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
    decision_flops = charge_decision_flops(config, agent, core.set_option)
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
               "decision_flops": decision_flops, "provenance": core.provenance}
    if cotrainer is not None:
        assert cotrain_logger is not None
        cotrain_logger.log_updates()
        cotrain_logger.close()
        summary.update(save_cotrained_model(run_dir, core))
        summary["provenance_initial"] = provenance_initial
        summary["model_provenance_initial"] = model_provenance_initial
    summary["model_provenance"] = provenance_of(core.model, core.dataset)
    atomic_save_model(agent, run_dir / AGENT_NAME)
    write_json(run_dir / "train.json", summary)
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
        check_algorithm(algo)
        require_ray()
    else:
        get_algorithm(algo)


def restore_cotrain_state(cotrainer: Any, checkpoint: Path) -> Path:
    """Load the main model and optimiser saved with the agent checkpoint ``checkpoint`` into
    ``cotrainer`` (the training core's); returns the state file. A missing file is an error: the
    agent would otherwise resume against the wrong model."""
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
            actions, state = predict_actions(agent, obs, state, episode_start, core, deterministic)
            out = core.step(actions)
            done = np.flatnonzero(out.terminated.cpu().numpy())
            episode_start = np.zeros(core.num_envs, dtype=bool)
            if done.size:
                core.start_episodes(done)
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
    cotrainer = core.cotrainer
    cotrainer.active = False
    total_phases = max(0, (timesteps - 1) // config.agent_phase)
    first_learn = fresh
    while True:
        owed = min(int(agent.num_timesteps) // config.agent_phase, total_phases)
        if cotrainer.extra.get("model_phases_done", 0) < owed:
            stats = run_model_phase(core, agent, config.model_phase)
            cotrainer.extra["model_phases_done"] = cotrainer.extra.get("model_phases_done", 0) + 1
            agent.reset_env_on_next_learn()  # the model phase played in the env
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



def load_run(run_dir: str | Path) -> tuple[TrainConfig, Any, Path]:
    """(config, trained agent (:class:`agents.interface.Agent`), main-model path) of a finished run folder."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a DynaLay training run: no {CONFIG_NAME}")
    config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    if config.framework == "rllib":
        if not (run_dir / RLLIB_DIR).is_dir():
            raise FileNotFoundError(f"{run_dir} has no {RLLIB_DIR}/: the run has not finished (use train --resume)")
        return config, load_agent(run_dir / RLLIB_DIR, get_algorithm(config.algo), device=config.device), run_dir / MODEL_NAME
    agent_path = run_dir / AGENT_NAME
    if not agent_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {AGENT_NAME}: the run has not finished (use train --resume)")
    agent = get_algorithm(config.algo).load(agent_path, device=config.device)
    return config, agent, run_dir / MODEL_NAME
