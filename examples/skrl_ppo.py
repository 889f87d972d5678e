"""PPO with skrl on a DynaLay env, single or vector: skrl's own wrapper, models, memory, agent and trainer.

    python examples/skrl_ppo.py --env-id DynaLay-Synthetic-v0 --timesteps 512 --num-envs 32   # vector
    python examples/skrl_ppo.py --env-id DynaLay-Synthetic-v0 --timesteps 2048 --num-envs 1   # single env

How the env meets skrl:

* **The env.** ``--num-envs 1``: ``gym.make(id)``, one episode at a time. More: DynaLay's natively
  batched vector env, ``gym.make_vec(id, num_envs=N, autoreset_mode=AutoresetMode.SAME_STEP)``:
  skrl's wrapper treats a vector env as one that resets its finished slots by itself and goes on
  from the observation it returned, which is what ``SAME_STEP`` returns (the new episode's first
  observation). ``wrap_env`` turns either into skrl's torch interface.
* **No action masks.** skrl's categorical model has no mask input, so the env runs without
  ``mask_repeats``; the policy learns when repeating a layer is worth its compute.
* **Evaluation.** The greedy policy plays every example of ``val`` once through the project's
  evaluator (``agents.torch_policy``): accuracy and normalised compute (1.0 = full depth), the
  policy's own FLOPs per decision included.

``--timesteps`` counts trainer steps: each one steps every slot of the vector once.
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode
from skrl.agents.torch.ppo import PPO, PPO_CFG
from skrl.envs.wrappers.torch import wrap_env
from skrl.memories.torch import RandomMemory
from skrl.models.torch import CategoricalMixin, DeterministicMixin, Model
from skrl.trainers.torch import SequentialTrainer
from skrl.utils import set_seed
from torch import nn

import dynalay_env  # noqa: F401  (registers the DynaLay env ids)
from agents.torch_policy import GreedyTorchPolicy, evaluate_greedy, report_evaluation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="DynaLay-Synthetic-v0")
    p.add_argument("--model", default=None, help="main-model checkpoint (default: the cached default model)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timesteps", type=int, default=512, help="trainer steps (each steps every slot once)")
    p.add_argument("--num-envs", type=int, default=32, help="1: the single env; more: the vector env")
    p.add_argument("--rollouts", type=int, default=32, help="steps per slot between updates")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lambda-compute", type=float, default=0.05, help="the env's price of compute")
    p.add_argument("--results", default=None, help="write the evaluation as JSON to this path")
    return p.parse_args(argv)


def mlp(inputs: int, outputs: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, outputs))


class Policy(CategoricalMixin, Model):
    """skrl's categorical policy over the env's K+1 actions: logits from an MLP."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, device: str, hidden: int) -> None:
        Model.__init__(self, observation_space=observation_space, action_space=action_space, device=device)
        CategoricalMixin.__init__(self, unnormalized_log_prob=True)
        self.net = mlp(self.num_observations, int(action_space.n), hidden)

    def compute(self, inputs: dict[str, Any], role: str = "") -> tuple[torch.Tensor, dict[str, Any]]:
        return self.net(inputs["observations"]), {}


class Value(DeterministicMixin, Model):
    """skrl's deterministic state-value model."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, device: str, hidden: int) -> None:
        Model.__init__(self, observation_space=observation_space, action_space=action_space, device=device)
        DeterministicMixin.__init__(self)
        self.net = mlp(self.num_observations, 1, hidden)

    def compute(self, inputs: dict[str, Any], role: str = "") -> tuple[torch.Tensor, dict[str, Any]]:
        return self.net(inputs["observations"]), {}


def make_env(args: argparse.Namespace) -> Any:
    options = {"lambda_compute": args.lambda_compute, **({"model": args.model} if args.model else {})}
    if args.num_envs == 1:
        return wrap_env(gym.make(args.env_id, **options), wrapper="gymnasium")
    venv = gym.make_vec(args.env_id, num_envs=args.num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **options)
    return wrap_env(venv, wrapper="gymnasium")


def train(args: argparse.Namespace) -> Policy:
    set_seed(args.seed)
    env = make_env(args)
    device = "cpu"
    models = {"policy": Policy(env.observation_space, env.action_space, device, args.hidden),
              "value": Value(env.observation_space, env.action_space, device, args.hidden)}
    memory = RandomMemory(memory_size=args.rollouts, num_envs=env.num_envs, device=device)
    # Episodes last at most max_steps + 1 decisions: no discounting.
    cfg = PPO_CFG(rollouts=args.rollouts, learning_epochs=8, mini_batches=4, discount_factor=1.0, gae_lambda=0.95,
                  learning_rate=1e-3, entropy_loss_scale=0.01, value_loss_scale=0.5)
    agent = PPO(models=models, memory=memory, observation_space=env.observation_space,
                action_space=env.action_space, device=device, cfg=cfg)
    trainer = SequentialTrainer(env=env, agents=agent, cfg={"timesteps": args.timesteps, "headless": True,
                                                           "disable_progressbar": True})
    trainer.train()
    return models["policy"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)  # tiny networks: one thread is fastest
    policy = train(args)
    greedy = GreedyTorchPolicy(policy.net, policy.num_observations, int(policy.action_space.n))
    report = {**evaluate_greedy(greedy, args.env_id, model=args.model, lambda_compute=args.lambda_compute),
              "args": vars(args)}
    return report_evaluation(report, args.results)


if __name__ == "__main__":
    main()
