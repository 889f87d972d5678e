"""Ray RLlib as a training backend: the engine for training one agent across machines.

``train_agent.py train --framework rllib --algo ppo|dqn`` trains with RLlib's new API stack
(RLModule, Learner, EnvRunner) on the same env ids and options as the SB3 backend, into the same run
folder (``config.json``, ``main_model.pt``, ``val_history.json``, ``train.json``; ``evaluate``
writes ``report.json``/``.md``). What differs:

* ``rllib/`` holds the final RLlib checkpoint (the whole ``Algorithm``: module weights, optimiser,
  config), where an SB3 run has ``agent.zip``; ``checkpoints/rllib_<steps>_steps/`` the periodic
  ones (the newest two), which ``--resume`` restores. Each is written as a folder by
  :func:`dynalay_env.atomic.atomic_dir`. A DQN checkpoint holds no replay buffer: a resumed DQN
  starts with an empty one (and samples ``num_steps_sampled_before_learning_starts`` again).
* Every env runner builds the env with ``gym.make_vec(env_id, num_envs=n_envs,
  vectorization_mode="vector_entry_point")``: the registered :class:`~dynalay_env.vector_env.DynaLayVectorEnv`,
  one batched core per runner, not a loop of single envs. The env id is given as
  ``dynalay_env:<id>`` so that a runner on another machine imports the package that registers it.
* Action masks: RLlib's default modules take a flat observation, so training is unmasked, as for
  SB3's ``ppo`` / ``dqn``: an env with ``mask_repeats`` or a ``compute_budget`` executes a masked
  action as EXIT (``info["masked_action"]``), and the agent learns the rule from its reward
  (:meth:`agents.interface.AlgoSpec.check_compatibility` warns). At prediction time
  :meth:`RLlibAgent.predict` does apply the masks it is given (masked logits / Q-values are set to
  ``-inf``), so a deployed agent never picks a forbidden action.
* Hyperparameters: :data:`DEFAULT_HYPERPARAMS` (the keys of RLlib's ``config.training(...)``, plus
  ``n_timesteps``, ``n_envs`` and ``fcnet_hiddens``), updated by ``TrainConfig.hyperparams`` and a
  ``--hyperparams`` YAML file in rl-zoo3's layout (one entry per env id).

Ray is imported lazily (inside functions: it is an optional dependency): ``agents`` imports without
it, and a missing Ray gives the one-line error of :func:`require_ray`. Ray starts locally
(``ray.init`` with ``num_cpus=config.num_env_runners + 1``, no dashboard) unless
``TrainConfig.ray_address`` names a running cluster (``auto``, or ``host:6379`` after ``ray start
--head`` there).

Decision cost: :meth:`RLlibAgent.decision_flops` counts the module's own forward pass (the one
:meth:`RLlibAgent.predict` runs: PPO's ``forward_inference`` -- encoder + policy head; DQN's
Q-network) for one observation with ``torch.utils.flop_counter.FlopCounterMode``, as
:func:`agents.sb3_backend.sb3_decision_flops` does for SB3.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from agents.hyperparams import load_hyperparams
from agents.interface import AlgoSpec
from agents.runs import (
    CONFIG_NAME,
    TrainConfig,
    charge_decision_flops,
    ensure_main_model,
    env_options,
    remove_stale_temporaries,
    val_evaluator,
    write_json,
)
from dynalay_env.atomic import atomic_dir, atomic_write_json
from dynalay_env.env import make_core
from dynalay_env.model import provenance_of

#: Algorithms this backend offers (each is trained by tests/test_rllib.py).
RLLIB_ALGORITHMS: tuple[str, ...] = ("ppo", "dqn")
#: The final checkpoint's folder in a run folder (an SB3 run has agent.zip instead).
RLLIB_DIR = "rllib"
#: Periodic checkpoints: ``checkpoints/rllib_<steps>_steps/``.
CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_RE = re.compile(r"^rllib_(\d+)_steps$")
#: Our own counters beside RLlib's state in every checkpoint folder.
STATE_NAME = "dynalay_state.json"
#: Where a checkpoint keeps the module's own checkpoint (what inference loads, without Ray).
MODULE_SUBPATH = ("learner_group", "learner", "rl_module", "default_policy")
INSTALL_HINT = 'pip install -e ".[rllib]"'

#: Defaults per algorithm: ``n_timesteps`` / ``n_envs`` (as in the SB3 YAML files), the module's
#: hidden layers, and RLlib ``config.training(...)`` arguments. ``gamma`` is 1: an episode is one
#: example of 1-5 steps and the reward already prices compute (see agents/hyperparams/ppo.yml).
DEFAULT_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": dict(n_timesteps=200_000, n_envs=16, fcnet_hiddens=[64, 64], gamma=1.0, lr=3e-4, lambda_=0.95,
                train_batch_size_per_learner=4096, minibatch_size=512, num_epochs=10, clip_param=0.2,
                entropy_coeff=0.01, vf_loss_coeff=0.5, grad_clip=0.5, use_kl_loss=False),
    "dqn": dict(n_timesteps=200_000, n_envs=16, fcnet_hiddens=[64, 64], gamma=1.0, lr=1e-3,
                train_batch_size_per_learner=128, num_steps_sampled_before_learning_starts=1000,
                target_network_update_freq=500, n_step=1, double_q=True, dueling=False,
                replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 50_000},
                epsilon=[[0, 1.0], [20_000, 0.05]]),
}
#: Keys of :data:`DEFAULT_HYPERPARAMS` that are not ``config.training(...)`` arguments.
_OWN_KEYS = ("n_timesteps", "n_envs", "fcnet_hiddens", "rollout_fragment_length",
             "min_sample_timesteps_per_iteration")


def require_ray() -> Any:
    """Import ``ray.rllib``; ``ValueError`` (one line, naming the extra) when Ray is missing."""
    try:
        import ray  # optional dependency: Ray RLlib
        import ray.rllib  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--framework rllib needs Ray RLlib, which is not installed ({exc}): {INSTALL_HINT} "
                         f"(ray 2.60 pins gymnasium==1.2.2: best in a venv of its own, see `make test-rllib`)"
                         ) from None
    return ray


def check_algorithm(algo: str) -> str:
    """The canonical name of ``algo`` if this backend offers it, else ``ValueError`` listing them."""
    key = algo.strip().lower().replace("-", "_") if isinstance(algo, str) else algo
    if key not in RLLIB_ALGORITHMS:
        raise ValueError(f"--framework rllib does not offer algorithm {algo!r}; valid: {', '.join(RLLIB_ALGORITHMS)}")
    return key


def rllib_hyperparams(algo: str, env_id: str, file: str | os.PathLike | None = None,
                      overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULT_HYPERPARAMS` of ``algo``, updated by ``env_id``'s entry of the YAML ``file``
    (rl-zoo3 layout, read by :func:`agents.hyperparams.load_hyperparams`) and by ``overrides``."""
    hp = copy.deepcopy(DEFAULT_HYPERPARAMS[check_algorithm(algo)])
    if file is not None:
        hp.update(load_hyperparams(algo, env_id, file))
    hp.update(overrides or {})
    return hp


def algorithm_config(algo: str, env_id: str, env_config: dict[str, Any], hyperparams: dict[str, Any], *,
                     n_envs: int, seed: int = 0, num_env_runners: int = 0) -> Any:
    """The RLlib ``AlgorithmConfig`` of a run (new API stack, torch, one local learner).

    ``env_config`` are the DynaLay env options (strings and numbers only: they travel to remote env
    runners); each env runner makes ``n_envs`` batched slots with ``gym_env_vectorize_mode=
    "vector_entry_point"``. A key of ``hyperparams`` that the algorithm's ``training()`` does not
    take raises ``ValueError`` listing the ones it does."""
    require_ray()
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig  # optional dependency: Ray RLlib

    name = check_algorithm(algo)
    if name == "ppo":
        from ray.rllib.algorithms.ppo import PPOConfig as Config  # optional dependency: Ray RLlib
    else:
        from ray.rllib.algorithms.dqn import DQNConfig as Config  # optional dependency: Ray RLlib
    training = {k: v for k, v in hyperparams.items() if k not in _OWN_KEYS}
    accepted = {p for cls in Config.__mro__ if "training" in vars(cls)
                for p in inspect.signature(vars(cls)["training"]).parameters if p != "self"}
    unknown = sorted(set(training) - accepted)
    if unknown:
        raise ValueError(f"rllib {name} does not accept hyperparameter(s) {unknown}; valid: {sorted(accepted)} "
                         f"plus {list(_OWN_KEYS)}")
    # A step of the runner steps all n_envs slots: a fragment of ceil(batch / n_envs) steps fills
    # one PPO train batch per iteration; DQN samples small fragments between its updates.
    fragment = hyperparams.get("rollout_fragment_length")
    if fragment is None:
        fragment = "auto" if name == "ppo" else max(1, 64 // n_envs)
    config = (
        Config()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .framework("torch")
        .environment(env=f"dynalay_env:{env_id}", env_config=dict(env_config))
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=n_envs,
                     gym_env_vectorize_mode="vector_entry_point", rollout_fragment_length=fragment,
                     num_cpus_per_env_runner=1)
        .learners(num_learners=0)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(hyperparams.get("fcnet_hiddens", [64, 64]))))
        .training(**training)
        .reporting(min_sample_timesteps_per_iteration=int(hyperparams.get("min_sample_timesteps_per_iteration", 0)))
        .debugging(seed=seed, log_level="ERROR")
    )
    return config


def init_ray(address: str | None, num_env_runners: int) -> None:
    """Start Ray locally (``num_env_runners + 1`` CPUs, no dashboard, worker logs not forwarded), or
    join the cluster at ``address`` (``auto``: the one ``ray start`` started on this machine)."""
    ray = require_ray()
    if ray.is_initialized():
        return
    # The workers of a local Ray import this project from the driver's working folder.
    env = {"env_vars": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1")}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=False)
    else:
        # address="local": a fresh Ray of this process, even where `ray start` left a cluster running.
        ray.init(address="local", num_cpus=num_env_runners + 1, include_dashboard=False, log_to_driver=False,
                 runtime_env=env, configure_logging=False)


# ---- the agent ----------------------------------------------------------------------------------


class RLlibAgent:
    """An RLlib algorithm (while training) or its RLModule alone (loaded for inference) as an
    :class:`agents.interface.Agent`.

    Args:
        module: the torch RLModule that acts (PPO's or DQN's default module).
        algo: the name (``ppo`` / ``dqn``).
        algorithm: the RLlib ``Algorithm`` that trains ``module`` (None for a loaded agent).
        num_timesteps: env steps trained so far.
    """

    def __init__(self, module: Any, algo: str, algorithm: Any = None, num_timesteps: int = 0) -> None:
        self.module = module
        self.algo = check_algorithm(algo)
        self.algorithm = algorithm
        self.num_timesteps = int(num_timesteps)
        self.last_result: dict[str, Any] = {}
        self._decision_flops: int | None = None

    # ---- training ----

    def learn(self, total_timesteps: int, callback: Callable[[RLlibAgent], None] | None = None,
              **kwargs: Any) -> RLlibAgent:
        """Run ``algorithm.train()`` iterations until ``total_timesteps`` more env steps have been
        sampled; ``callback(self)`` after each iteration (checkpoints, validation)."""
        from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED  # optional dependency: Ray RLlib

        if self.algorithm is None:
            raise ValueError("this RLlib agent was loaded for inference only; train with `train_agent.py train "
                             "--resume` to continue a run")
        target = self.num_timesteps + int(total_timesteps)
        while self.num_timesteps < target:
            result = self.algorithm.train()
            sampled = int(result.get(ENV_RUNNER_RESULTS, {}).get(NUM_ENV_STEPS_SAMPLED, 0))
            if sampled <= 0:
                raise RuntimeError("an RLlib training iteration sampled no env steps")
            self.num_timesteps += sampled
            self.last_result = result
            self.module = self.algorithm.get_module()
            if callback is not None:
                callback(self)
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the algorithm's checkpoint (a folder) to ``path`` atomically, with
        ``dynalay_state.json`` (the step count) inside."""
        write_checkpoint(self, path)

    # ---- acting ----

    def _scores(self, obs: torch.Tensor) -> torch.Tensor:
        """``[N, num_actions]`` action scores: PPO's logits, DQN's Q-values."""
        if self.algo == "dqn":
            from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_PREDS  # optional dependency: Ray RLlib

            return self.module.compute_q_values({"obs": obs})[QF_PREDS]
        from ray.rllib.core.columns import Columns  # optional dependency: Ray RLlib

        return self.module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]

    @torch.no_grad()
    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                action_masks: np.ndarray | None = None, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """Actions ``[N]`` for observations ``[N, obs_dim]``: the best-scoring allowed action
        (``deterministic``), else a sample from PPO's policy (DQN stays greedy). ``action_masks``
        bool ``[N, num_actions]``: masked actions get score ``-inf``."""
        device = next(self.module.parameters()).device
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32), device=device)
        scores = self._scores(obs.reshape(-1, obs.shape[-1])).float()
        if action_masks is not None:
            mask = torch.as_tensor(np.asarray(action_masks, dtype=bool).reshape(scores.shape), device=device)
            scores = scores.masked_fill(~mask, float("-inf"))
        if deterministic or self.algo == "dqn":
            actions = scores.argmax(-1)
        else:
            actions = torch.distributions.Categorical(logits=scores).sample()
        return actions.cpu().numpy(), state

    def decision_flops(self, batch: int = 16) -> int:
        """FLOPs of one decision: the forward :meth:`predict` runs, on ``batch`` zero observations
        under ``FlopCounterMode``, divided by ``batch`` (independent of the values)."""
        if self._decision_flops is None:
            space = self.module.observation_space
            obs = torch.zeros((batch, *space.shape), dtype=torch.float32,
                              device=next(self.module.parameters()).device)
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                self._scores(obs)
            self._decision_flops = int(round(counter.get_total_flops() / batch))
        return self._decision_flops


def write_checkpoint(agent: RLlibAgent, path: str | os.PathLike) -> Path:
    """The algorithm's checkpoint (a folder: module, optimiser, connectors, config) at ``path``,
    written by :func:`dynalay_env.atomic.atomic_dir`, with ``dynalay_state.json`` (the step count)."""
    if agent.algorithm is None:
        raise ValueError("an RLlib agent loaded for inference has no algorithm state to save")
    with atomic_dir(path) as tmp:
        agent.algorithm.save_to_path(str(tmp.resolve()))
        atomic_write_json(tmp / STATE_NAME, {"algo": agent.algo, "num_timesteps": agent.num_timesteps})
    return Path(path)


def load_agent(path: str | os.PathLike, spec: AlgoSpec | None = None, device: str = "cpu") -> RLlibAgent:
    """The agent of the checkpoint folder ``path`` for inference: its RLModule alone, read without
    starting Ray (``spec``: the run's algorithm; default the one the checkpoint names)."""
    require_ray()
    from ray.rllib.core.rl_module.rl_module import RLModule  # optional dependency: Ray RLlib

    path = Path(path)
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not an RLlib checkpoint written by this project (no {STATE_NAME})")
    state = json.loads(state_file.read_text())
    module = RLModule.from_checkpoint(str(path.joinpath(*MODULE_SUBPATH).resolve()))
    module.to(torch.device(device))
    module.eval()
    return RLlibAgent(module, spec.name if spec is not None else state["algo"], num_timesteps=state["num_timesteps"])


def seed_replay_buffer(algorithm: Any, seed: int) -> None:
    """Seed the sampling of ``algorithm``'s replay buffer (DQN), which RLlib draws from an unseeded
    generator: with it, a DQN run is as reproducible as a PPO run. A no-op without a buffer."""
    buffer = getattr(algorithm, "local_replay_buffer", None)
    if buffer is not None and hasattr(buffer, "rng"):
        buffer.rng = np.random.default_rng(seed)


def set_env_option(algorithm: Any, name: str, value: Any) -> None:
    """Set the live env option ``name`` (``DynaLayCore.set_option``) in the env of every env runner
    of ``algorithm``, local and remote."""

    def set_option(runner: Any) -> None:
        env = getattr(runner, "env", None)
        if env is not None:
            env.unwrapped.set_attr(name, value)

    algorithm.env_runner_group.foreach_env_runner(set_option, local_env_runner=True)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


# ---- checkpoints --------------------------------------------------------------------------------


def list_rllib_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete periodic checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("rllib_*_steps")
             if (m := _CHECKPOINT_RE.match(p.name)) and (p / STATE_NAME).is_file()]
    return [p for _, p in sorted(found)]


def save_rllib_checkpoint(run_dir: str | Path, agent: RLlibAgent, keep: int = 2) -> Path:
    """``checkpoints/rllib_<steps>_steps/`` of ``agent``; keeps the newest ``keep``."""
    path = Path(run_dir) / CHECKPOINT_DIR / f"rllib_{agent.num_timesteps}_steps"
    write_checkpoint(agent, path)
    for old in list_rllib_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


# ---- training into a run folder -----------------------------------------------------------------


def train_rllib(spec: AlgoSpec, config: TrainConfig, run_dir: Path, resume: bool) -> tuple[RLlibAgent, Path]:
    """Train (or resume) the algorithm ``spec`` with ``config`` (``framework="rllib"``) in the
    prepared ``run_dir``; see :func:`agents.training.train` for the layout."""
    if config.uses_cotrain():  # train() refuses it before creating the run folder
        raise ValueError("--framework rllib does not co-train the main model; drop --cotrain / mode: cotrain")
    name = check_algorithm(spec.name)
    hyperparams = rllib_hyperparams(name, config.env_id, config.hyperparams_file, config.hyperparams)
    timesteps = int(config.timesteps or hyperparams["n_timesteps"])
    n_envs = int(config.n_envs or hyperparams["n_envs"])
    config.timesteps, config.n_envs = timesteps, n_envs
    if not resume:
        write_json(run_dir / CONFIG_NAME, asdict(config))
    model_path = ensure_main_model(config, run_dir)
    options = env_options(config, str(model_path.resolve()), training=True)
    probe = make_core(1, **options)  # the provenance of what the runners train on (train.json)
    if resume:
        remove_stale_temporaries(run_dir)
    checkpoints = list_rllib_checkpoints(run_dir) if resume else []
    # Ray starts only once everything else has been checked.
    init_ray(config.ray_address, config.num_env_runners)
    from ray.rllib.core import DEFAULT_MODULE_ID  # optional dependency: Ray RLlib

    algorithm = algorithm_config(name, config.env_id, options, hyperparams, n_envs=n_envs, seed=config.seed,
                                 num_env_runners=config.num_env_runners).build_algo()
    agent = RLlibAgent(algorithm.get_module(DEFAULT_MODULE_ID), name, algorithm)
    # Set live in every runner's env (as the SB3 path sets it on its core). A runner that RLlib
    # restarts after a crash would rebuild its env without it: fault tolerance is left off (default).
    decision_flops = charge_decision_flops(config, agent, lambda key, value: set_env_option(algorithm, key, value))
    if checkpoints:
        algorithm.restore_from_path(str(checkpoints[-1].resolve()))
        agent.num_timesteps = int(json.loads((checkpoints[-1] / STATE_NAME).read_text())["num_timesteps"])
        agent.module = algorithm.get_module(DEFAULT_MODULE_ID)
    seed_replay_buffer(algorithm, config.seed + agent.num_timesteps)
    done = agent.num_timesteps
    evaluate_val = val_evaluator(config, model_path)
    history_path = run_dir / "val_history.json"
    history: list[dict[str, Any]] = json.loads(history_path.read_text()) if resume and history_path.is_file() else []
    marks = {"eval": (done // config.eval_freq + 1) * config.eval_freq,
             "checkpoint": (done // config.checkpoint_freq + 1) * config.checkpoint_freq}

    def on_iteration(agent: RLlibAgent) -> None:
        steps = agent.num_timesteps
        if steps >= marks["eval"]:
            marks["eval"] = (steps // config.eval_freq + 1) * config.eval_freq
            history.append({"timesteps": steps, **evaluate_val(agent)})
            atomic_write_json(history_path, history, indent=1)
        if steps >= marks["checkpoint"]:
            marks["checkpoint"] = (steps // config.checkpoint_freq + 1) * config.checkpoint_freq
            save_rllib_checkpoint(run_dir, agent)

    start = time.perf_counter()
    try:
        remaining = max(0, timesteps - done)
        if remaining > 0:
            agent.learn(remaining, callback=on_iteration)
        write_checkpoint(agent, run_dir / RLLIB_DIR)
    finally:
        algorithm.stop()
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN  # optional dependency: Ray RLlib

    summary = {"algo": name, "framework": "rllib", "timesteps_requested": timesteps,
               "timesteps_done": agent.num_timesteps, "resumed_from": done if checkpoints else None,
               "wall_seconds": time.perf_counter() - start, "decision_flops": decision_flops,
               "provenance": probe.provenance,
               "model_provenance": provenance_of(probe.model, probe.dataset),
               "episode_return_mean": _float_or_none(agent.last_result.get(ENV_RUNNER_RESULTS, {}).get(EPISODE_RETURN_MEAN)),
               "num_env_runners": config.num_env_runners, "ray_address": config.ray_address}
    write_json(run_dir / "train.json", summary)
    agent.algorithm = None  # stopped: what is returned is the trained module
    return agent, run_dir


__all__ = ["DEFAULT_HYPERPARAMS", "INSTALL_HINT", "RLLIB_ALGORITHMS", "RLLIB_DIR", "RLlibAgent", "algorithm_config",
           "check_algorithm", "init_ray", "list_rllib_checkpoints", "load_agent", "require_ray", "rllib_hyperparams",
           "save_rllib_checkpoint", "seed_replay_buffer", "set_env_option", "train_rllib", "write_checkpoint"]
