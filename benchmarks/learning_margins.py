"""The learning tests' margins over seeds and CPU kernel settings (``tests/learning.py``).

Every check that asserts a learned result is run at each seed of ``tests.learning.SEEDS``, once under
the default CPU kernels and once under ``MKL_CBWR=COMPATIBLE`` (MKL's reproducibility mode changes the
last bits of float32 results as another CPU would, so the pre-trained model and the policy differ).
Each setting runs in a process of its own, with a model cache of its own, since the kernels are
chosen when the libraries load. The table says, per check, seed and setting, whether what the test
asserts holds (``tests.learning.failures``), so the thresholds are not tuned to one seed or machine.

    python -m benchmarks learning_margins                  # the main venv's checks, every seed and setting
    python -m benchmarks learning_margins --checks ppo dqn --seeds 0 1
    .venv-rllib/bin/python -m benchmarks learning_margins --checks rllib_ppo rllib_dqn --settings default
    .venv-peers/bin/python -m benchmarks learning_margins --checks torchrl_ppo skrl_ppo_vector skrl_ppo_single \
        offline_cql --out benchmarks/results/learning_margins_peers.json

Writes ``benchmarks/results/learning_margins.json`` and ``.md`` after every result (each entry with
the ``seconds`` it took). Resumable: a rerun skips the (check, setting, seed) entries the JSON holds;
``--redo CHECK`` drops a check's entries first.
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
import traceback
from pathlib import Path
from typing import Any

import torch

from benchmarks import command_words, subprocess_argv
from dynalay_env.atomic import atomic_write_json, atomic_write_text
from dynalay_env.cache import MODEL_CACHE_ENV
from tests import learning

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results" / "learning_margins.json"
#: Kernel settings: the environment each worker process starts with. The first two are measured by
#: default (CI runs the learning tests under both); the others simulate other CPUs too.
SETTINGS: dict[str, dict[str, str]] = {"default": {}, "mkl_cbwr": {"MKL_CBWR": "COMPATIBLE"},
                                       "onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
                                       "aten_default": {"ATEN_CPU_CAPABILITY": "default"}}
DEFAULT_SETTINGS: tuple[str, ...] = ("default", "mkl_cbwr")
#: The SB3 algorithms measured: the learning-tested ones and those measured but smoke-only.
SB3_CHECKS: tuple[str, ...] = (*learning.LEARN, *learning.MEASURED_SMOKE_ONLY)
#: The main venv's checks (the default); the RLlib ones run in .venv-rllib (ray pins its own gymnasium).
MAIN_CHECKS: tuple[str, ...] = (*SB3_CHECKS, "cleanrl_ppo", "acceptance", "pretrain_digits")
RLLIB_CHECKS: tuple[str, ...] = tuple(f"rllib_{algo}" for algo in learning.RLLIB_HYPERPARAMS)
#: The peer libraries' examples (TorchRL, skrl, Minari + TorchRL's CQL) run in .venv-peers; their
#: results go to a file of their own (PEER_RESULTS).
PEER_CHECKS: tuple[str, ...] = tuple(learning.PEER_RUNS)
PEER_RESULTS = ROOT / "benchmarks" / "results" / "learning_margins_peers.json"
CHECKS: tuple[str, ...] = (*MAIN_CHECKS, *RLLIB_CHECKS, *PEER_CHECKS)
#: The quantities of each check the table shows, one row each.
SHOWN: dict[str, tuple[str, ...]] = {"acceptance": ("margin", "adaptive_gap"),
                                     "pretrain_digits": ("full_depth_accuracy",)}
#: Marks a worker's result line; everything else it prints (the CLI's progress) is passed through.
RESULT = "RESULT\t"


def run_check(check: str, seed: int, workdir: Path) -> dict[str, Any]:
    """One check at one seed, in this process; its figures as JSON values."""
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
    if check in PEER_CHECKS:
        return learning.peer_margin(check, seed, workdir).to_json()
    raise ValueError(f"unknown check {check!r}; valid checks: {list(CHECKS)}")


def worker(pairs: list[tuple[str, int]]) -> None:
    """Run each (check, seed) and print one result line each; a failure is recorded with its
    traceback and the next pair runs (the parent sets the kernel setting)."""
    with tempfile.TemporaryDirectory() as tmp:
        for check, seed in pairs:
            start = time.perf_counter()
            try:
                entry: dict[str, Any] = {"result": run_check(check, seed, Path(tmp))}
            except Exception:  # noqa: BLE001  (recorded in the table; the other pairs still run)
                entry = {"error": traceback.format_exc(limit=8)}
            print(RESULT + json.dumps({"check": check, "seed": seed, "seconds": time.perf_counter() - start, **entry}),
                  flush=True)


def _commit() -> str:
    """The checkout's commit (short hash), or ``unknown`` outside git: each entry records where it ran."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _machine() -> dict[str, Any]:
    """What the entries ran on: platform, cores and library versions (the kernels vary by setting)."""
    import platform

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def load(path: Path) -> dict[str, Any]:
    """The results file's content, or an empty one."""
    return json.loads(path.read_text()) if path.is_file() else {"entries": []}


def verdict(entry: dict[str, Any]) -> str:
    """``pass``, ``smoke only``, the failed conditions, or ``error``."""
    if "error" in entry:
        return "error"
    if entry["check"] in learning.MEASURED_SMOKE_ONLY or entry["check"] in learning.PEER_SMOKE_ONLY:
        return "smoke only"
    return "; ".join(learning.failures(entry["check"], entry["result"])) or "pass"


def render(results: dict[str, Any]) -> str:
    """The markdown table: per check, quantity and setting, each seed's value (* where the test
    would fail there), the minimum over the seeds measured, and how many pass."""
    seeds = learning.SEEDS
    present = {e["check"] for e in results["entries"]}
    peers = bool(present) and present <= set(PEER_CHECKS)
    if peers:
        title = "# Peer-library learning tests: margins over seeds and CPU kernel settings"
        source = ("Written by `.venv-peers/bin/python -m benchmarks learning_margins --checks "
                  f"{' '.join(PEER_CHECKS)} --out benchmarks/results/learning_margins_peers.json` (the examples "
                  "of TorchRL, skrl and offline CQL from a Minari dataset, `tests/test_peers_*.py`; the main "
                  "venv's checks are in `learning_margins.md`, the checks and what each asserts in "
                  "`tests/learning.py`).")
    else:
        title = "# Learning tests: margins over seeds and CPU kernel settings"
        source = ("Written by `python -m benchmarks learning_margins` (the checks and what each asserts: "
                  "`tests/learning.py`; the peer libraries' examples are in `learning_margins_peers.md`).")
    quantities = ("*margin*: accuracy over the random policy of matched compute (val, 1,250 examples; the "
                  "acceptance test and RLlib: test, 2,000). *adaptive_gap*: the acceptance agent's mean compute "
                  "on the hardest quarter of test inputs minus the easiest (by known noise level), minus the same "
                  "gap of the matched random policy. *full_depth_accuracy*: the default digits recipe on test "
                  "(359 examples).")
    if peers:
        quantities = "*margin*: accuracy over the random policy of matched compute (val, 1,250 examples)."
    lines = [title, "",
             f"{source} {quantities} mkl_cbwr = `MKL_CBWR=COMPATIBLE`. A value marked * fails what the test "
             "asserts there; *passes* counts the seeds where everything the test asserts holds. Each entry of "
             "the JSON records the commit it ran at ("
             + ", ".join(sorted({e.get("commit", "unknown") for e in results["entries"]})) + ") and its seconds.",
             "", "| check | quantity | setting | " + " | ".join(f"seed {s}" for s in seeds) + " | min | passes |",
             "|---|---|---|" + "---:|" * (len(seeds) + 2)]
    by_key = {(e["check"], e["setting"], e["seed"]): e for e in results["entries"]}
    for check in CHECKS:
        for quantity in SHOWN.get(check, ("margin",)):
            for setting in SETTINGS:
                entries = [by_key.get((check, setting, s)) for s in seeds]
                if all(e is None for e in entries):
                    continue
                cells, values, passes = [], [], 0
                for e in entries:
                    if e is None:
                        cells.append("")
                    elif "error" in e:
                        cells.append("error")
                    else:
                        values.append(e["result"][quantity])
                        ok = verdict(e) in ("pass", "smoke only")
                        passes += verdict(e) == "pass"
                        cells.append(f"{e['result'][quantity]:+.3f}" + ("" if ok else "*"))
                measured = sum(e is not None for e in entries)
                smoke = check in learning.MEASURED_SMOKE_ONLY or check in learning.PEER_SMOKE_ONLY
                judged = "smoke only" if smoke else f"{passes}/{measured}"
                lowest = f"{min(values):+.3f}" if values else ""
                lines.append(f"| {check} | {quantity} | {setting} | {' | '.join(cells)} | {lowest} | {judged} |")
    failed = [f"- {e['check']} / {e['setting']} / seed {e['seed']}: {verdict(e)}" for e in results["entries"]
              if verdict(e) not in ("pass", "smoke only")]
    if failed:
        lines += ["", "Where a test would fail:", "", *failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the missing (check, setting, seed) entries, one worker process per setting, side by side."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", nargs="+", default=list(MAIN_CHECKS), choices=CHECKS,
                        help="default: every check of the main venv; rllib_* need .venv-rllib, the peer checks "
                        f"({', '.join(PEER_CHECKS)}) .venv-peers and --out {PEER_RESULTS.relative_to(ROOT)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(learning.SEEDS))
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--redo", nargs="+", default=[], choices=CHECKS, help="drop these checks' entries first")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (the .md is written beside it)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker([(check, int(seed)) for check, seed in (pair.split(":") for pair in args.worker)])
        return 0

    results = load(args.out)
    results.update({"command": " ".join(command_words("learning_margins")), "machine": _machine()})
    commit = _commit()
    results["entries"] = [e for e in results["entries"] if e["check"] not in args.redo]
    done = {(e["check"], e["setting"], e["seed"]) for e in results["entries"]}
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    procs: dict[str, subprocess.Popen] = {}
    with tempfile.TemporaryDirectory() as caches:
        try:
            for setting in args.settings:
                pairs = [f"{c}:{s}" for c in args.checks for s in args.seeds if (c, setting, s) not in done]
                if not pairs:
                    continue
                # A model cache per setting: a default model pre-trained under one setting's kernels is
                # not reused under another's.
                env = {**os.environ, "OMP_NUM_THREADS": "1", MODEL_CACHE_ENV: str(Path(caches) / setting),
                       **SETTINGS[setting]}
                procs[setting] = subprocess.Popen([*subprocess_argv("learning_margins"), "--worker", *pairs],
                                                  env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
                threading.Thread(target=_forward, args=(setting, procs[setting], lines), daemon=True).start()
            running = len(procs)
            while running:
                setting, line = lines.get()
                if line is None:
                    running -= 1
                    continue
                entry = {**json.loads(line), "setting": setting, "commit": commit}
                results["entries"].append(entry)
                results["entries"].sort(key=lambda e: (e["check"], e["setting"], e["seed"]))
                atomic_write_json(args.out, results)
                atomic_write_text(args.out.with_suffix(".md"), render(results))
                print(f"{setting:>12} {entry['check']:>15} seed {entry['seed']}: {verdict(entry)}", flush=True)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
    # Written again at the end, so a rerun with nothing left to run re-renders the table.
    atomic_write_json(args.out, results)
    atomic_write_text(args.out.with_suffix(".md"), render(results))
    failed = [setting for setting, proc in procs.items() if proc.wait() != 0]
    if failed:
        print(f"the worker(s) of {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _forward(setting: str, proc: subprocess.Popen, lines: queue.Queue) -> None:
    """Hand each result line of a worker to the main thread (other output is echoed); None at its end."""
    for line in proc.stdout:
        if line.startswith(RESULT):
            lines.put((setting, line[len(RESULT):]))
        else:
            print(f"[{setting}] {line}", end="", flush=True)
    lines.put((setting, None))
