"""Adaptive inference outside Gymnasium: classify raw inputs with a learned layer-selection policy.

``AdaptiveClassifier(model, policy)`` is what a user deploys. It runs the same MDP core as the env
(so the policy sees exactly the observations it was trained on), batched: every step makes one
policy call, one solve per chosen layer and one head call, and finished inputs leave the batch of
solves. A stateless policy is asked about the inputs still running only; a recurrent or baseline
policy is asked about every input of the batch (its recurrent state, or the core slots it reads,
hold one row per input), and its answers for finished inputs are discarded and not charged. No
Python runs per input.

    clf = AdaptiveClassifier.from_run("runs/demo")
    result = clf.predict(x)              # x: [n, *input_shape]
    result.prediction, result.compute    # [n] labels, [n] normalised compute

``cost="latency"`` (with ``latency_table``, or from a run folder the table ``dynalay profile`` wrote
beside its checkpoint) charges table-estimated seconds instead of executed FLOPs; ``result.unit``
names the unit of ``result.cost``, and ``compute`` is that cost over the full-depth model's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.baselines import BaselinePolicy
from agents.interface import as_agent, decision_flops_of
from agents.records import charged_per_flop
from agents.training import load_run
from dynalay_env.core import DynaLayCore
from dynalay_env.latency import LatencyCostTable, load_latency_table
from dynalay_env.model import CostTable, FPIModel, load_checkpoint
from dynalay_env.options import EnvOptions


@dataclass
class InferenceResult:
    """Per-input outcome (arrays ``[n]``; ``path`` ``[n, max_steps]`` of 1-based layers, -1 padded).
    ``compute`` and ``flops`` count the policy's decisions (``decision_flops`` each); ``env_compute``
    is the main model alone. ``cost`` is the charged cost in ``unit`` (the FLOPs under
    ``cost="flops"``, table-estimated seconds under ``cost="latency"``; decisions priced as the same
    share of the full-depth model as their FLOPs) and ``compute = cost / normalizer``."""

    prediction: np.ndarray
    compute: np.ndarray
    flops: np.ndarray
    steps: np.ndarray
    path: np.ndarray
    env_compute: np.ndarray | None = None
    decision_flops: float = 0.0
    cost: np.ndarray | None = None
    unit: str = CostTable.unit


#: The env options that shape a policy's observations and masks: a deployed policy runs with those
#: it was trained with (the reward's and the sampling's do not apply at inference).
POLICY_OPTIONS: tuple[str, ...] = ("max_steps", "observation_groups", "mask_repeats", "compute_budget")

#: The env options that choose what compute is charged in (``cost="flops"`` or ``"latency"``).
COST_OPTIONS: tuple[str, ...] = ("cost", "latency_table")


class AdaptiveClassifier:
    """Classify batches with ``policy`` choosing layers of ``model`` per input.

    Args:
        model: the main model (``FPIModel``), in eval mode.
        policy: an :class:`agents.interface.Agent` (e.g. from :func:`agents.training.load_run`), a
            bare SB3 model or a baseline policy (``agents.baselines``); its measured
            ``decision_flops()`` is charged per decision in the results.
        batch_size: inputs in flight at once.
        device: where the episodes run.
        **options: the env options the policy was trained with that shape its observations and
            masks (:data:`POLICY_OPTIONS`: ``max_steps``, ``observation_groups``, ``mask_repeats``,
            ``compute_budget``); defaults and checks are :class:`~dynalay_env.options.EnvOptions`'.
            Also :data:`COST_OPTIONS`: ``cost`` (``"flops"`` or ``"latency"``) and ``latency_table``
            (a ``LatencyTable`` or its JSON file; needed for ``cost="latency"``).
    """

    def __init__(self, model: FPIModel, policy: Any, *, batch_size: int = 1024,
                 device: str = EnvOptions.default("device"), **options: Any) -> None:
        other = [k for k in options if k not in POLICY_OPTIONS + COST_OPTIONS]
        if other:
            raise TypeError(f"AdaptiveClassifier got an unexpected keyword argument {other[0]!r}; the env options "
                            f"it takes are {', '.join(POLICY_OPTIONS + COST_OPTIONS)}")
        self.model = model
        self.policy = as_agent(policy)
        env_options = EnvOptions.from_kwargs(options, owner="AdaptiveClassifier")
        if env_options.cost == "latency" and env_options.latency_table is None:
            raise ValueError("cost='latency' needs latency_table: a LatencyTable or the JSON file `dynalay profile` "
                             "wrote (AdaptiveClassifier.from_run finds the one beside the run's checkpoint)")
        #: The policy's env options (:data:`POLICY_OPTIONS`).
        self.options = {k: getattr(env_options, k) for k in POLICY_OPTIONS}
        #: What compute is charged in (:data:`COST_OPTIONS`).
        self.cost_options = {k: getattr(env_options, k) for k in COST_OPTIONS}
        self.batch_size = batch_size
        self.device = torch.device(device)

    @classmethod
    def from_run(cls, run_dir: str | Path, **overrides: Any) -> AdaptiveClassifier:
        """The trained agent and main model of a ``train_agent.py train`` run folder. Under
        ``cost="latency"`` (the run's or an override) without ``latency_table``, the table beside the
        run's checkpoint is used (:func:`dynalay_env.latency.load_latency_table`)."""
        config, agent, model_path = load_run(run_dir)
        model = load_checkpoint(model_path, device=config.device).model
        keep = {k: config.env_kwargs[k] for k in POLICY_OPTIONS + COST_OPTIONS if k in config.env_kwargs}
        options = {**keep, **overrides}
        if options.get("cost", EnvOptions.default("cost")) != "latency":
            options.pop("latency_table", None)  # a run's table does not apply under another cost
        elif options.get("latency_table") is None:
            options["latency_table"] = load_latency_table(model_path, model, device=config.device)
        return cls(model, agent, device=config.device, **options)

    @torch.no_grad()
    def predict(self, x: torch.Tensor | np.ndarray) -> InferenceResult:
        """Classify ``x`` ``[n, *input_shape]``, ``batch_size`` inputs at a time."""
        x = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x,
                            device=self.device)
        expected = tuple(self.model.input_shape)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected inputs of shape [n, {', '.join(map(str, expected))}], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("expected at least one input, got an empty batch")
        parts = [self._predict_batch(x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
        prediction, compute, flops, steps, path, env_compute, cost = (np.concatenate(arrays)
                                                                      for arrays in zip(*parts, strict=True))
        return InferenceResult(prediction, compute, flops, steps, path, env_compute=env_compute,
                               decision_flops=float(decision_flops_of(self.policy)), cost=cost, unit=self.unit)

    @property
    def unit(self) -> str:
        """The unit compute is charged in: ``"FLOPs (executed)"`` or ``"seconds (table-estimated)"``."""
        return LatencyCostTable.unit if self.cost_options["cost"] == "latency" else CostTable.unit

    def _predict_batch(self, x: torch.Tensor) -> tuple[np.ndarray, ...]:
        """One batch: every input is an episode of one core, all started at once. Each step asks the
        policy in one batched call (about the running inputs only for a stateless policy, about
        every input for a recurrent or baseline one) and makes one solve per chosen layer; an input
        that exits leaves the batch. Results are read once, at the end. Each policy answer for a
        running input is a decision, charged the policy's measured ``decision_flops()``; answers
        for finished inputs are discarded and not charged."""
        n = x.shape[0]
        labels = torch.zeros(n, dtype=torch.long, device=self.device)  # unknown: the reward is not used
        core = DynaLayCore(self.model, None, n, sample_mode="sequential", device=self.device,
                           examples=(x, labels), **self.options,
                           **{k: v for k, v in self.cost_options.items() if v is not None})
        everything = np.arange(n)
        obs = core.reset(everything, examples=everything)
        baseline = isinstance(self.policy, BaselinePolicy)
        if baseline:
            self.policy.bind(core)
        running = np.ones(n, dtype=bool)
        decisions = np.zeros(n, dtype=np.int64)  # policy calls of each input (EXIT included)
        state: Any = None
        subset = False  # the first decision covers every input; later ones only those still running
        for t in range(core.max_steps + 1):
            rows = np.flatnonzero(running) if subset else everything
            actions = np.zeros(n, dtype=np.int64)
            actions[rows], state = self._decide(core, obs[torch.as_tensor(rows, device=self.device)].cpu().numpy(),
                                                rows, state, first=t == 0)
            decisions += running
            out = core.step(actions, active=running)
            running &= ~out.terminated.cpu().numpy()
            if not running.any():
                break
            obs = out.obs
            # A stateless policy sees only the running inputs; a recurrent or baseline policy keeps
            # one row per input (its state and the core's slots are indexed that way).
            subset = state is None and not baseline
        final = core.info_tensors()
        decision_flops = float(decision_flops_of(self.policy))
        flops = final["flops"].cpu().numpy() + decisions * decision_flops
        # The charged cost: the env's (``core.spent`` is ``core.flops`` under cost="flops") plus each
        # decision at its FLOPs' share of full depth (scale is exactly 1.0 under FLOPs).
        cost = core.spent.cpu().numpy() + decisions * (decision_flops * charged_per_flop(core))
        return (final["prediction"].cpu().numpy(), cost / core.normalizer, flops, final["step"].cpu().numpy(),
                final["path"].cpu().numpy(), final["compute"].cpu().numpy(), cost)

    def _decide(self, core: DynaLayCore, obs: np.ndarray, rows: np.ndarray, state: Any,
                first: bool) -> tuple[np.ndarray, Any]:
        """Actions of ``self.policy`` for the observations of slots ``rows``, in one call."""
        kwargs: dict[str, Any] = {}
        if "action_masks" in inspect.signature(self.policy.predict).parameters:
            kwargs["action_masks"] = core.action_masks()[rows]
        episode_start = np.full(len(rows), first)
        actions, state = self.policy.predict(obs, state=state, episode_start=episode_start, deterministic=True,
                                             **kwargs)
        return np.asarray(actions).reshape(-1), state

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
