"""Adaptive inference outside Gymnasium: classify raw inputs with a learned layer-selection policy.

``AdaptiveClassifier(model, policy)`` is what a user deploys. It runs the same MDP core as the env
(so the policy sees exactly the observations it was trained on), batched: every step makes one
solve per chosen layer over the whole batch and one head call, and finished inputs leave the batch.

    clf = AdaptiveClassifier.from_run("runs/demo")
    result = clf.predict(x)              # x: [n, *input_shape]
    result.prediction, result.compute    # [n] labels, [n] normalised compute
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.evaluate import run_policy
from dynalay_env.core import OBSERVATION_GROUPS, DynaLayCore
from dynalay_env.model import FPIModel


@dataclass
class InferenceResult:
    """Per-input outcome (arrays ``[n]``; ``path`` ``[n, max_steps]`` of 1-based layers, -1 padded).
    ``compute`` and ``flops`` count the policy's decisions (``decision_flops`` each); ``env_compute``
    is the main model alone."""

    prediction: np.ndarray
    compute: np.ndarray
    flops: np.ndarray
    steps: np.ndarray
    path: np.ndarray
    env_compute: np.ndarray | None = None
    decision_flops: float = 0.0


class AdaptiveClassifier:
    """Classify batches with ``policy`` choosing layers of ``model`` per input.

    Args:
        model: the main model (``FPIModel``), in eval mode.
        policy: an :class:`agents.interface.Agent` (e.g. from :func:`agents.training.load_run`), a
            bare SB3 model or a baseline policy (``agents.baselines``); its measured
            ``decision_flops()`` is charged per decision in the results.
        max_steps, observation_groups, mask_repeats, compute_budget: the env options the policy was
            trained with (they shape its observations and masks).
        batch_size: inputs in flight at once.
    """

    def __init__(self, model: FPIModel, policy: Any, *, max_steps: int = 4,
                 observation_groups: Sequence[str] = OBSERVATION_GROUPS, mask_repeats: bool = False,
                 compute_budget: float | None = None, batch_size: int = 1024, device: str = "cpu") -> None:
        self.model = model
        self.policy = policy
        self.options = dict(max_steps=max_steps, observation_groups=tuple(observation_groups),
                            mask_repeats=mask_repeats, compute_budget=compute_budget)
        self.batch_size = batch_size
        self.device = torch.device(device)

    @classmethod
    def from_run(cls, run_dir: str | Path, **overrides: Any) -> AdaptiveClassifier:
        """The trained agent and main model of a ``train_agent.py train`` run folder."""
        from agents.training import load_run
        from dynalay_env.model import load_checkpoint

        config, agent, model_path = load_run(run_dir)
        model = load_checkpoint(model_path, device=config.device).model
        keep = {k: config.env_kwargs[k] for k in ("max_steps", "observation_groups", "mask_repeats", "compute_budget")
                if k in config.env_kwargs}
        return cls(model, agent, device=config.device, **{**keep, **overrides})

    @torch.no_grad()
    def predict(self, x: torch.Tensor | np.ndarray) -> InferenceResult:
        """Classify ``x`` ``[n, *input_shape]``."""
        x = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x,
                            device=self.device)
        expected = tuple(self.model.input_shape)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected inputs of shape [n, {', '.join(map(str, expected))}], got {tuple(x.shape)}")
        dummy_labels = torch.zeros(x.shape[0], dtype=torch.long, device=self.device)
        core = DynaLayCore(self.model, None, min(self.batch_size, x.shape[0]), sample_mode="sequential",
                           device=self.device, examples=(x, dummy_labels), **self.options)
        records = run_policy(core, self.policy)
        return InferenceResult(records.prediction, records.compute, records.flops, records.steps, records.path,
                               env_compute=records.env_compute, decision_flops=records.decision_flops)

    @torch.no_grad()
    def predict_full_depth(self, x: torch.Tensor) -> torch.Tensor:
        """Labels from the full-depth path (layers 1..K), batched, for comparison."""
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            x_emb = self.model.encode(x[i:i + self.batch_size])
            z = x_emb
            for k in range(self.model.num_layers):
                z = self.model.apply_layer(k, z, x_emb).state
            out.append(self.model.classify(z).argmax(1))
        return torch.cat(out)
