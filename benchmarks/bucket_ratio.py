#!/usr/bin/env python
"""Choose the row-count bucket ratio (``dynalay_env.buckets``) by measurement.

Each setting -- a bucket ratio and the sizes of torch's two per-shape convolution caches (oneDNN's
``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, ideep's ``LRU_CACHE_CAPACITY``) -- runs in its own fresh
process, since both caches are sized when torch loads or first runs. In that process the vector
env steps random actions at each N after a warm-up, then a loop of single envs steps the same
kind of actions: the ratio of the two, measured side by side, is what a loaded machine moves
least. The settings run in turn, ``--rounds`` times over, and the table gives the median of each
figure. ``padded`` is the share of the vector env's model FLOPs spent on padding rows; ``shapes``
the number of distinct row counts its convolutions ran on.

    OMP_NUM_THREADS=2 python benchmarks/bucket_ratio.py --out benchmarks/results/bucket_ratio_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

#: (label, bucket ratio, oneDNN cache size, ideep cache size); 1024 is torch's default for both.
SETTINGS: tuple[tuple[str, float, int, int], ...] = (
    ("exact rows, both caches 32 (main as shipped)", 1.0, 32, 32),
    ("exact rows, both caches 1024", 1.0, 1024, 1024),
    ("ratio 1.1, oneDNN 1024, ideep 32", 1.1, 1024, 32),
    ("ratio 1.25, oneDNN 1024, ideep 32", 1.25, 1024, 32),
    ("ratio 1.5, oneDNN 1024, ideep 32", 1.5, 1024, 32),
    ("ratio 2, oneDNN 1024, ideep 32", 2.0, 1024, 32),
    ("ratio 1.25, both caches 1024", 1.25, 1024, 1024),
)


def spy_on(record: Any, shapes: set[int]) -> Any:
    """``record`` that also collects the row counts run into ``shapes``."""

    def spy(real_rows: int, run_rows: int, flops_per_row: int) -> None:
        shapes.add(run_rows)
        record(real_rows, run_rows, flops_per_row)

    return spy


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One setting, measured in this process (the caches were sized by the parent's environment)."""
    import numpy as np
    import torch

    from dynalay_env import buckets
    from dynalay_env.env import DynaLayEnv, make_core
    from dynalay_env.vector_env import DynaLayVectorEnv

    torch.set_num_threads(args.threads)
    buckets.set_bucket_ratio(args.ratio)
    model = make_core(1, dataset=args.dataset, model=args.model).model
    num_actions = model.num_layers + 1
    rng = np.random.default_rng(args.seed)
    out: dict[str, Any] = {}
    for n in args.sizes:
        venv = DynaLayVectorEnv(n, core=make_core(n, dataset=args.dataset, model=model))
        venv.reset(seed=args.seed)
        for _ in range(args.warmup):
            venv.step(rng.integers(0, num_actions, n))
        buckets.reset_padding_stats()
        shapes: set[int] = set()
        original = buckets.record
        buckets.record = spy_on(original, shapes)
        batches = max(2, args.env_steps // n)
        start = time.perf_counter()
        for _ in range(batches):
            venv.step(rng.integers(0, num_actions, n))
        seconds = time.perf_counter() - start
        buckets.record = original
        out[str(n)] = {"steps_per_s": n * batches / seconds, "padded_share": buckets.padding_stats().padded_share,
                       "shapes": len(shapes)}
    env = DynaLayEnv(core=make_core(1, dataset=args.dataset, model=model))
    env.reset(seed=args.seed)
    start = time.perf_counter()
    for _ in range(args.single_steps):
        if env.step(int(rng.integers(0, num_actions)))[2]:
            env.reset()
    out["single"] = args.single_steps / (time.perf_counter() - start)
    return out


def run_setting(args: argparse.Namespace, ratio: float, onednn: int, ideep: int) -> dict[str, Any]:
    env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(onednn), "LRU_CACHE_CAPACITY": str(ideep)}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--ratio", str(ratio), "--threads", str(args.threads),
           "--dataset", args.dataset, "--warmup", str(args.warmup), "--env-steps", str(args.env_steps),
           "--single-steps", str(args.single_steps), "--seed", str(args.seed), "--sizes", *map(str, args.sizes)]
    if args.model:
        cmd += ["--model", args.model]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"setting ratio={ratio} oneDNN={onednn} ideep={ideep} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(rows: list[dict[str, Any]], sizes: list[int], header: str) -> str:
    head = "| setting | single env | " + " | ".join(
        f"N={n} steps/s | N={n} vs single | N={n} padded | N={n} shapes" for n in sizes) + " |"
    lines = [header, "", head, "|---" + "|---:" * (1 + 4 * len(sizes)) + "|"]
    for row in rows:
        cells = [f"{row['single']:,.0f}"]
        for n in sizes:
            r = row[str(n)]
            cells += [f"{r['steps_per_s']:,.0f}", f"{r['vs_single']:.1f}x", f"{r['padded_share']:.1%}",
                      f"{r['shapes']}"]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Medians over the rounds; each setting in a fresh process. `vs single` is the vector env's steps/s "
              "over the single-env loop's in the same process; `padded` the share of the vector env's model FLOPs "
              "run on padding rows (never charged); `shapes` the distinct row counts its convolutions ran on."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--model", default=None, help="checkpoint path (default: the cached default model)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=40, help="vector-env batches before timing")
    parser.add_argument("--env-steps", type=int, default=40_000, help="timed vector-env steps per N")
    parser.add_argument("--single-steps", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, nargs="+", default=None, help="indices into SETTINGS to run")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ratio", type=float, default=1.25, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    chosen = [SETTINGS[i] for i in (args.only if args.only is not None else range(len(SETTINGS)))]
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in chosen}
    for r in range(args.rounds):
        for label, ratio, onednn, ideep in chosen:
            res = run_setting(args, ratio, onednn, ideep)
            runs[label].append(res)
            print(f"round {r + 1} | {label} | single {res['single']:,.0f} | " + " | ".join(
                f"N={n} {res[str(n)]['steps_per_s']:,.0f} ({res[str(n)]['steps_per_s'] / res['single']:.1f}x, "
                f"padded {res[str(n)]['padded_share']:.1%}, {res[str(n)]['shapes']} shapes)" for n in args.sizes),
                flush=True)
    rows = []
    for label, ratio, onednn, ideep in chosen:
        got = runs[label]
        row: dict[str, Any] = {"label": label, "ratio": ratio, "onednn_cache": onednn, "ideep_cache": ideep,
                               "single": statistics.median(g["single"] for g in got), "rounds": got}
        for n in args.sizes:
            row[str(n)] = {
                "steps_per_s": statistics.median(g[str(n)]["steps_per_s"] for g in got),
                "vs_single": statistics.median(g[str(n)]["steps_per_s"] / g["single"] for g in got),
                "padded_share": statistics.median(g[str(n)]["padded_share"] for g in got),
                "shapes": max(g[str(n)]["shapes"] for g in got)}
        rows.append(row)
    header = (f"Bucket ratio sweep: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads, "
              f"{args.rounds} rounds, warm-up {args.warmup} batches, {args.env_steps:,} timed steps per N; load "
              f"average before {load_before}, after {' '.join(f'{v:.2f}' for v in os.getloadavg())}. "
              f"Command: `python {' '.join(sys.argv)}`")
    text = render(rows, args.sizes, header)
    print(text)
    if args.out:
        from dynalay_env.atomic import atomic_write_json, atomic_write_text

        atomic_write_json(args.out + ".json", {"header": header, "sizes": args.sizes, "rows": rows})
        atomic_write_text(args.out + ".md", text)


if __name__ == "__main__":
    main()
