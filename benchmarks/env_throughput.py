"""Env steps/s of every face of the DynaLay env against the physical limit, side by side in one run.

For each N it runs the same random actions (fixed seed) through:

* ``single loop``   -- N ``DynaLayEnv`` stepped one after another in Python;
* ``SyncVectorEnv`` -- Gymnasium's ``SyncVectorEnv`` of N ``DynaLayEnv``;
* ``DynaLayVectorEnv`` -- the natively batched vector env;
* ``SB3 adapter``   -- ``agents.sb3_vec_env.DynaLayVecEnv``;
* ``raw limit``     -- the main-model work alone: the exact encoder / layer-solve / head calls the
  vector env made (same group sizes, same inputs, same kernels), replayed with no env logic.

and prints steps/s and the ratio of each to the raw limit. It then times PPO to a fixed number of
timesteps on the SB3 adapter against SB3's ``DummyVecEnv`` of single envs, both at ``n_envs=256``.

    python -m benchmarks env_throughput                       # default model (cached), CPU
    python -m benchmarks env_throughput --model runs/demo/main_model.pt --sizes 1 16 256 1024
    python -m benchmarks env_throughput --device cuda --sizes 16384 65536 --skip-slow
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import dynalay_env  # noqa: F401  (registers the ids)
from dynalay_env.env import DynaLayEnv, make_core
from dynalay_env.fpi import SolveResult
from dynalay_env.vector_env import DynaLayVectorEnv


class RecordingModel:
    """Wraps a main model and records every call the env makes (inputs cloned), for replay."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls: list[tuple[str, tuple]] = []
        self.recording = False
        for name in ("num_layers", "num_classes", "input_shape", "state_shape", "cost_table", "introspect"):
            setattr(self, name, getattr(model, name))

    def _log(self, name: str, *args: Any) -> None:
        if self.recording:
            self.calls.append((name, tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._log("encode", x)
        return self.model.encode(x)

    def apply_layer(self, k: int, z: torch.Tensor, x_emb: torch.Tensor) -> SolveResult:
        self._log("apply_layer", k, z, x_emb)
        return self.model.apply_layer(k, z, x_emb)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        self._log("classify", z)
        return self.model.classify(z)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def replay_seconds(model: Any, calls: list[tuple[str, tuple]], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for name, args in calls:
        getattr(model, name)(*args)
    sync(device)
    return time.perf_counter() - start


def run_steps(step: Callable[[np.ndarray], Any], num_envs: int, num_batches: int, seed: int,
              num_actions: int) -> float:
    """Seconds for ``num_batches`` batched steps of random actions."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, num_actions, size=(num_batches, num_envs))
    start = time.perf_counter()
    for t in range(num_batches):
        step(actions[t])
    return time.perf_counter() - start


def bench_size(n: int, options: dict[str, Any], model: Any, batches: int, seed: int, device: torch.device,
               single_budget_steps: int) -> dict[str, float]:
    results: dict[str, float] = {}
    num_actions = model.num_layers + 1

    # Natively batched vector env, recording the model calls for the raw limit.
    recorder = RecordingModel(model)
    core = make_core(n, model=recorder, **options)
    venv = DynaLayVectorEnv(n, core=core)
    venv.reset(seed=seed)
    run_steps(venv.step, n, 2, seed + 1, num_actions)  # warm-up
    recorder.recording = True
    seconds = run_steps(venv.step, n, batches, seed, num_actions)
    sync(device)
    recorder.recording = False
    results["DynaLayVectorEnv"] = n * batches / seconds
    results["raw limit"] = n * batches / replay_seconds(model, recorder.calls, device)
    recorder.calls.clear()

    from agents.sb3_vec_env import DynaLayVecEnv

    sb3 = DynaLayVecEnv(n, core=make_core(n, model=model, **options))
    sb3.seed(seed)
    sb3.reset()

    def sb3_step(actions: np.ndarray) -> None:
        sb3.step_async(actions)
        sb3.step_wait()

    results["SB3 adapter"] = n * batches / run_steps(sb3_step, n, batches, seed, num_actions)

    # Loops of single envs: same per-step cost whatever N, so cap the work at single_budget_steps.
    single_batches = max(1, min(batches, single_budget_steps // n))
    envs = [DynaLayEnv(core=make_core(1, model=model, **options)) for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=seed + i)

    def loop_step(actions: np.ndarray) -> None:
        for env, a in zip(envs, actions, strict=True):
            _, _, terminated, _, _ = env.step(int(a))
            if terminated:
                env.reset()

    results["single loop"] = n * single_batches / run_steps(loop_step, n, single_batches, seed, num_actions)
    sync_env = gym.vector.SyncVectorEnv([lambda env=env: env for env in envs])
    sync_env.reset(seed=seed)
    results["SyncVectorEnv"] = n * single_batches / run_steps(sync_env.step, n, single_batches, seed, num_actions)
    return results


def bench_ppo(options: dict[str, Any], model: Any, n_envs: int, timesteps: int, seed: int) -> dict[str, float]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.sb3_vec_env import DynaLayVecEnv

    out = {}
    for name, make in (
        ("SB3 adapter", lambda: DynaLayVecEnv(n_envs, core=make_core(n_envs, model=model, **options))),
        ("DummyVecEnv", lambda: DummyVecEnv([lambda: DynaLayEnv(core=make_core(1, model=model, **options))] * n_envs)),
    ):
        venv = make()
        agent = PPO("MlpPolicy", venv, n_steps=16, batch_size=1024, n_epochs=2, seed=seed, verbose=0,
                    device="cpu")
        start = time.perf_counter()
        agent.learn(total_timesteps=timesteps)
        out[name] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--model", default=None, help="checkpoint path (default: the cached default model)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 256, 1024])
    parser.add_argument("--env-steps", type=int, default=20000,
                        help="env steps per measurement for the batched faces (default: %(default)s)")
    parser.add_argument("--max-batches", type=int, default=500,
                        help="cap on batched steps per measurement, for small N (default: %(default)s)")
    parser.add_argument("--single-steps", type=int, default=2000,
                        help="env steps per measurement for the loops of single envs (default: %(default)s)")
    parser.add_argument("--ppo-timesteps", type=int, default=16384)
    parser.add_argument("--ppo-envs", type=int, default=256)
    parser.add_argument("--skip-slow", action="store_true", help="skip the single-env loops and PPO")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    options = {"dataset": args.dataset, "device": args.device}
    model = make_core(1, model=args.model, **options).model
    device = torch.device(args.device)
    print(f"# DynaLay env throughput | {platform.processor() or platform.machine()} | torch {torch.__version__} "
          f"| threads {torch.get_num_threads()} | device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    print(f"{'N':>6} | {'face':<17} | {'env steps/s':>12} | {'vs raw limit':>12} | {'vs single loop':>14}")
    table = {}
    for n in args.sizes:
        batches = min(args.max_batches, max(2, args.env_steps // n))
        if args.skip_slow:
            recorder = RecordingModel(model)
            venv = DynaLayVectorEnv(n, core=make_core(n, model=recorder, **options))
            venv.reset(seed=args.seed)
            run_steps(venv.step, n, 2, args.seed + 1, model.num_layers + 1)
            recorder.recording = True
            seconds = run_steps(venv.step, n, batches, args.seed, model.num_layers + 1)
            sync(device)
            recorder.recording = False
            res = {"DynaLayVectorEnv": n * batches / seconds,
                   "raw limit": n * batches / replay_seconds(model, recorder.calls, device)}
        else:
            res = bench_size(n, options, model, batches, args.seed, device, args.single_steps)
        table[n] = res
        for face in ("single loop", "SyncVectorEnv", "DynaLayVectorEnv", "SB3 adapter", "raw limit"):
            if face in res:
                vs_single = f"{res[face] / res['single loop']:.1f}x" if "single loop" in res else "-"
                print(f"{n:>6} | {face:<17} | {res[face]:>12,.0f} | {res[face] / res['raw limit']:>11.0%} | "
                      f"{vs_single:>14}")
    ppo = None
    if not args.skip_slow:
        ppo = bench_ppo(options, model, args.ppo_envs, args.ppo_timesteps, args.seed)
        print(f"\nPPO to {args.ppo_timesteps} timesteps at n_envs={args.ppo_envs}: SB3 adapter "
              f"{ppo['SB3 adapter']:.1f} s, DummyVecEnv of single envs {ppo['DummyVecEnv']:.1f} s "
              f"-> {ppo['DummyVecEnv'] / ppo['SB3 adapter']:.1f}x faster")
    if args.json:
        from dynalay_env.atomic import atomic_write_json

        atomic_write_json(args.json, {"sizes": table, "ppo_seconds": ppo, "device": args.device,
                                      "torch_threads": torch.get_num_threads(),
                                      "ppo": {"timesteps": args.ppo_timesteps, "n_envs": args.ppo_envs}})
