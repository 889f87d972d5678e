"""Offline RL on DynaLay: a Minari dataset of oracle and random episodes, then TorchRL's discrete CQL.

    python examples/offline_cql.py --env-id DynaLay-Synthetic-v0 --episodes 2000 --updates 10000

1. **The dataset.** ``train_agent.py export`` records the episodes of any policies as a Minari
   dataset; here the same function (``agents.minari_export.export_dataset``) records the path oracle
   (the cheapest correct path of each example of ``agent_train``) and a random policy, ``--episodes``
   each. Each step keeps the observation, action, reward, termination and the env's info
   (``compute``, ``correct``, ``path``, ...). ``minari.load_dataset(id)`` reads it back.
2. **The learner.** The dataset goes into a TorchRL replay buffer in TorchRL's transition format
   (``observation``, ``action``, ``("next", "observation" | "reward" | "done" | "terminated")``);
   a ``QValueActor`` learns from it with ``DiscreteCQLLoss`` (conservative Q-learning: the Q-value
   loss plus a penalty on actions the data never took), no env step at all. (TorchRL's own
   ``MinariExperienceReplay(..., load_from_local_minari=True)`` would do the loading, but in
   torchrl 0.14.1 it stores the data with ``memmap_like``, which keeps the shapes and drops the
   values: every transition reads back as zeros. So the example reads the episodes with
   ``minari.load_dataset``.)
3. **Evaluation.** The greedy Q-policy plays every example of ``val`` once through the project's
   evaluator (``agents.torch_policy``): accuracy and normalised compute (1.0 = full depth), its own
   FLOPs per decision included.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.modules import QValueActor
from torchrl.objectives import DiscreteCQLLoss, SoftUpdate, ValueEstimators

import dynalay_env  # noqa: F401  (registers the DynaLay env ids)
from agents.minari_export import datasets_path, export_dataset
from agents.torch_policy import GreedyTorchPolicy, evaluate_greedy, report_evaluation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="DynaLay-Synthetic-v0")
    p.add_argument("--model", default=None, help="main-model checkpoint (default: the cached default model)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dataset-id", default="dynalay/synthetic/oracle-random-v0", help="Minari dataset id")
    p.add_argument("--minari-dir", default=None,
                   help="Minari datasets folder (default: Minari's own); the dataset is recorded there if missing")
    p.add_argument("--episodes", type=int, default=2000, help="episodes per policy when recording")
    p.add_argument("--random-exit", type=float, default=0.3, help="P(EXIT) of the random policy's episodes")
    p.add_argument("--updates", type=int, default=10000, help="gradient steps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lambda-compute", type=float, default=0.05, help="the env's price of compute")
    p.add_argument("--results", default=None, help="write the evaluation as JSON to this path")
    return p.parse_args(argv)


def record_if_missing(args: argparse.Namespace) -> None:
    """The oracle + random dataset, recorded on ``agent_train`` unless it exists already."""
    import minari

    with datasets_path(args.minari_dir):
        if args.dataset_id in minari.list_local_datasets():
            return
        export_dataset(args.dataset_id, ["oracle", f"random:{args.random_exit}"], args.episodes, args.env_id,
                       model=args.model, seed=args.seed, lambda_compute=args.lambda_compute)


def load_transitions(dataset_id: str) -> TensorDict:
    """Every transition of the Minari dataset ``dataset_id`` as one TensorDict ``[T]`` in TorchRL's
    format (the action mask of each state comes from its info)."""
    import minari

    steps = []
    for episode in minari.load_dataset(dataset_id).iterate_episodes():
        n = len(episode.actions)
        obs = torch.as_tensor(episode.observations, dtype=torch.float32)
        done = torch.as_tensor(episode.terminations | episode.truncations).unsqueeze(-1)
        steps.append(TensorDict({
            "observation": obs[:-1], "action": torch.as_tensor(episode.actions, dtype=torch.int64),
            "action_mask": torch.as_tensor(episode.infos["action_mask"][:-1]),
            "next": {"observation": obs[1:], "reward": torch.as_tensor(episode.rewards, dtype=torch.float32).unsqueeze(-1),
                     "done": done, "terminated": torch.as_tensor(episode.terminations).unsqueeze(-1)},
        }, batch_size=[n]))
    return torch.cat(steps)


def train(args: argparse.Namespace) -> tuple[nn.Module, int, int]:
    torch.manual_seed(args.seed)
    with datasets_path(args.minari_dir):
        transitions = load_transitions(args.dataset_id)
    data = ReplayBuffer(storage=LazyTensorStorage(transitions.numel()), batch_size=args.batch_size)
    data.extend(transitions)
    obs_dim = transitions["observation"].shape[-1]
    num_actions = transitions["action_mask"].shape[-1]
    print(f"dataset {args.dataset_id}: {len(data)} transitions, observation {obs_dim}, {num_actions} actions, "
          f"mean return per step {float(transitions['next', 'reward'].mean()):+.3f}")
    q_net = nn.Sequential(nn.Linear(obs_dim, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.hidden),
                          nn.ReLU(), nn.Linear(args.hidden, num_actions))
    actor = QValueActor(q_net, in_keys=["observation"], action_space="categorical")
    # Episodes last at most max_steps + 1 decisions: no discounting.
    loss = DiscreteCQLLoss(actor, action_space="categorical")
    loss.make_value_estimator(ValueEstimators.TD0, gamma=1.0)
    target = SoftUpdate(loss, tau=0.01)
    optimizer = torch.optim.Adam(loss.parameters(), lr=args.lr)
    start = time.time()
    for update in range(1, args.updates + 1):
        batch = data.sample()
        out = loss(batch)
        total = out["loss_qvalue"] + out["loss_cql"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        target.step()
        if update % max(1, args.updates // 5) == 0:
            print(f"update {update:>6}  q loss {out['loss_qvalue'].item():.4f}  cql loss "
                  f"{out['loss_cql'].item():.4f}  {update / (time.time() - start):.0f} updates/s")
    return q_net, obs_dim, num_actions


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)  # tiny networks: one thread is fastest
    if args.minari_dir:
        Path(args.minari_dir).mkdir(parents=True, exist_ok=True)
    record_if_missing(args)
    q_net, obs_dim, num_actions = train(args)
    policy = GreedyTorchPolicy(q_net, obs_dim, num_actions)
    report = {**evaluate_greedy(policy, args.env_id, model=args.model, lambda_compute=args.lambda_compute),
              "args": vars(args)}
    return report_evaluation(report, args.results)


if __name__ == "__main__":
    main()
