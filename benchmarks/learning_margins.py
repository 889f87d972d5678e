"""The learning tests' margins over seeds and CPU kernel settings (``tests/learning.py``).

Every check that asserts a learned result is run at each seed of ``tests.learning.SEEDS``, once under
the default CPU kernels and once under ``MKL_CBWR=COMPATIBLE`` (MKL's reproducibility mode changes the
last bits of float32 results as another CPU would, so the pre-trained model and the policy differ).
Each setting runs in a process of its own, since MKL reads the variable when it loads. The table
shows what threshold every seed and setting clears, so the tests' thresholds are not tuned to one.

    python benchmarks/learning_margins.py                  # everything (about an hour on 2 idle cores)
    python benchmarks/learning_margins.py --checks ppo dqn --seeds 0 1
    .venv-rllib/bin/python benchmarks/learning_margins.py --checks rllib_ppo rllib_dqn

Writes ``benchmarks/results/learning_margins.json`` and ``.md`` after every result (resumable: a
rerun skips the (check, seed, setting) entries the JSON already holds).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import the project from this checkout
    sys.path.insert(0, str(ROOT))

from dynalay_env.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from tests import learning  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "learning_margins.json"
#: Kernel settings: the environment each worker process starts with.
SETTINGS: dict[str, dict[str, str]] = {"default": {}, "mkl_cbwr": {"MKL_CBWR": "COMPATIBLE"}}
#: The SB3 algorithms measured: the learning-tested ones and those measured but smoke-only.
SB3_CHECKS: tuple[str, ...] = (*learning.LEARN, *learning.MEASURED_SMOKE_ONLY)
#: The main venv's checks (the default); the RLlib ones run in .venv-rllib (ray pins its own gymnasium).
MAIN_CHECKS: tuple[str, ...] = (*SB3_CHECKS, "cleanrl_ppo", "acceptance", "pretrain_digits")
RLLIB_CHECKS: tuple[str, ...] = tuple(f"rllib_{algo}" for algo in learning.RLLIB_HYPERPARAMS)
CHECKS: tuple[str, ...] = (*MAIN_CHECKS, *RLLIB_CHECKS)
#: Each check's asserted quantities and thresholds, as the tests assert them.
THRESHOLDS: dict[str, dict[str, float]] = {
    **{name: {"margin": learning.MARGIN} for name in learning.LEARN},
    "cleanrl_ppo": {"margin": learning.CLEANRL_MARGIN},
    "acceptance": {"margin": learning.ACCEPTANCE_MARGIN, "compute_gap": learning.ACCEPTANCE_COMPUTE_GAP},
    **{check: {"margin": learning.RLLIB_MARGIN} for check in RLLIB_CHECKS},
    "pretrain_digits": {"margin": 0.0},
}


def run_check(check: str, seed: int, workdir: Path) -> dict[str, Any]:
    """One check at one seed, in this process; its figures as JSON values."""
    import torch

    torch.set_num_threads(1)
    if check == "acceptance":
        return learning.acceptance_run(seed, workdir)
    if check == "pretrain_digits":
        return learning.pretrain_digits(seed, workdir)
    if check == "cleanrl_ppo":
        return learning.cleanrl_margin(seed, workdir).to_json()
    if check in SB3_CHECKS:
        return learning.sb3_margin(check, seed).to_json()
    if check in RLLIB_CHECKS:
        return learning.rllib_margin(check.removeprefix("rllib_"), seed, workdir).to_json()
    raise ValueError(f"unknown check {check!r}; valid checks: {list(CHECKS)}")


def worker(checks: list[str], seeds: list[int]) -> None:
    """Run every (check, seed) and print one JSON line each (the parent sets the kernel setting)."""
    with tempfile.TemporaryDirectory() as tmp:
        for check in checks:
            for seed in seeds:
                start = time.perf_counter()
                result = run_check(check, seed, Path(tmp))
                print(json.dumps({"check": check, "seed": seed, "seconds": time.perf_counter() - start,
                                  "result": result}), flush=True)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"entries": []}


def render(results: dict[str, Any]) -> str:
    """The markdown table: each check's asserted quantities per seed and setting, and their minimum."""
    lines = ["# Learning tests: margins over seeds and CPU kernel settings", "",
             "Written by `python benchmarks/learning_margins.py` (`tests/learning.py` holds the checks). "
             "*margin*: accuracy over the random policy of matched compute (val, 1,250 examples; the "
             "acceptance test and RLlib: test, 2,000). *compute_gap*: the acceptance agent's mean compute on the hardest "
             "quarter of test inputs minus the easiest (by known noise level). pretrain_digits: the default "
             "digits recipe's full-depth test accuracy minus 0.97 (359 examples: 0.0028 each). mkl_cbwr = `MKL_CBWR=COMPATIBLE`.",
             "", "| check | quantity | setting | " + " | ".join(f"seed {s}" for s in learning.SEEDS)
             + " | min | test asserts |", "|---|---|---|" + "---:|" * (len(learning.SEEDS) + 2)]
    by_key = {(e["check"], e["setting"], e["seed"]): e["result"] for e in results["entries"]}
    for check in CHECKS:
        quantities = THRESHOLDS.get(check, {"margin": float("nan")})
        for quantity, threshold in quantities.items():
            for setting in SETTINGS:
                values = [by_key.get((check, setting, s), {}).get(quantity) for s in learning.SEEDS]
                if all(v is None for v in values):
                    continue
                present = [v for v in values if v is not None]
                asserted = f">= {threshold:+.3f}" if threshold == threshold else "smoke only"
                lines.append(f"| {check} | {quantity} | {setting} | "
                             + " | ".join("" if v is None else f"{v:+.3f}" for v in values)
                             + f" | {min(present):+.3f} | {asserted} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", nargs="+", default=list(MAIN_CHECKS), choices=CHECKS,
                        help="default: every check of the main venv; rllib_* need .venv-rllib")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(learning.SEEDS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (the .md is written beside it)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.checks, args.seeds)
        return 0

    results = load(args.out)
    done = {(e["check"], e["setting"], e["seed"]) for e in results["entries"]}
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    procs = {}
    for setting in args.settings:  # one process per setting, side by side (one thread each)
        todo = [c for c in args.checks if any((c, setting, s) not in done for s in args.seeds)]
        if not todo:
            continue
        seeds = sorted({s for c in todo for s in args.seeds if (c, setting, s) not in done})
        env = {**os.environ, "OMP_NUM_THREADS": "1", **SETTINGS[setting]}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--checks", *todo,
               "--seeds", *map(str, seeds)]
        procs[setting] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        threading.Thread(target=_forward, args=(setting, procs[setting], lines), daemon=True).start()
    running = len(procs)
    while running:
        setting, line = lines.get()
        if line is None:
            running -= 1
            continue
        entry = {**json.loads(line), "setting": setting}
        results["entries"].append(entry)
        results["entries"].sort(key=lambda e: (e["check"], e["setting"], e["seed"]))
        atomic_write_json(args.out, results)
        atomic_write_text(args.out.with_suffix(".md"), render(results))
        print(f"{setting:>8} {entry['check']:>13} seed {entry['seed']}: "
              + ", ".join(f"{k} {entry['result'][k]:+.4f}" for k in ("margin", "compute_gap") if k in entry["result"]),
              flush=True)
    failed = [setting for setting, proc in procs.items() if proc.wait() != 0]
    if failed:
        print(f"the worker(s) of {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _forward(setting: str, proc: subprocess.Popen, lines: queue.Queue) -> None:
    """Hand each result line of a worker to the main thread; None when the worker ends."""
    for line in proc.stdout:
        lines.put((setting, line))
    lines.put((setting, None))


if __name__ == "__main__":
    sys.exit(main())
