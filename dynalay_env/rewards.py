"""Reward registry: choose a reward by name (``paper``, ``blockdrop``, ``logprob``) or pass a callable.

Every reward sees one :class:`RewardInputs` batch per environment step (all N episodes at once) and
returns a float32 tensor ``[N]``. Compute is *normalised* (1.0 = the full-depth model; docs/design.md).

The parameters and their defaults are the fields of :class:`RewardParams` (shared by all rewards).

Why these defaults: a right answer is worth ``correct_reward - wrong_reward = 2`` more than a wrong
one. Running one more layer costs ``lambda_compute * c_step`` with ``c_step`` about 1/3 (one of K=3
layers of the full-depth model), so a layer is worth running when it raises the chance of a correct
answer by more than ``lambda_compute * (1/3) / 2`` (about 1.7 points at the default). On MNIST-1D
the first layer adds ~20 points on average, so depth pays on average, while a confident example
gains far less than that and should exit: the trade-off a policy has to learn. ``mu_redundant`` is
a few times a layer's compute price, so repeating a layer must buy at least
``(mu_redundant + lambda_compute / 3) / 2`` (about 4 points at the defaults) of accuracy to pay
off; repeating is allowed, not forbidden.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from dynalay_env.registry import lookup, register


@dataclass(frozen=True)
class RewardInputs:
    """What a reward may look at for one step of N episodes (tensors ``[N]``).

    step_compute:   normalised compute of this step (0 for EXIT: its head call was paid when the
                    state was reached)
    total_compute:  normalised compute of the episode so far, this step included (encoder and
                    the head at every visited state included)
    repeated:       the action re-applied the layer applied just before it
    terminal:       the episode ends with this step (EXIT or ``max_steps``)
    correct:        the prediction at the resulting state is right (meaningful when ``terminal``)
    log_prob_true:  log-probability of the true label at the resulting state
    prob_true_before, prob_true_after: the head's probability of the true label at the state before /
                    after the step (the shaping potential)
    """

    step_compute: Tensor
    total_compute: Tensor
    repeated: Tensor
    terminal: Tensor
    correct: Tensor
    log_prob_true: Tensor
    prob_true_before: Tensor
    prob_true_after: Tensor


class RewardFunction(Protocol):
    """A reward function: one :class:`RewardInputs` batch of N episodes in, a float tensor ``[N]`` out."""
    def __call__(self, inputs: RewardInputs) -> Tensor: ...


@dataclass(frozen=True)
class RewardParams:
    """Parameters shared by the built-in rewards (see the module docstring for the defaults).

    ``shaping``: ``None`` or ``"confidence"`` -- adds the potential-based term
    ``F = shaping_gamma * Phi(s') - Phi(s)`` with ``Phi(s) = p_head(y | s)`` and ``Phi = 0`` at
    terminal states (Ng, Harada & Russell 1999): it densifies the signal without changing the
    optimal policy when ``shaping_gamma`` equals the agent's discount (1.0 in every shipped
    ``agents/hyperparams/*.yml``: episodes are 1-5 steps and the reward already prices compute).
    """

    correct_reward: float = 1.0
    wrong_reward: float = -1.0
    lambda_compute: float = 0.1
    mu_redundant: float = 0.05
    shaping: str | None = None
    shaping_gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.shaping not in SHAPINGS:
            raise ValueError(f"unknown shaping {self.shaping!r}; valid: {', '.join(map(repr, SHAPINGS))}")
        if self.lambda_compute < 0 or self.mu_redundant < 0:
            raise ValueError(f"lambda_compute and mu_redundant must be >= 0, got {self.lambda_compute}, "
                             f"{self.mu_redundant}")
        if not 0.0 <= self.shaping_gamma <= 1.0:
            raise ValueError(f"shaping_gamma must be in [0, 1], got {self.shaping_gamma}")


SHAPINGS: tuple[str | None, ...] = (None, "confidence")


def _shaping_term(inputs: RewardInputs, params: RewardParams) -> Tensor:
    if params.shaping is None:
        return torch.zeros_like(inputs.step_compute, dtype=torch.float32)
    after = torch.where(inputs.terminal, torch.zeros_like(inputs.prob_true_after), inputs.prob_true_after)
    return (params.shaping_gamma * after - inputs.prob_true_before).float()


def paper_reward(inputs: RewardInputs, params: RewardParams) -> Tensor:
    """DynaLay's reward (accuracy, compute time, redundancy), per step::

        r_t = [terminal] * (correct_reward if correct else wrong_reward)
              - lambda_compute * step_compute_t
              - mu_redundant * [action_t repeats action_{t-1}]
    """
    accuracy = torch.where(inputs.correct, params.correct_reward, params.wrong_reward)
    terminal = torch.where(inputs.terminal, accuracy, torch.zeros_like(accuracy))
    return (terminal - params.lambda_compute * inputs.step_compute
            - params.mu_redundant * inputs.repeated.to(inputs.step_compute.dtype)).float()


def blockdrop_reward(inputs: RewardInputs, params: RewardParams) -> Tensor:
    """BlockDrop's (Wu et al. 2018) terminal reward, 0 on non-terminal steps::

        r_T = 1 - c^2        if correct     (c = total normalised compute of the episode)
        r_T = wrong_reward   otherwise
    """
    value = torch.where(inputs.correct, 1.0 - inputs.total_compute ** 2,
                        torch.full_like(inputs.total_compute, params.wrong_reward))
    return torch.where(inputs.terminal, value, torch.zeros_like(value)).float()


def logprob_reward(inputs: RewardInputs, params: RewardParams) -> Tensor:
    """Log-likelihood of the label at exit minus the compute spent::

        r_t = [terminal] * log p(y | s_T) - lambda_compute * step_compute_t

    A proper scoring rule: it rewards calibrated confidence, not only the argmax.
    """
    terminal = torch.where(inputs.terminal, inputs.log_prob_true, torch.zeros_like(inputs.log_prob_true))
    return (terminal - params.lambda_compute * inputs.step_compute).float()


#: The reward of an env that names none (DynaLay's own, :func:`paper_reward`).
DEFAULT_REWARD = "paper"

REWARDS: dict[str, Callable[[RewardInputs, RewardParams], Tensor]] = {
    "paper": paper_reward,
    "blockdrop": blockdrop_reward,
    "logprob": logprob_reward,
}


#: The :class:`RewardParams` each built-in reward reads (shaping aside): what a study of that reward
#: should vary. ``blockdrop`` prices compute through ``1 - c^2`` and has no knob for it.
REWARD_PARAMETERS: dict[str, tuple[str, ...]] = {
    "paper": ("lambda_compute", "mu_redundant", "correct_reward", "wrong_reward"),
    "blockdrop": ("wrong_reward",),
    "logprob": ("lambda_compute",),
}


def list_rewards() -> list[str]:
    """The names of the registered rewards (``paper``, ``blockdrop``, ``logprob``, and any registered since)."""
    return list(REWARDS)




def register_reward(name: str, fn: Callable[[RewardInputs, RewardParams], Tensor], *,
                    parameters: tuple[str, ...] = (), overwrite: bool = False) -> None:
    """Add a reward ``fn(inputs, params) -> Tensor [N]`` under ``name`` (then ``reward=name`` in any
    env). ``parameters``: the :class:`RewardParams` it reads, what a study of it should vary
    (:data:`REWARD_PARAMETERS`). A taken name is refused unless ``overwrite``."""
    unknown = [p for p in parameters if p not in RewardParams.__dataclass_fields__]
    if unknown:
        raise ValueError(f"unknown reward parameter(s) {unknown}; valid: {sorted(RewardParams.__dataclass_fields__)}")
    register("reward", REWARDS, name, fn, overwrite=overwrite)
    REWARD_PARAMETERS[name] = tuple(parameters)


def get_reward(name: str) -> Callable[[RewardInputs, RewardParams], Tensor]:
    """The registered reward function ``name``; a ``ValueError`` lists the valid names."""
    return lookup("reward", REWARDS, name, extra=" (or a callable)")


class Reward:
    """A reward function bound to its parameters; call it on a :class:`RewardInputs` batch."""

    def __init__(self, name: str, fn: Callable[..., Tensor], params: RewardParams, takes_params: bool) -> None:
        self.name = name
        self.fn = fn
        self.params = params
        self._takes_params = takes_params

    def __call__(self, inputs: RewardInputs) -> Tensor:
        base = self.fn(inputs, self.params) if self._takes_params else self.fn(inputs)
        base = torch.as_tensor(base, dtype=torch.float32, device=inputs.step_compute.device)
        if base.shape != inputs.step_compute.shape:
            raise ValueError(f"reward {self.name!r} returned shape {tuple(base.shape)}, expected "
                             f"{tuple(inputs.step_compute.shape)} (one value per episode)")
        return base + _shaping_term(inputs, self.params)

    def describe(self) -> dict[str, Any]:
        """Name and parameters, for reports and provenance."""
        return {"name": self.name, **asdict(self.params)}


def make_reward(reward: str | Callable[..., Tensor] | Reward = DEFAULT_REWARD, **params: Any) -> Reward:
    """A :class:`Reward` from a registered name or a callable.

    A callable takes ``(inputs: RewardInputs)`` or ``(inputs, params: RewardParams)`` and returns a
    float tensor ``[N]``. Unknown names and parameters raise ``ValueError`` listing the valid ones.
    """
    if isinstance(reward, Reward):
        if params:
            raise ValueError("pass reward parameters either to make_reward or to the Reward, not both")
        return reward
    valid_params = set(RewardParams.__dataclass_fields__)
    unknown = set(params) - valid_params
    if "gamma" in unknown:
        raise ValueError("reward parameter 'gamma' is ambiguous: the wrong-answer value is 'wrong_reward', the "
                         "shaping discount is 'shaping_gamma'")
    if unknown:
        raise ValueError(f"unknown reward parameter(s) {sorted(unknown)}; valid: {sorted(valid_params)}")
    bound = RewardParams(**params)
    if isinstance(reward, str):
        return Reward(reward, get_reward(reward), bound, takes_params=True)
    if callable(reward):
        # Only required positional parameters count: `def r(inputs, scale=2.0)` is a one-argument reward.
        required = [p for p in inspect.signature(reward).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return Reward(getattr(reward, "__name__", "custom"), reward, bound, takes_params=len(required) >= 2)
    raise ValueError(f"reward must be a name ({', '.join(REWARDS)}) or a callable, got {type(reward).__name__}")
