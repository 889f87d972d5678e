"""Resident memory over long runs: the vector env with random actions, and PPO on the SB3 adapter.

Prints, at each checkpoint, the process's RSS (``/proc/self/status`` VmRSS), glibc's heap figures
(``mallinfo2``: bytes in use, free bytes held in the heap, bytes in mmapped chunks), torch's CPU
allocator is glibc's, so these cover tensors too), the *held* RSS (read again after
``malloc_trim(0)`` has handed the heap's free pages back: what the process holds in use or cannot
give back) and, with ``--tracemalloc``, the Python heap traced by ``tracemalloc`` and the number of
live tensors. Plain RSS moves by the heap's free pages, several MB from one reading to the next;
the held RSS does not. Growth that shows in RSS and in glibc's *free* bytes but not in bytes in use
is allocator fragmentation; growth in bytes in use, in the held RSS or in the traced Python heap is
a leak.

    python -m benchmarks memory_soak vector --num-envs 1024 --checkpoints 1e6 5e6 1e7
    python -m benchmarks memory_soak ppo --timesteps 2e6 --n-envs 1024

torch keeps per-shape caches for its CPU convolutions (oneDNN's compiled primitives, ideep's
primitive descriptors). The env keeps the set of shapes small by construction: every convolution
runs on one of a few bucketed row counts (:mod:`dynalay_env.buckets`), so those caches fill once,
early, and then stay. ``--bucket-ratio 1`` turns the bucketing off, for comparison (exact row
counts: the caches then keep meeting new shapes)::

    python benchmarks/memory_soak.py vector --bucket-ratio 1

``ppo`` runs as ``train_agent.py train`` does: ideep's cache capped by ``dynalay_env`` (imported
before torch) and glibc's thresholds fixed by :func:`agents.allocator.fix_mmap_threshold` before
the env is built. Its summary gives the growth after the first rollout (taken before the first
update) and after the second (the first update's one-time allocations included). Without those
two fixes, for comparison (torch's default cache size, glibc's dynamic threshold)::

    LRU_CACHE_CAPACITY=1024 DYNALAY_MMAP_THRESHOLD=0 python -m benchmarks memory_soak ppo

One torch thread (``--threads``). Writes its table to ``--out`` as well (default: print only).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import os
import platform
import time
import tracemalloc
from typing import Any

import numpy as np

# Before torch, as train_agent.py does: dynalay_env caps ideep's per-shape cache through an
# environment variable that torch reads when it is loaded.
import dynalay_env  # noqa: F401

# isort: split
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from agents.allocator import fix_mmap_threshold, requested_threshold
from agents.sb3_vec_env import DynaLayVecEnv
from dynalay_env import buckets
from dynalay_env.atomic import atomic_write_json
from dynalay_env.vector_env import DynaLayVectorEnv


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _glibc() -> Any | None:
    """glibc with ``mallinfo2`` and ``malloc_trim`` typed, or None off glibc (or an older one)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def malloc_stats() -> dict[str, float]:
    """glibc heap figures in MB (empty off glibc): ``in_use``, ``free_in_heap``, ``mmapped``."""
    libc = _glibc()
    if libc is None:
        return {}
    info = libc.mallinfo2()
    mb = 1 / 2**20
    return {"in_use_mb": info.uordblks * mb, "free_in_heap_mb": info.fordblks * mb, "mmapped_mb": info.hblkhd * mb}


def rss_mb() -> float:
    """Resident set size of this process (``VmRSS``), MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not in /proc/self/status")


def held_rss_mb() -> float:
    """RSS (MB) after glibc hands its heaps' free pages back to the system (``malloc_trim(0)``): the
    memory the process holds in use or cannot give back (fragmentation), without the freed pages
    that plain RSS keeps until they are reused. Plain RSS off glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
    return rss_mb()


def live_tensors() -> int:
    # type(), not isinstance(): isinstance reads __class__, which some lazy module objects warn on.
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def snapshot(steps: int, start: float, traced: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"env_steps": steps, "seconds": round(time.perf_counter() - start, 1), "rss_mb": rss_mb(),
                           **malloc_stats(), "padded_pct": 100 * buckets.padding_stats().padded_share}
    row["held_rss_mb"] = held_rss_mb()  # last: it changes what plain RSS reads from here on
    if traced:
        row["traced_python_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
        row["live_tensors"] = live_tensors()
    return row


def print_row(row: dict[str, Any]) -> None:
    print(" | ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                     for k, v in row.items()), flush=True)


def soak_vector(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Random actions through ``DynaLayVectorEnv`` (NEXT_STEP autoreset), RSS at each checkpoint."""
    env = DynaLayVectorEnv(args.num_envs, dataset=args.dataset, model=args.model)
    if not args.no_warm_up:
        env.core.warm_up()
    env.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    n, num_actions = args.num_envs, env.single_action_space.n
    checkpoints = sorted(int(float(c)) for c in args.checkpoints)
    rows = []
    start = time.perf_counter()
    steps = 0
    while steps < args.warmup:
        env.step(rng.integers(0, num_actions, n))
        steps += n
    if args.tracemalloc:
        tracemalloc.start()
    row = snapshot(steps, start, args.tracemalloc)
    row["label"] = "after warm-up"
    rows.append(row)
    print_row(row)
    for target in checkpoints:
        while steps < target:
            env.step(rng.integers(0, num_actions, n))
            steps += n
            if args.every and steps % (args.every * n) < n:
                print_row(snapshot(steps, start, args.tracemalloc))
        row = snapshot(steps, start, args.tracemalloc)
        rows.append(row)
        print_row(row)
    return rows


def soak_ppo(args: argparse.Namespace) -> list[dict[str, Any]]:
    """PPO on the SB3 adapter; RSS after every rollout (printed every ``--every`` rollouts)."""
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()

    class Probe(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            row = snapshot(self.num_timesteps, start, False)
            rows.append(row)
            if len(rows) == 1 or len(rows) % max(args.every, 1) == 0:
                print_row(row)

    env = DynaLayVecEnv(args.n_envs, dataset=args.dataset, model=args.model)
    if not args.no_warm_up:  # as train does (agents.training.make_train_env)
        env.core.warm_up()
    agent = PPO("MlpPolicy", env, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
                seed=args.seed, verbose=0, device="cpu")
    agent.learn(total_timesteps=int(float(args.timesteps)), callback=Probe())
    print_row(rows[-1])
    return rows


def summarise(kind: str, rows: list[dict[str, Any]]) -> str:
    if kind == "vector":
        first, last = rows[1], rows[-1]
        return "\n".join(
            f"{what} {first[key]:.1f} MB at {first['env_steps']:,} env steps -> {last[key]:.1f} MB at "
            f"{last['env_steps']:,}: {100 * (last[key] / first[key] - 1):+.2f}%"
            for key, what in (("rss_mb", "RSS"), ("held_rss_mb", "held RSS")) if key in first)
    parts = []
    for key, what in (("rss_mb", "RSS"), ("held_rss_mb", "held RSS")):
        for i, when in ((0, "after the first rollout"), (1, "after the second (first update done)")):
            if len(rows) > i + 1 and key in rows[i]:
                first, peak, last = rows[i][key], max(r[key] for r in rows[i + 1:]), rows[-1][key]
                parts.append(f"{what} {when} {first:.1f} MB; max after it {peak:.1f} MB "
                             f"({100 * (peak / first - 1):+.2f}%); at {rows[-1]['env_steps']:,} timesteps "
                             f"{last:.1f} MB ({100 * (last / first - 1):+.2f}%)")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("vector", "ppo"))
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--model", default=None, help="checkpoint path (default: the cached default model)")
    parser.add_argument("--num-envs", type=int, default=1024, help="vector: slots N (default: %(default)s)")
    parser.add_argument("--checkpoints", nargs="+", default=["1e6", "5e6", "1e7"],
                        help="vector: env-step counts at which RSS is reported (default: 1M 5M 10M)")
    parser.add_argument("--warmup", type=int, default=50_000, help="vector: env steps before the first snapshot")
    parser.add_argument("--tracemalloc", action="store_true", help="vector: also trace the Python heap (slower)")
    parser.add_argument("--timesteps", default="2e6", help="ppo: total timesteps (default: %(default)s)")
    parser.add_argument("--n-envs", type=int, default=1024, help="ppo: n_envs (default: %(default)s)")
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--n-epochs", type=int, default=2)
    parser.add_argument("--every", type=int, default=0, help="print a row every this many steps / rollouts too")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bucket-ratio", type=float, default=None,
                        help="row-count bucket ratio (dynalay_env.buckets; 1 = exact row counts; default: the package's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-warm-up", action="store_true",
                        help="skip the core's warm-up of every bucketed batch size (DynaLayCore.warm_up)")
    parser.add_argument("--out", default=None, help="also write the rows and summary to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.bucket_ratio is not None:
        buckets.set_bucket_ratio(args.bucket_ratio)
    settings = " | ".join(f"{name}={os.environ.get(name, '-')}" for name in (
        "MALLOC_ARENA_MAX", "ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"))
    settings += f" | bucket ratio {buckets.bucket_ratio()}"
    settings += " | warm-up " + ("off" if args.no_warm_up else "on (DynaLayCore.warm_up)")
    if args.kind == "ppo":
        # As agents.training.train does, before the env and the agent allocate.
        fixed = fix_mmap_threshold()
        settings += f" | glibc mmap threshold: {f'fixed at {requested_threshold():,} B' if fixed else 'dynamic'}"
    header = (f"# memory soak: {args.kind} | {platform.machine()} | torch {torch.__version__} | threads "
              f"{torch.get_num_threads()} | {settings}")
    print(header, flush=True)
    rows = soak_vector(args) if args.kind == "vector" else soak_ppo(args)
    summary = summarise(args.kind, rows)
    print(summary)
    if args.out:
        payload = {"header": header, "args": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows,
                   "summary": summary}
        atomic_write_json(args.out, payload)
