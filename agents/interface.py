"""The algorithm interface every learner implements, whatever its framework.

The registry (:mod:`agents.algorithms`), training into a run folder (:func:`agents.training.train`),
:func:`agents.training.load_run`, evaluation (:func:`agents.evaluate.run_policy`) and
:class:`agents.inference.AdaptiveClassifier` only use these two protocols and :class:`AlgoSpec`:

* :class:`Agent` -- a trained (or training) policy: ``learn``, ``save``,
  ``predict(obs, state, episode_start, action_masks) -> (actions, state)`` and
  ``decision_flops()``, the FLOPs of one decision (one call of the policy for one observation).
* :class:`Backend` -- how a framework builds an agent from hyperparameters on an env and loads a
  saved one.

* :class:`AlgoSpec` -- one registered algorithm: its class, default policy, what it can do and
  the :class:`Backend` that builds it. Backends receive the spec; they never look a name up.

Stable-Baselines3 / sb3-contrib is one implementation (:mod:`agents.sb3_backend`); the supervised
baselines of :mod:`agents.supervised` are a second; Ray RLlib (:mod:`agents.rllib_backend`) a third.

**Decision cost.** A decision is one call of the policy: every step it chooses, EXIT included; the
forced exit at ``max_steps`` is not a decision. ``Agent.decision_flops()`` is the FLOPs of one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Agent(Protocol):
    """A policy that chooses DynaLay actions; framework-neutral."""

    num_timesteps: int

    def learn(self, total_timesteps: int, **kwargs: Any) -> Any:
        """Train for ``total_timesteps`` more env steps on the env it was built or loaded with."""

    def save(self, path: str | os.PathLike) -> None:
        """Write everything :meth:`Backend.load` needs into the file ``path``."""

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                action_masks: np.ndarray | None = None, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """Actions ``[N]`` for observations ``[N, obs_dim]``; ``state`` is the recurrent state (None
        for a feed-forward policy), ``episode_start`` bool ``[N]``, ``action_masks`` bool
        ``[N, num_actions]`` (ignored by a policy that does not use masks)."""

    def decision_flops(self) -> int:
        """FLOPs of one decision: one forward of the policy for one observation."""


class Backend(Protocol):
    """How one framework builds and loads :class:`Agent` objects."""

    name: str

    def build(self, spec: AlgoSpec, env: Any, hyperparams: dict[str, Any], *, seed: int = 0, device: str = "cpu",
              tensorboard_log: str | None = None, verbose: int = 0) -> Agent:
        """A fresh agent of algorithm ``spec`` on ``env``."""

    def load(self, spec: AlgoSpec, path: str | os.PathLike, *, env: Any = None, device: str = "cpu",
             **kwargs: Any) -> Agent:
        """The agent saved at ``path`` (attached to ``env`` when given, to continue training)."""


@dataclass(frozen=True)
class AlgoSpec:
    """One registered algorithm.

    Attributes:
        name: canonical (rl-zoo3) name.
        cls: the SB3 / sb3-contrib algorithm class (or the learner class of :mod:`agents.supervised`).
        policy: default policy name (used when the hyperparameters name none).
        recurrent: the policy keeps a hidden state (``predict`` needs ``state`` / ``episode_start``).
        supports_action_masks: the algorithm reads ``action_masks()`` from the env.
        off_policy: learns from a replay buffer.
        zoo: rl-zoo3 knows this name (``--algo <name>``).
        backend: the framework that builds and loads it (:class:`Backend`); the
            rest of the project only uses :meth:`build` and :meth:`load`, which return an
            :class:`Agent`.
    """

    name: str
    cls: type
    policy: str
    recurrent: bool
    supports_action_masks: bool
    off_policy: bool
    zoo: bool
    backend: Backend

    def build(self, env: Any, hyperparams: Mapping[str, Any], *, seed: int = 0, device: str = "cpu",
              tensorboard_log: str | None = None, verbose: int = 0) -> Agent:
        """A fresh agent on ``env`` from rl-zoo3 style ``hyperparams``
        (:func:`agents.hyperparams.algorithm_kwargs`)."""
        return self.backend.build(self, env, dict(hyperparams), seed=seed, device=device,
                                  tensorboard_log=tensorboard_log, verbose=verbose)

    def load(self, path: str | os.PathLike, *, env: Any = None, device: str = "cpu", **kwargs: Any) -> Agent:
        """The agent saved at ``path`` (``env``: attach it to continue training)."""
        return self.backend.load(self, path, env=env, device=device, **kwargs)

    def check_compatibility(self, env_kwargs: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` saying why this algorithm cannot train on an env built with ``env_kwargs``.

        * A recurrent policy (``ppo_lstm``) with action masks (``mask_repeats=True`` or a
          ``compute_budget``): sb3-contrib has no recurrent maskable PPO.
        * Other algorithms without mask support may run with masks: the env executes a masked action
          as EXIT and flags it (``info["masked_action"]``), so the agent learns the rule from its
          reward. A ``UserWarning`` says so.
        * ``maskable_ppo`` without any mask option is allowed: every action is then allowed (masks are
          all true) and it behaves as ``ppo``.
        """
        if not isinstance(env_kwargs, Mapping):
            raise TypeError(f"env_kwargs must be a mapping, got {type(env_kwargs).__name__}")
        reasons = []
        if env_kwargs.get("mask_repeats"):
            reasons.append("mask_repeats=True")
        if env_kwargs.get("compute_budget") is not None:
            reasons.append(f"compute_budget={env_kwargs['compute_budget']!r}")
        if not reasons or self.supports_action_masks:
            return
        if self.recurrent:
            raise ValueError(f"{self.name} ({self.cls.__name__}) cannot use action masks ({', '.join(reasons)}): "
                             "sb3-contrib has no recurrent maskable PPO; use maskable_ppo or drop the masks")
        warnings.warn(f"{self.name} ignores action masks ({', '.join(reasons)}): a masked action is executed as "
                      "EXIT (info['masked_action']); use maskable_ppo to respect them", UserWarning, stacklevel=2)


# ---- framework models as agents ---------------------------------------------------------------

#: Functions ``policy -> Agent | None`` that wrap a framework's own model (a bare SB3 model) as an
#: :class:`Agent`; each backend module registers its own when it is imported.
AGENT_WRAPPERS: list[Callable[[Any], Agent | None]] = []

#: Top-level packages whose models need a wrapper of :data:`AGENT_WRAPPERS`.
_WRAPPED_FRAMEWORKS: dict[str, str] = {"stable_baselines3": "agents.sb3_backend", "sb3_contrib": "agents.sb3_backend"}


def register_agent_wrapper(wrap: Callable[[Any], Agent | None]) -> None:
    """Let :func:`as_agent` turn a framework's own model into an :class:`Agent` with ``wrap``."""
    if wrap not in AGENT_WRAPPERS:
        AGENT_WRAPPERS.append(wrap)


def as_agent(policy: Any) -> Any:
    """``policy`` as an :class:`Agent` where it is a framework's bare model (an SB3 model); anything
    else unchanged. ``TypeError`` for a framework model whose backend module was never imported
    (its wrapper is not registered), rather than playing it without its decision cost."""
    for wrap in AGENT_WRAPPERS:
        agent = wrap(policy)
        if agent is not None:
            return agent
    backend = _WRAPPED_FRAMEWORKS.get(type(policy).__module__.split(".")[0])
    if backend is not None:
        raise TypeError(f"a {type(policy).__name__} model needs its backend: import {backend} (or agents.algorithms) "
                        f"before playing it")
    return policy


def decision_flops_of(policy: Any) -> int:
    """FLOPs per decision of ``policy``: its ``decision_flops()``, 0 for one without (a fixed
    program such as a fixed path makes no data-dependent decision worth charging)."""
    policy = as_agent(policy)
    method = getattr(policy, "decision_flops", None)
    return int(method()) if callable(method) else 0


__all__ = ["AGENT_WRAPPERS", "Agent", "AlgoSpec", "Backend", "as_agent", "decision_flops_of",
           "register_agent_wrapper"]
