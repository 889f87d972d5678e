"""PPO with TorchRL on a DynaLay vector env, with action masks: TorchRL's own pieces, as its users write them.

    python examples/torchrl_ppo.py --env-id DynaLay-Synthetic-v0 --total-frames 16384 --num-envs 32

How the env meets TorchRL:

* **The env.** ``GymWrapper(gym.make_vec(id, num_envs=N, autoreset_mode=AutoresetMode.DISABLED))``:
  DynaLay's natively batched vector env (one batched core), in the autoreset mode TorchRL prefers:
  TorchRL resets the finished slots itself, through ``reset(options={"reset_mask": ...})``.
* **Action masks.** ``info["action_mask"]`` (bool ``[N, K+1]``) is read into the tensordict by an
  info-dict reader; TorchRL's ``ActionMask`` transform puts it on the action spec, and the actor samples
  from a ``MaskedCategorical``, so a forbidden action (``mask_repeats=True``) is never taken.
* **Learning.** ``Collector``, ``GAE`` and ``ClipPPOLoss``, as in TorchRL's PPO tutorial.
* **Evaluation.** The greedy actor plays every example of ``val`` once through the project's
  evaluator (``agents.torch_policy``): accuracy and normalised compute (1.0 = full depth), the
  actor's own FLOPs per decision included.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import Binary, Composite, LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
from torchrl.envs import ActionMask, GymWrapper, TransformedEnv
from torchrl.envs.gym_like import default_info_dict_reader
from torchrl.modules import MaskedCategorical, ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

import dynalay_env  # noqa: F401  (registers the DynaLay env ids)
from agents.torch_policy import GreedyTorchPolicy, evaluate_greedy, report_evaluation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="DynaLay-Synthetic-v0")
    p.add_argument("--model", default=None, help="main-model checkpoint (default: the cached default model)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-frames", type=int, default=16384, help="env steps in all, over the vector's slots")
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--frames-per-batch", type=int, default=1024)
    p.add_argument("--minibatch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lambda-compute", type=float, default=0.05, help="the env's price of compute")
    p.add_argument("--results", default=None, help="write the evaluation as JSON to this path")
    return p.parse_args(argv)


def env_options(args: argparse.Namespace) -> dict[str, Any]:
    """The env options of training and evaluation (the same MDP)."""
    return {"lambda_compute": args.lambda_compute, "mask_repeats": True,
            **({"model": args.model} if args.model else {})}


def make_env(args: argparse.Namespace) -> TransformedEnv:
    """DynaLay's vector env under TorchRL: DISABLED autoreset, the action mask read from info."""
    venv = gym.make_vec(args.env_id, num_envs=args.num_envs, autoreset_mode=AutoresetMode.DISABLED,
                        **env_options(args))
    env = GymWrapper(venv, categorical_action_encoding=True, device="cpu")
    num_actions = int(venv.single_action_space.n)
    mask_spec = Composite(action_mask=Binary(n=num_actions, shape=(args.num_envs, num_actions), dtype=torch.bool),
                          shape=(args.num_envs,))
    env.set_info_dict_reader(default_info_dict_reader(["action_mask"], spec=mask_spec))
    env = TransformedEnv(env, ActionMask())
    env.set_seed(args.seed)
    return env


def build(obs_dim: int, num_actions: int, hidden: int) -> tuple[ProbabilisticActor, ValueOperator, nn.Module]:
    """The masked categorical actor, the critic, and the actor's logits network."""
    def mlp(out: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                             nn.Linear(hidden, out))

    logits = mlp(num_actions)
    actor = ProbabilisticActor(TensorDictModule(logits, in_keys=["observation"], out_keys=["logits"]),
                               in_keys={"logits": "logits", "mask": "action_mask"},
                               distribution_class=MaskedCategorical, return_log_prob=True)
    critic = ValueOperator(mlp(1), in_keys=["observation"])
    return actor, critic, logits


def train(args: argparse.Namespace) -> tuple[nn.Module, int, int]:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    env = make_env(args)
    obs_dim = env.observation_spec["observation"].shape[-1]
    num_actions = env.action_spec.space.n
    actor, critic, logits = build(obs_dim, num_actions, args.hidden)
    collector = Collector(env, actor, frames_per_batch=args.frames_per_batch, total_frames=args.total_frames,
                          auto_register_policy_transforms=False)
    buffer = ReplayBuffer(storage=LazyTensorStorage(args.frames_per_batch), sampler=SamplerWithoutReplacement(),
                          batch_size=args.minibatch)
    # Episodes last at most max_steps + 1 decisions: no discounting.
    advantage = GAE(gamma=1.0, lmbda=0.95, value_network=critic, average_gae=True)
    loss = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_coeff=0.01, critic_coeff=0.5)
    optimizer = torch.optim.Adam(loss.parameters(), lr=args.lr)
    start, frames = time.time(), 0
    for data in collector:
        frames += data.numel()
        for _ in range(args.epochs):
            with torch.no_grad():
                advantage(data)
            buffer.extend(data.reshape(-1))
            for _ in range(args.frames_per_batch // args.minibatch):
                out = loss(buffer.sample())
                total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
                optimizer.zero_grad()
                total.backward()
                nn.utils.clip_grad_norm_(loss.parameters(), 0.5)
                optimizer.step()
        done = data["next", "done"].squeeze(-1)
        reward = data["next", "reward"].squeeze(-1)
        print(f"frames {frames:>7}  episodes {int(done.sum()):>5}  mean reward/step {float(reward.mean()):+.3f}  "
              f"{frames / (time.time() - start):.0f} fps")
    collector.shutdown()
    env.close()
    return logits, obs_dim, num_actions


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)  # tiny networks: one thread is fastest
    logits, obs_dim, num_actions = train(args)
    policy = GreedyTorchPolicy(logits, obs_dim, num_actions)
    options = env_options(args)
    report = {**evaluate_greedy(policy, args.env_id, model=options.pop("model", None), **options), "args": vars(args)}
    return report_evaluation(report, args.results)


if __name__ == "__main__":
    main()
