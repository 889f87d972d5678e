"""Env steps/s of every face of the DynaLay env against the physical limit, side by side in one run.

For each N it runs the same random actions (fixed seed) through:

* ``single loop``   -- N ``DynaLayEnv`` stepped one after another in Python;
* ``SyncVectorEnv`` -- Gymnasium's ``SyncVectorEnv`` of N ``DynaLayEnv``;
* ``DynaLayVectorEnv`` -- the natively batched vector env;
* ``SB3 adapter``   -- ``agents.sb3_vec_env.DynaLayVecEnv``;
* ``raw limit``     -- the main-model work alone: the exact encoder / layer-solve / head calls the
  vector env made (same group sizes, same inputs, same kernels), replayed with no env logic;
* ``fresh raw``     -- the same inputs, regrouped into full batches of N rows per call (encoder,
  each layer, head), timed in a FRESH Python process at torch's default settings: none of this
  package's cache settings (its environment variables are removed before torch loads, and before
  the first convolution) and no row bucketing. A setting that slows the env and the in-process
  raw limit together cannot move this yardstick.

and prints steps/s, the ratio of each to the raw limit, to the single-env loop and, for the vector
env, to the fresh raw limit. ``padded`` is the share of the vector env's model FLOPs spent on the
padding rows of bucketed row counts (:mod:`dynalay_env.buckets`; never charged to episodes). It
then times PPO to a fixed number of timesteps on the SB3 adapter against SB3's ``DummyVecEnv`` of
single envs, both at ``n_envs=256``.

    python -m benchmarks env_throughput                       # default model (cached), CPU
    python -m benchmarks env_throughput --model runs/demo/main_model.pt --sizes 1 16 256 1024
    python -m benchmarks env_throughput --device cuda --sizes 16384 65536 --skip-slow
    OMP_NUM_THREADS=2 python -m benchmarks env_throughput --sizes 256 1024 \
        --json benchmarks/results/env_throughput_cpu.json --markdown benchmarks/results/env_throughput_cpu.md
    OMP_NUM_THREADS=2 python -m benchmarks env_throughput --sizes 256 1024 --repeats 5   # medians and ratio ranges
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

import dynalay_env  # noqa: F401  (registers the ids)
from agents.sb3_vec_env import DynaLayVecEnv
from dynalay_env import buckets
from dynalay_env.atomic import atomic_write_json, atomic_write_text
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


#: The environment variables through which ``dynalay_env`` (or a user) configures torch's caches;
#: the fresh-process yardstick runs without them, at torch's defaults.
CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")

#: The fresh process. torch is imported before dynalay_env (torch reads LRU_CACHE_CAPACITY when it
#: loads; the parent has removed it), and the variables dynalay_env sets on import are removed again
#: before the first convolution (oneDNN reads its cache size when it first runs). Row bucketing is
#: off: every call runs on exactly N rows, the full batch.
FRESH_RAW_CHILD = r"""
import json, os, sys, time
names = {names!r}
leaked = [n for n in names if n in os.environ]
import torch
torch.set_num_threads({threads})
from dynalay_env import buckets
from dynalay_env.model import MainModel, ModelConfig
for n in names:
    os.environ.pop(n, None)
buckets.set_bucket_ratio(1.0)
work = torch.load(sys.argv[1], weights_only=False)
model = MainModel(ModelConfig.from_dict(work["config"]))
model.load_state_dict(work["state"])
model.eval()
n = work["n"]

def chunks(*rows):
    total = rows[0].shape[0]
    idx = torch.arange(-(-total // n) * n) % total  # full batches: the last one wraps to the start
    return [tuple(r.index_select(0, idx[i:i + n]) for r in rows) for i in range(0, idx.numel(), n)], total

calls = [("encode", lambda x: model.encode(x), chunks(work["encode"]))]
calls += [(f"layer{{k + 1}}", (lambda k: lambda z, e: model.apply_layer(k, z, e))(k), chunks(z, e))
          for k, (z, e) in sorted(work["layers"].items())]
calls += [("classify", lambda z: model.classify(z), chunks(work["classify"]))]
seconds = {{}}
with torch.no_grad():
    for name, fn, (batches, total) in calls:
        fn(*batches[0])  # warm-up
        times = []
        for _ in range({repeats}):
            start = time.perf_counter()
            for b in batches:
                fn(*b)
            times.append(time.perf_counter() - start)
        times.sort()
        seconds[name] = times[len(times) // 2] * total / (len(batches) * n)  # median, real rows only
print(json.dumps({{"seconds": seconds, "leaked": leaked, "threads": torch.get_num_threads(),
                  "torch": torch.__version__}}))
"""


def fresh_raw(model: Any, calls: list[tuple[str, tuple]], n: int, env_steps: int,
              repeats: int = 3) -> dict[str, Any]:
    """Time the work of ``calls`` (recorded by :class:`RecordingModel`) in full batches of ``n`` rows
    in a fresh process at torch's default settings (see :data:`FRESH_RAW_CHILD`). Returns
    ``steps_per_s`` (``env_steps`` / the total seconds) and the seconds of each kind of call."""
    if not hasattr(model, "config"):
        raise TypeError("the fresh-process raw limit rebuilds a MainModel from its config; "
                        f"got a {type(model).__name__}")
    work: dict[str, Any] = {"config": model.config.to_dict(), "state": model.state_dict(), "n": n, "layers": {}}
    parts: dict[str, list[torch.Tensor]] = {"encode": [], "classify": []}
    layers: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for name, args in calls:
        if name == "apply_layer":
            layers.setdefault(args[0], []).append((args[1].cpu(), args[2].cpu()))
        else:
            parts[name].append(args[0].cpu())
    work["encode"] = torch.cat(parts["encode"]) if parts["encode"] else torch.zeros(0)
    work["classify"] = torch.cat(parts["classify"])
    work["layers"] = {k: (torch.cat([z for z, _ in v]), torch.cat([e for _, e in v])) for k, v in layers.items()}
    if work["encode"].shape[0] == 0:
        work["encode"] = None
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES}
    code = FRESH_RAW_CHILD.format(names=CACHE_VARIABLES, threads=torch.get_num_threads(), repeats=repeats)
    if work["encode"] is None:
        code = code.replace('calls = [("encode", lambda x: model.encode(x), chunks(work["encode"]))]', "calls = []")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "work.pt")
        torch.save(work, path)
        out = subprocess.run([sys.executable, "-c", code, path], env=env, capture_output=True, text=True,
                             check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the fresh-process raw limit failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["leaked"]:
        raise RuntimeError(f"cache variables reached the fresh process: {result['leaked']}")
    result["steps_per_s"] = env_steps / sum(result["seconds"].values())
    return result


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
    results.update(vector_env_and_limits(venv, recorder, model, n, batches, seed, device))

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


def vector_env_and_limits(venv: DynaLayVectorEnv, recorder: RecordingModel, model: Any, n: int, batches: int,
                          seed: int, device: torch.device, warmup: int = 20) -> dict[str, float]:
    """Steps/s of ``venv`` (whose core's model is ``recorder``) on random actions, the in-process
    raw limit (its recorded calls replayed), the fresh-process raw limit (CPU only) and the share
    of model FLOPs spent on padding rows."""
    num_actions = model.num_layers + 1
    venv.reset(seed=seed)
    run_steps(venv.step, n, warmup, seed + 1, num_actions)  # warm-up: the bucketed shapes compile here
    buckets.reset_padding_stats()
    recorder.recording = True
    seconds = run_steps(venv.step, n, batches, seed, num_actions)
    sync(device)
    recorder.recording = False
    stats = buckets.padding_stats()
    out = {"DynaLayVectorEnv": n * batches / seconds,
           "raw limit": n * batches / replay_seconds(model, recorder.calls, device),
           "padded share": stats.padded_share}
    if device.type == "cpu":
        out["fresh raw"] = fresh_raw(model, recorder.calls, n, n * batches)["steps_per_s"]
    recorder.calls.clear()
    return out


FACES = ("single loop", "SyncVectorEnv", "DynaLayVectorEnv", "SB3 adapter", "raw limit", "fresh raw")


def summarize_repeats(repeats: list[dict[str, float]]) -> dict[str, Any]:
    """One N's figures over repeated measurements: each face's median (steps/s) and, with more than
    one repeat and a single-env loop, ``ratio_range`` (the smallest and largest vector / single ratio,
    each taken within one repeat, side by side) and ``repeats`` (every measurement)."""
    if len(repeats) == 1:
        return dict(repeats[0])
    out: dict[str, Any] = {key: float(np.median([r[key] for r in repeats])) for key in repeats[0]}
    if "single loop" in repeats[0]:
        ratios = [r["DynaLayVectorEnv"] / r["single loop"] for r in repeats]
        out["ratio_median"] = float(np.median(ratios))
        out["ratio_range"] = [min(ratios), max(ratios)]
    out["repeats"] = repeats
    return out


def render_markdown(data: dict[str, Any]) -> str:
    """The results of :func:`main` as a Markdown table (env steps/s and the ratios)."""
    lines = [f"{data['machine']}; `uptime` before the run: {data['load_before']}; after: {data['load_after']}.",
             "",
             "| N | single-env loop | SyncVectorEnv | DynaLayVectorEnv | SB3 adapter | raw limit (in process) | "
             "fresh raw (torch defaults) | vector / single | vector / fresh raw | padded FLOPs |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, res in data["sizes"].items():
        cells = [f"{res[face]:,.0f}" if face in res else "" for face in FACES]
        single = f"{res['DynaLayVectorEnv'] / res['single loop']:.1f}x" if "single loop" in res else ""
        if "ratio_range" in res:  # repeated: the median of the per-repeat ratios, and their range
            low, high = res["ratio_range"]
            single = f"{res['ratio_median']:.1f}x ({low:.1f}-{high:.1f}x over {len(res['repeats'])} runs)"
        fresh = f"{res['DynaLayVectorEnv'] / res['fresh raw']:.0%}" if "fresh raw" in res else ""
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {single} | {fresh} | {res['padded share']:.1%} |")
    repeated = " (each face's median over the repeats)" if data.get("repeats", 1) > 1 else ""
    lines += ["", f"Env steps/s{repeated}. The fresh raw limit runs the vector env's model work in full batches of "
              "N rows in a fresh process at torch's default settings; padded FLOPs are the vector env's padding rows "
              f"(bucket ratio {data['bucket_ratio']}), never charged to episodes."]
    ppo = data.get("ppo_seconds")
    if ppo:
        args = data.get("ppo", {})
        lines[-1] += (f" PPO to {args.get('timesteps', '?')} timesteps at `n_envs={args.get('n_envs', '?')}`: "
                      f"{ppo['SB3 adapter']:.1f} s on the SB3 adapter against {ppo['DummyVecEnv']:.1f} s on SB3's "
                      f"`DummyVecEnv` of single envs ({ppo['DummyVecEnv'] / ppo['SB3 adapter']:.1f}x).")
    return "\n".join(lines) + "\n"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (``uptime``'s figures)."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def bench_ppo(options: dict[str, Any], model: Any, n_envs: int, timesteps: int, seed: int) -> dict[str, float]:
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
    parser.add_argument("--markdown", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure every N this many times in a row; the table gives each face's median and "
                             "the range of the per-repeat vector / single ratios (default: %(default)s)")
    parser.add_argument("--bucket-ratio", type=float, default=None,
                        help="row-count bucket ratio (dynalay_env.buckets; 1.0 = no padding; default: the package's)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be an integer >= 1, got {args.repeats}")

    if args.bucket_ratio is not None:
        buckets.set_bucket_ratio(args.bucket_ratio)
    options = {"dataset": args.dataset, "device": args.device}
    model = make_core(1, model=args.model, **options).model
    device = torch.device(args.device)
    print(f"# DynaLay env throughput | {platform.processor() or platform.machine()} | torch {torch.__version__} "
          f"| threads {torch.get_num_threads()} | device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    load_before = load_average()
    print(f"# load average before: {load_before} | bucket ratio {buckets.bucket_ratio()}")
    print(f"{'N':>6} | {'face':<17} | {'env steps/s':>12} | {'vs raw limit':>12} | {'vs single loop':>14} | "
          f"{'vs fresh raw':>12}")
    table = {}
    for n in args.sizes:
        batches = min(args.max_batches, max(2, args.env_steps // n))
        repeats = []
        for _ in range(args.repeats):
            if args.skip_slow:
                recorder = RecordingModel(model)
                venv = DynaLayVectorEnv(n, core=make_core(n, model=recorder, **options))
                repeats.append(vector_env_and_limits(venv, recorder, model, n, batches, args.seed, device))
            else:
                repeats.append(bench_size(n, options, model, batches, args.seed, device, args.single_steps))
        res = summarize_repeats(repeats)
        table[n] = res
        for face in FACES:
            if face in res:
                vs_single = f"{res[face] / res['single loop']:.1f}x" if "single loop" in res else "-"
                vs_fresh = f"{res[face] / res['fresh raw']:.0%}" if "fresh raw" in res else "-"
                print(f"{n:>6} | {face:<17} | {res[face]:>12,.0f} | {res[face] / res['raw limit']:>11.0%} | "
                      f"{vs_single:>14} | {vs_fresh:>12}", flush=True)
        print(f"{n:>6} | padded FLOPs of the vector env: {res['padded share']:.1%}", flush=True)
    ppo = None
    if not args.skip_slow:
        ppo = bench_ppo(options, model, args.ppo_envs, args.ppo_timesteps, args.seed)
        print(f"\nPPO to {args.ppo_timesteps} timesteps at n_envs={args.ppo_envs}: SB3 adapter "
              f"{ppo['SB3 adapter']:.1f} s, DummyVecEnv of single envs {ppo['DummyVecEnv']:.1f} s "
              f"-> {ppo['DummyVecEnv'] / ppo['SB3 adapter']:.1f}x faster")
    data = {"sizes": table, "ppo_seconds": ppo, "device": args.device, "torch_threads": torch.get_num_threads(),
            "ppo": {"timesteps": args.ppo_timesteps, "n_envs": args.ppo_envs}, "repeats": args.repeats,
            "bucket_ratio": buckets.bucket_ratio(), "load_before": load_before, "load_after": load_average(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} torch threads, device {args.device}",
            "command": " ".join(sys.argv)}
    if args.json:
        atomic_write_json(args.json, data)
    if args.markdown:
        atomic_write_text(args.markdown, render_markdown(data))
