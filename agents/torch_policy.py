"""Policies trained by other libraries (TorchRL, skrl, offline learners), evaluated as every agent is.

Any torch module that maps observations ``[B, obs_dim]`` (float32) to action logits or Q-values
``[B, K+1]`` becomes a greedy policy, :class:`GreedyTorchPolicy`, that
:func:`agents.evaluate.run_policy` plays on every example of a split exactly once, charging its own
FLOPs per decision (``torch.utils.flop_counter``), exactly like the project's own agents.
:func:`evaluate_greedy` does that on ``val`` and returns the figures the examples print and the
tests compare with the random policy of matched compute.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import dynalay_env
from agents.evaluate import run_policy
from dynalay_env.atomic import atomic_write_json
from dynalay_env.env import make_core


class GreedyTorchPolicy:
    """The greedy policy of a torch module: ``argmax`` of its scores over the allowed actions.

    Args:
        scores: a module (or any callable) mapping observations ``[B, obs_dim]`` float32 to scores
            ``[B, K+1]`` (logits, Q-values); it runs under ``torch.no_grad`` on the CPU.
        obs_dim: observation width (to measure the decision FLOPs).
        num_actions: K + 1.

    It has the ``predict`` / ``decision_flops`` half of :class:`agents.interface.Agent`, which is
    all :func:`agents.evaluate.run_policy` calls; training stays with the library that made it.
    """

    def __init__(self, scores: Any, obs_dim: int, num_actions: int) -> None:
        self.scores = scores
        self.obs_dim = int(obs_dim)
        self.num_actions = int(num_actions)
        self.num_timesteps = 0

    @torch.no_grad()
    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                action_masks: np.ndarray | None = None, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """Actions ``[B]`` int64 for ``observation [B, obs_dim]``; masked actions (``action_masks``
        bool ``[B, K+1]``, False = forbidden) are never chosen."""
        scores = self.scores(torch.as_tensor(np.asarray(observation, dtype=np.float32)))
        if scores.shape[-1] != self.num_actions:
            raise ValueError(f"the policy module gives {scores.shape[-1]} scores per observation; the env has "
                             f"{self.num_actions} actions")
        if action_masks is not None:
            scores = scores.masked_fill(~torch.as_tensor(np.asarray(action_masks, dtype=bool)), -torch.inf)
        return scores.argmax(-1).numpy().astype(np.int64), state

    @torch.no_grad()
    def decision_flops(self) -> int:
        """FLOPs of one decision: the module's forward for one observation (measured on a batch)."""
        batch = 64
        with FlopCounterMode(display=False) as counter:
            self.scores(torch.zeros(batch, self.obs_dim))
        return int(round(counter.get_total_flops() / batch))


def evaluate_greedy(policy: GreedyTorchPolicy, env_id: str, *, model: str | os.PathLike | None = None,
                    split: str = "val", num_envs: int = 256, **env_options: Any) -> dict[str, Any]:
    """Play ``policy`` on every example of ``split`` once (the env id's dataset, ``model`` or the
    cached default model, and the env options it trained with). Returns ``split``, ``episodes``,
    ``accuracy``, ``mean_compute`` (normalised; 1.0 = full depth, the policy's decisions included),
    ``env_compute`` (without them) and ``decision_flops``."""
    dataset = dynalay_env.ENV_IDS.get(env_id)
    if dataset is None:
        valid = ", ".join(k for k, v in dynalay_env.ENV_IDS.items() if v is not None)
        raise ValueError(f"evaluate_greedy needs an env id with a dataset; got {env_id!r}, valid: {valid}")
    core = make_core(num_envs, dataset=dataset, model=model, split=split, sample_mode="sequential", **env_options)
    records = run_policy(core, policy)
    return {"split": split, "episodes": int(records.correct.size), "accuracy": records.accuracy,
            "mean_compute": records.mean_compute, "env_compute": float(np.mean(records.env_compute)),
            "decision_flops": policy.decision_flops()}


def report_evaluation(report: dict[str, Any], results: str | os.PathLike | None = None) -> dict[str, Any]:
    """Print the one-line summary of an :func:`evaluate_greedy` report and, if ``results`` names a
    file, write the report there as JSON (atomically). Returns ``report``."""
    print(f"eval on {report['split']} ({report['episodes']} examples): accuracy {report['accuracy']:.4f}, "
          f"mean compute {report['mean_compute']:.4f} (1.0 = full depth; {report['decision_flops']} FLOPs per "
          "decision included)")
    if results:
        atomic_write_json(results, report)
    return report


__all__ = ["GreedyTorchPolicy", "evaluate_greedy", "report_evaluation"]
