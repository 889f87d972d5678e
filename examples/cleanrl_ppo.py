"""PPO with action masks on a DynaLay vector env, in one file: torch and gymnasium only.

A CleanRL-style teaching example (after CleanRL's ``ppo.py``): the whole algorithm is here, with no
RL framework in between. It learns when to apply which fixed-point layer and when to EXIT.

    python examples/cleanrl_ppo.py --env-id DynaLay-Synthetic-v0 --total-timesteps 8192 --num-envs 32

What DynaLay adds to plain PPO:

* **Action masks.** With ``mask_repeats=True`` the env forbids re-applying the layer just applied.
  The mask of the next decision comes in ``info["action_mask"]`` (bool ``[num_envs, K+1]``); masked
  actions get a logit of -1e8, so the policy never samples them and their probability is 0 in the loss.
* **Next-step autoreset.** ``DynaLayVectorEnv`` uses Gymnasium 1.x's ``AutoresetMode.NEXT_STEP``: the
  step *after* a terminal step ignores its action and returns the first observation of a new episode
  (reward 0). That transition is not a learning sample: it is masked out of the loss (``valid``) and,
  because the terminal step before it cuts the bootstrap (``done``), it never leaks into GAE.
* **Compute.** At the end the greedy policy plays every example of ``val`` once and reports accuracy
  and normalised compute (1.0 = the full-depth model), including its own decision FLOPs (measured
  with ``torch.utils.flop_counter``), as the project's evaluations do.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn
from torch.distributions import Categorical
from torch.utils.flop_counter import FlopCounterMode

import dynalay_env  # noqa: F401  (registers the DynaLay env ids)


@dataclass
class Args:
    env_id: str = "DynaLay-Synthetic-v0"
    """a registered DynaLay env id"""
    model: str | None = None
    """main-model checkpoint (None: the cached default model of the env's dataset)"""
    seed: int = 1
    total_timesteps: int = 8192
    """env steps in all, summed over the vector's slots"""
    num_envs: int = 32
    num_steps: int = 32
    """steps per slot per rollout (a rollout is num_envs x num_steps samples)"""
    learning_rate: float = 1e-3
    anneal_lr: bool = True
    gamma: float = 1.0
    """episodes are at most max_steps + 1 decisions long: no discounting needed"""
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 10
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    lambda_compute: float = 0.05
    """the env's price of compute in the reward"""
    mask_repeats: bool = True
    """forbid re-applying the layer just applied (an action mask)"""
    eval_envs: int = 256
    tensorboard: str | None = None
    """folder for TensorBoard logs (None: no logging)"""
    results: str | None = None
    """write the final evaluation as JSON to this path"""


def parse_args(argv: list[str] | None = None) -> Args:
    """Command-line flags from the fields of :class:`Args` (``--total-timesteps 8192``, ``--no-anneal-lr``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=f.default)
    return Args(**vars(parser.parse_args(argv)))


def layer_init(layer: nn.Linear, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class Agent(nn.Module):
    """Separate actor and critic MLPs (tanh), as in CleanRL's ppo.py."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden, 1), std=1.0))
        self.actor = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden, num_actions), std=0.01))

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).flatten()

    def distribution(self, obs: torch.Tensor, mask: torch.Tensor) -> Categorical:
        """The policy at ``obs [B, obs_dim]``; ``mask [B, K+1]`` bool, False = forbidden."""
        logits = self.actor(obs).masked_fill(~mask, -1e8)
        return Categorical(logits=logits)

    def get_action_and_value(self, obs: torch.Tensor, mask: torch.Tensor, action: torch.Tensor | None = None):
        dist = self.distribution(obs, mask)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.get_value(obs)


def minibatches(n: int, minibatch_size: int) -> list[torch.Tensor]:
    """A random split of sample indices ``0..n-1`` into ``round(n / minibatch_size)`` minibatches of
    nearly equal size (at least 2 samples each, or none when ``n < 2``).

    The number of valid samples ``n`` varies by rollout (reset steps are dropped), so fixed-size
    slices can leave a last minibatch of one sample, whose advantage std is NaN."""
    if n < 2:
        return []
    count = max(1, min(n // 2, round(n / minibatch_size)))
    return list(torch.tensor_split(torch.randperm(n), count))


def make_envs(args: Args, num_envs: int, **options: Any) -> gym.vector.VectorEnv:
    """The natively batched vector env (the registered vector_entry_point: one batched core)."""
    model = {"model": args.model} if args.model else {}
    return gym.make_vec(args.env_id, num_envs=num_envs, lambda_compute=args.lambda_compute,
                        mask_repeats=args.mask_repeats, **model, **options)


def train(args: Args) -> Agent:
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = max(1, args.total_timesteps // batch_size)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.tensorboard)

    envs = make_envs(args, args.num_envs)
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        raise ValueError(f"this PPO handles NEXT_STEP and SAME_STEP autoreset, the env uses {mode}")
    obs_dim = envs.single_observation_space.shape[0]
    num_actions = int(envs.single_action_space.n)
    agent = Agent(obs_dim, num_actions, args.hidden)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # Rollout storage, [num_steps, num_envs, ...].
    obs = torch.zeros(args.num_steps, args.num_envs, obs_dim)
    masks = torch.zeros(args.num_steps, args.num_envs, num_actions, dtype=torch.bool)
    actions = torch.zeros(args.num_steps, args.num_envs, dtype=torch.long)
    logprobs = torch.zeros(args.num_steps, args.num_envs)
    rewards = torch.zeros(args.num_steps, args.num_envs)
    dones = torch.zeros(args.num_steps, args.num_envs)
    values = torch.zeros(args.num_steps, args.num_envs)
    valid = torch.zeros(args.num_steps, args.num_envs, dtype=torch.bool)

    next_obs_np, info = envs.reset(seed=args.seed)
    next_obs = torch.as_tensor(next_obs_np)
    next_mask = torch.as_tensor(info["action_mask"])
    # NEXT_STEP: a slot whose episode just ended is reset by the next step, which is no sample.
    next_autoreset = torch.zeros(args.num_envs, dtype=torch.bool)
    episode_return = np.zeros(args.num_envs)
    global_step, start = 0, time.time()
    for iteration in range(1, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate
        finished: list[tuple[float, bool, float]] = []  # (return, correct, compute) of ended episodes
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step], masks[step] = next_obs, next_mask
            valid[step] = ~next_autoreset
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs, next_mask)
            actions[step], logprobs[step], values[step] = action, logprob, value

            next_obs_np, reward, terminated, truncated, info = envs.step(action.numpy())
            done = np.logical_or(terminated, truncated)
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
            dones[step] = torch.as_tensor(done, dtype=torch.float32)
            next_obs = torch.as_tensor(next_obs_np)
            next_mask = torch.as_tensor(info["action_mask"])
            next_autoreset = torch.as_tensor(done) if mode == AutoresetMode.NEXT_STEP else torch.zeros_like(valid[0])

            episode_return += reward
            for i in np.flatnonzero(done):
                finished.append((float(episode_return[i]), bool(info["correct"][i]), float(info["compute"][i])))
                episode_return[i] = 0.0

        # GAE. A terminal step has done = 1, which cuts both its bootstrap and the chain of
        # advantages behind it, so the reset step that follows (invalid) never reaches a valid one.
        with torch.no_grad():
            next_value = agent.get_value(next_obs)
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(args.num_envs)
            for t in reversed(range(args.num_steps)):
                next_nonterminal = 1.0 - dones[t]
                next_values = next_value if t == args.num_steps - 1 else values[t + 1]
                delta = rewards[t] + args.gamma * next_values * next_nonterminal - values[t]
                lastgaelam = delta + args.gamma * args.gae_lambda * next_nonterminal * lastgaelam
                advantages[t] = lastgaelam
            returns = advantages + values

        # Flatten, keeping only the valid samples (the reset steps of NEXT_STEP autoreset are dropped).
        keep = valid.reshape(-1)
        b_obs, b_masks = obs.reshape(-1, obs_dim)[keep], masks.reshape(-1, num_actions)[keep]
        b_actions, b_logprobs = actions.reshape(-1)[keep], logprobs.reshape(-1)[keep]
        b_advantages, b_returns = advantages.reshape(-1)[keep], returns.reshape(-1)[keep]
        n = b_obs.shape[0]
        for _ in range(args.update_epochs):
            for mb in minibatches(n, minibatch_size):
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_masks[mb], b_actions[mb])
                ratio = (newlogprob - b_logprobs[mb]).exp()
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)).mean()
                v_loss = 0.5 * ((newvalue - b_returns[mb]) ** 2).mean()
                loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

        if finished:
            ret, correct, compute = (float(np.mean(col)) for col in zip(*finished, strict=True))
            print(f"step {global_step:>7}  episodes {len(finished):>5}  return {ret:+.3f}  accuracy {correct:.3f}  "
                  f"compute {compute:.3f}  valid samples {n}/{keep.numel()}  {global_step / (time.time() - start):.0f} sps")
            if writer is not None:
                writer.add_scalar("charts/episodic_return", ret, global_step)
                writer.add_scalar("charts/accuracy", correct, global_step)
                writer.add_scalar("charts/compute", compute, global_step)
                writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
                writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
    envs.close()
    if writer is not None:
        writer.close()
    return agent


def decision_flops(agent: Agent, obs_dim: int, num_actions: int) -> float:
    """FLOPs of one greedy decision (the actor's forward pass), per observation."""
    batch = 64
    with FlopCounterMode(display=False) as counter:
        agent.distribution(torch.zeros(batch, obs_dim), torch.ones(batch, num_actions, dtype=torch.bool))
    return counter.get_total_flops() / batch


@torch.no_grad()
def evaluate(agent: Agent, args: Args, split: str = "val") -> dict[str, float]:
    """Play the greedy policy on every example of ``split`` once; accuracy and mean compute."""
    envs = make_envs(args, args.eval_envs, split=split, sample_mode="sequential")
    # DynaLay's vector env answers get_attr from its batched core: the split's size, and the FLOPs
    # of normalised compute 1.0 (to add the policy's own FLOPs to the env's compute).
    num_examples = int(envs.get_attr("num_examples")[0])
    normalizer = float(envs.get_attr("normalizer")[0])
    per_decision = decision_flops(agent, envs.single_observation_space.shape[0], int(envs.single_action_space.n))
    obs, info = envs.reset(seed=0)  # "sequential": slots take the split's examples in order
    mask = info["action_mask"]
    autoreset = np.zeros(args.eval_envs, dtype=bool)
    decisions = np.zeros(args.eval_envs, dtype=np.int64)
    results: dict[int, tuple[bool, float]] = {}
    while len(results) < num_examples:
        dist = agent.distribution(torch.as_tensor(obs), torch.as_tensor(mask))
        action = dist.probs.argmax(1).numpy()
        decisions += ~autoreset  # NEXT_STEP autoreset: a slot's reset step is no decision
        obs, _, terminated, truncated, info = envs.step(action)
        mask = info["action_mask"]
        autoreset = np.logical_or(terminated, truncated)
        for i in np.flatnonzero(autoreset):
            # The second pass over the split replays the first exactly (frozen env, greedy policy).
            compute = float(info["compute"][i]) + decisions[i] * per_decision / normalizer
            results.setdefault(int(info["example"][i]), (bool(info["correct"][i]), compute))
            decisions[i] = 0
    envs.close()
    correct, compute = zip(*results.values(), strict=True)
    return {"split": split, "episodes": len(results), "accuracy": float(np.mean(correct)),
            "mean_compute": float(np.mean(compute)), "decision_flops": per_decision}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)  # tiny networks: one thread is fastest
    agent = train(args)
    report = {**evaluate(agent, args), "args": dataclasses.asdict(args)}
    print(f"eval on {report['split']} ({report['episodes']} examples): accuracy {report['accuracy']:.4f}, "
          f"mean compute {report['mean_compute']:.4f} (1.0 = full depth; {report['decision_flops']:.0f} "
          f"FLOPs per decision included)")
    if args.results:
        from dynalay_env.atomic import atomic_write_json  # write-then-rename: never a half-written file

        atomic_write_json(args.results, report)
    return report


if __name__ == "__main__":
    main()
