"""Choose the row-count bucket ratio (``dynalay_env.buckets``) by measurement.

Each setting of torch's two per-shape convolution caches (oneDNN's
``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, ideep's ``LRU_CACHE_CAPACITY``) runs in its own fresh process,
since both are sized when torch loads or first runs. In that process, each of ``--rounds`` rounds
times a single env's loop, then the vector env at each N under each of the setting's bucket ratios
in turn. The vector env over the single-env loop of the same round, measured side by side, is the
figure a loaded machine moves least; the table gives the medians over the rounds. ``padded`` is the
share of the vector env's model FLOPs spent on padding rows; ``shapes`` the number of distinct row
counts its convolutions ran on.

    OMP_NUM_THREADS=2 python -m benchmarks bucket_ratio --out benchmarks/results/bucket_ratio_cpu
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

import numpy as np
import torch

from dynalay_env import buckets
from dynalay_env.atomic import atomic_write_json, atomic_write_text
from dynalay_env.env import DynaLayEnv, make_core
from dynalay_env.vector_env import DynaLayVectorEnv

#: (label, bucket ratios measured in the process, oneDNN cache size, ideep cache size); 1024 is torch's
#: default for both. Ratios that share a process share its caches; exact rows (1.0) would fill them,
#: so they run alone.
SETTINGS: tuple[tuple[str, tuple[float, ...], int, int], ...] = (
    ("both caches 32 (main as shipped)", (1.0,), 32, 32),
    ("both caches 1024", (1.0,), 1024, 1024),
    ("both caches 1024", (1.1, 1.25, 1.5, 2.0), 1024, 1024),
    ("oneDNN 1024, ideep 32", (1.25,), 1024, 32),
)


def spy_on(record: Any, shapes: set[int]) -> Any:
    """``record`` that also collects the row counts run into ``shapes``."""

    def spy(real_rows: int, run_rows: int, flops_per_row: int) -> None:
        shapes.add(run_rows)
        record(real_rows, run_rows, flops_per_row)

    return spy


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One process: each round times the single-env loop, then the vector env at each N under each
    bucket ratio in turn (the caches were sized by the parent's environment)."""
    torch.set_num_threads(args.threads)
    model = make_core(1, dataset=args.dataset, model=args.model).model
    num_actions = model.num_layers + 1
    rng = np.random.default_rng(args.seed)
    venvs = {n: DynaLayVectorEnv(n, core=make_core(n, dataset=args.dataset, model=model)) for n in args.sizes}
    for venv in venvs.values():
        venv.reset(seed=args.seed)
    single = DynaLayEnv(core=make_core(1, dataset=args.dataset, model=model))
    single.reset(seed=args.seed)
    rounds: list[dict[str, Any]] = []
    shapes: dict[str, set[int]] = {}
    for r in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.single_steps):
            if single.step(int(rng.integers(0, num_actions)))[2]:
                single.reset()
        row: dict[str, Any] = {"single": args.single_steps / (time.perf_counter() - start)}
        for ratio in args.ratios:
            buckets.set_bucket_ratio(ratio)
            for n, venv in venvs.items():
                for _ in range(args.warmup if r == 0 else 2):  # the first round compiles the shapes
                    venv.step(rng.integers(0, num_actions, n))
                key = f"{ratio}/{n}"
                buckets.reset_padding_stats()
                original = buckets.record
                buckets.record = spy_on(original, shapes.setdefault(key, set()))
                batches = max(2, args.env_steps // n)
                start = time.perf_counter()
                for _ in range(batches):
                    venv.step(rng.integers(0, num_actions, n))
                seconds = time.perf_counter() - start
                buckets.record = original
                row[key] = {"steps_per_s": n * batches / seconds, "padded_share": buckets.padding_stats().padded_share}
        rounds.append(row)
    return {"rounds": rounds, "shapes": {k: len(v) for k, v in shapes.items()}}


def run_setting(args: argparse.Namespace, ratios: tuple[float, ...], onednn: int, ideep: int) -> dict[str, Any]:
    env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(onednn), "LRU_CACHE_CAPACITY": str(ideep)}
    # A fresh process per setting: both caches are sized when torch loads or first runs.
    cmd = [sys.executable, "-m", "benchmarks", "bucket_ratio", "--child", "--ratios", *map(str, ratios),
           "--threads", str(args.threads), "--dataset", args.dataset, "--warmup", str(args.warmup),
           "--env-steps", str(args.env_steps), "--single-steps", str(args.single_steps), "--seed", str(args.seed),
           "--rounds", str(args.rounds), "--sizes", *map(str, args.sizes)]
    if args.model:
        cmd += ["--model", args.model]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if out.returncode != 0:
        raise RuntimeError(f"setting ratios={ratios} oneDNN={onednn} ideep={ideep} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(rows: list[dict[str, Any]], sizes: list[int], header: str) -> str:
    head = "| caches | bucket ratio | single env | " + " | ".join(
        f"N={n} steps/s | N={n} vs single | N={n} padded | N={n} shapes" for n in sizes) + " |"
    lines = [header, "", head, "|---|---:" + "|---:" * (1 + 4 * len(sizes)) + "|"]
    for row in rows:
        cells = [f"{row['single']:,.0f}"]
        for n in sizes:
            r = row[str(n)]
            cells += [f"{r['steps_per_s']:,.0f}", f"{r['vs_single']:.1f}x", f"{r['padded_share']:.1%}",
                      f"{r['shapes']}"]
        ratio = "exact rows" if row["ratio"] == 1.0 else f"{row['ratio']}"
        lines.append(f"| {row['label']} | {ratio} | " + " | ".join(cells) + " |")
    lines += ["", "Medians over the rounds. Each caches setting runs in its own fresh process; the ratios of one "
              "process take turns within each round, after that round's single-env loop. `vs single` is the "
              "vector env's steps/s over the single-env loop's of the same round; `padded` the share of the vector "
              "env's model FLOPs run on padding rows (never charged); `shapes` the distinct row counts its "
              "convolutions ran on."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--model", default=None, help="checkpoint path (default: the cached default model)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=30, help="vector-env batches before the first round's timing")
    parser.add_argument("--env-steps", type=int, default=40_000, help="timed vector-env steps per N")
    parser.add_argument("--single-steps", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, nargs="+", default=None, help="indices into SETTINGS to run")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.25], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    chosen = [SETTINGS[i] for i in (args.only if args.only is not None else range(len(SETTINGS)))]
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    rows = []
    for label, ratios, onednn, ideep in chosen:
        res = run_setting(args, ratios, onednn, ideep)
        got = res["rounds"]
        for ratio in ratios:
            row: dict[str, Any] = {"label": label, "ratio": ratio, "onednn_cache": onednn, "ideep_cache": ideep,
                                   "single": statistics.median(g["single"] for g in got)}
            for n in args.sizes:
                key = f"{ratio}/{n}"
                row[str(n)] = {
                    "steps_per_s": statistics.median(g[key]["steps_per_s"] for g in got),
                    "vs_single": statistics.median(g[key]["steps_per_s"] / g["single"] for g in got),
                    "padded_share": statistics.median(g[key]["padded_share"] for g in got),
                    "shapes": res["shapes"][key],
                    "rounds": [g[key] | {"single": g["single"]} for g in got]}
            rows.append(row)
            print(f"{label} | ratio {ratio} | single {row['single']:,.0f} | " + " | ".join(
                f"N={n} {row[str(n)]['steps_per_s']:,.0f} ({row[str(n)]['vs_single']:.1f}x, padded "
                f"{row[str(n)]['padded_share']:.1%}, {row[str(n)]['shapes']} shapes)" for n in args.sizes), flush=True)
    header = (f"Bucket ratio sweep: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads, "
              f"{args.rounds} rounds, warm-up {args.warmup} batches, {args.env_steps:,} timed steps per N; load "
              f"average before {load_before}, after {' '.join(f'{v:.2f}' for v in os.getloadavg())}. "
              f"Command: `OMP_NUM_THREADS={args.threads} {' '.join(sys.argv)}`")
    text = render(rows, args.sizes, header)
    print(text)
    if args.out:
        atomic_write_json(args.out + ".json", {"header": header, "sizes": args.sizes, "rows": rows})
        atomic_write_text(args.out + ".md", text)
