"""Env steps/s of the native vector env in each of Gymnasium's autoreset modes, side by side in one run.

For each N the same random actions (fixed seed) run through, in interleaved rounds (so that a busy
machine slows every face alike):

* ``NEXT_STEP`` / ``SAME_STEP`` -- ``gym.make_vec(id, num_envs=N, autoreset_mode=...)``;
* ``DISABLED`` -- the same, plus ``reset(options={"reset_mask": terminated})`` after every step that
  ended an episode (what its user must do; TorchRL does it);
* ``SB3 adapter`` -- ``agents.sb3_vec_env.DynaLayVecEnv`` (SB3's same-step reset, ``terminal_observation``);
* ``SyncVectorEnv`` -- Gymnasium's ``SyncVectorEnv`` of N single envs (NEXT_STEP), the yardstick the
  env's own modes cannot move.

It prints slot steps/s (N per call) and transitions/s: the slot steps that are an MDP transition.
With ``NEXT_STEP`` a slot's reset step is no transition (its action is ignored); in the other modes
and the SB3 adapter every slot step is one. Ratios are of transitions/s to ``NEXT_STEP``'s. The table
goes to ``benchmarks/results/autoreset_modes_cpu.txt``.

    python -m benchmarks autoreset_modes                        # default MNIST-1D model (cached), CPU
    python -m benchmarks autoreset_modes --sizes 16 256 1024 --steps 400 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import dynalay_env  # noqa: F401  (registers the ids)
from agents.sb3_vec_env import DynaLayVecEnv
from benchmarks import command_words
from dynalay_env.atomic import atomic_write_text
from dynalay_env.env import DynaLayEnv

RESULTS = Path(__file__).resolve().parent / "results" / "autoreset_modes_cpu.txt"


def actions_for(num_envs: int, num_actions: int, steps: int, seed: int = 0) -> np.ndarray:
    """``[steps, N]`` int64 random actions: EXIT with probability 0.3, else a uniform layer."""
    rng = np.random.default_rng(seed)
    layers = rng.integers(1, num_actions, size=(steps, num_envs))
    return np.where(rng.random((steps, num_envs)) < 0.3, 0, layers).astype(np.int64)


def gym_runner(env: Any, mode: AutoresetMode) -> Callable[[np.ndarray], int]:
    """Steps ``env`` through ``actions``; returns the number of transitions."""
    def run(actions: np.ndarray) -> int:
        env.reset(seed=0)
        transitions, pending = 0, np.zeros(actions.shape[1], dtype=bool)
        for a in actions:
            terminated = np.asarray(env.step(a)[2])
            if mode is AutoresetMode.NEXT_STEP:
                transitions += int((~pending).sum())  # a pending slot's step was its reset
                pending = terminated
            else:
                transitions += terminated.size
            if mode is AutoresetMode.DISABLED and terminated.any():
                env.reset(options={"reset_mask": terminated})
        return transitions
    return run


def sb3_runner(env: DynaLayVecEnv) -> Callable[[np.ndarray], int]:
    def run(actions: np.ndarray) -> int:
        env.seed(0)
        env.reset()
        for a in actions:
            env.step(a)
        return actions.size
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="DynaLay-MNIST1D-v0")
    p.add_argument("--model", default=None, help="main-model checkpoint (default: the cached default model)")
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 256])
    p.add_argument("--steps", type=int, default=200, help="vector steps per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each face is kept")
    p.add_argument("--sync-max", type=int, default=64, help="largest N for SyncVectorEnv (it is slow)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = {"model": args.model} if args.model else {}
    lines = [f"# {' '.join([*command_words('autoreset_modes'), *(argv or [])])}".rstrip(),
             f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
             f"load average {os.getloadavg()[0]:.1f} at start; best of {args.rounds} interleaved rounds of "
             f"{args.steps} steps",
             f"{'N':>6}  {'face':<14} {'steps/s':>10} {'transitions/s':>14}  {'vs NEXT_STEP':>12}"]
    dataset = dynalay_env.ENV_IDS[args.env_id]

    def single() -> DynaLayEnv:
        return DynaLayEnv(dataset=dataset, **options)

    for n in args.sizes:
        faces: dict[str, Callable[[np.ndarray], int]] = {}
        for mode in AutoresetMode:
            venv = gym.make_vec(args.env_id, num_envs=n, autoreset_mode=mode, **options)
            faces[mode.name] = gym_runner(venv, mode)
        faces["SB3 adapter"] = sb3_runner(DynaLayVecEnv(n, dataset=dataset, **options))
        if n <= args.sync_max:
            faces["SyncVectorEnv"] = gym_runner(SyncVectorEnv([single] * n), AutoresetMode.NEXT_STEP)
        num_actions = int(gym.make_vec(args.env_id, num_envs=1, **options).single_action_space.n)
        actions = actions_for(n, num_actions, args.steps)
        best = dict.fromkeys(faces, float("inf"))
        transitions = dict.fromkeys(faces, 0)
        for _ in range(args.rounds):
            for name, run in faces.items():
                start = time.perf_counter()
                transitions[name] = run(actions)
                best[name] = min(best[name], time.perf_counter() - start)
        base = transitions["NEXT_STEP"] / best["NEXT_STEP"]
        for name, seconds in best.items():
            rate = transitions[name] / seconds
            lines.append(f"{n:>6}  {name:<14} {n * args.steps / seconds:>10.0f} {rate:>14.0f}  {rate / base:>12.2f}")
    table = "\n".join(lines) + "\n"
    print(table, end="")
    atomic_write_text(args.out, table)
    return 0
