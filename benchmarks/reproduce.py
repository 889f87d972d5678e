"""Regenerate every CPU number and figure of the documentation's results pages (``make results``).

Each *part* runs the project's own programs by command line (``train_agent.py``, ``python -m benchmarks NAME``)
against one pinned main model per dataset, the cached default of the current recipe
(``dynalay_env.cache.cached_default_model``), and writes its results files into ``--out``
(default ``benchmarks/results/``). Parts:

    pretrain_mnist1d    the default model's pre-training report: accuracy by depth, oracle, time
    pretrain_synthetic  the same for the synthetic dataset (co-training compares both)
    agent_seeds         PPO, DQN, MaskablePPO x seeds on mnist1d, each against the baselines on test
    cotrain_vs_frozen   frozen against co-trained main model (python -m benchmarks cotrain_vs_frozen)
    sweep_mnist1d       the reward-shaping sweep (train_agent.py sweep)
    env_throughput      env steps/s of every face of the env, and PPO wall time (timed alone)
    mnist5k_demo        the demo on the real-image dataset mnist5k (its own pre-training, PPO, evaluation)
    adaptive_inference  wall clock of AdaptiveClassifier against full depth (timed alone)

Every results file records the command, the main model's provenance (weights/config hash, dataset
and fingerprint, package version, recipe version), the machine and the wall time, and no
machine-local absolute path. A part whose results file exists with the same inputs (commands and
model provenance) is skipped, so an interrupted run resumes; ``--force`` reruns. Independent parts run
``--jobs`` at a time (default 2), each on one torch thread; the timing parts run alone.

    python -m benchmarks reproduce                      # everything (make results)
    python -m benchmarks reproduce --quick              # fewer steps and seeds, into benchmarks/results/quick
    python -m benchmarks reproduce --only agent_seeds adaptive_inference --force
    python -m benchmarks reproduce --list
    python -m benchmarks reproduce --readme             # rewrite the results pages' generated blocks from --out

Out of scope: the GPU figures (the CUDA throughput table, the H200 pre-training) and long studies with
their own commands and files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch

import dynalay_env
from benchmarks.env_throughput import render_markdown as render_throughput_markdown
from dynalay_env.atomic import atomic_copy, atomic_path, atomic_write_text
from dynalay_env.cache import (
    cached_default_model,
    cached_expert_model,
    default_expert_model_path,
    default_model_path,
    model_cache_dir,
    shipped_model_path,
)
from dynalay_env.datasets import load_dataset
from dynalay_env.experts import EXPERTS_ENV_ID
from dynalay_env.model import load_checkpoint, provenance_of

ROOT = Path(__file__).resolve().parent.parent

RESULTS = Path("benchmarks/results")
#: The documentation pages whose ``<!-- results:NAME -->`` blocks ``--readme`` regenerates from
#: the results files (each block stands on exactly one of them; tests/test_readme_numbers.py checks
#: every other number on them against the committed results files).
RESULTS_PAGES: tuple[Path, ...] = tuple(ROOT / "docs" / f"{name}.md" for name in ("results", "studies", "performance"))

# The study sizes. FULL's last wall time is in benchmarks/results/reproduce.json (docs/results.md);
# QUICK checks the pipeline with few steps. A changed budget changes the commands, so the parts rerun.
FULL: dict[str, Any] = {
    "agent_algos": ["ppo", "dqn", "maskable_ppo"], "agent_seeds": [0, 1, 2], "agent_timesteps": 200_000,
    "sweep_trials": 16, "sweep_timesteps": 100_000,
    "cotrain_datasets": ["mnist1d", "synthetic"], "cotrain_seeds": [0, 1], "cotrain_timesteps": 196_608,
    "cotrain_agent_phase": 49_152, "cotrain_variants": [["gentle", 1e-4, 16], ["strong", 3e-4, 64]],
    "throughput_args": [], "adaptive_repeats": 5, "mnist5k_timesteps": None,
}
QUICK: dict[str, Any] = {
    "agent_algos": ["ppo", "maskable_ppo"], "agent_seeds": [0], "agent_timesteps": 4096,
    "sweep_trials": 2, "sweep_timesteps": 4096,
    "cotrain_datasets": ["mnist1d"], "cotrain_seeds": [0], "cotrain_timesteps": 4096,
    "cotrain_agent_phase": 2048, "cotrain_variants": [["strong", 3e-4, 2]],
    "throughput_args": ["--sizes", "1", "256", "--env-steps", "2048", "--single-steps", "256",
                        "--ppo-timesteps", "2048"],
    "adaptive_repeats": 2, "mnist5k_timesteps": 4096,
}
TAU = 0.98  # the confidence threshold timed beside the agent in adaptive_inference
ENV_OF = {"mnist1d": "DynaLay-MNIST1D-v0", "synthetic": "DynaLay-Synthetic-v0"}


# --------------------------------------------------------------------------------------------------
# Provenance, machine, paths
# --------------------------------------------------------------------------------------------------


def model_provenance(dataset_name: str, progress: bool = False, experts: bool = False) -> dict[str, Any]:
    """The pinned default model of ``dataset_name`` (pre-trained into the cache on first use) and
    where it comes from (:func:`dynalay_env.model.provenance_of`): provenance id (weights, config,
    data fingerprint, package version), weights and config hashes, dataset fingerprint, package and
    recipe version, and the cache key. ``experts``: the dataset's default expert model instead
    (:func:`dynalay_env.cache.cached_expert_model`). ``path`` is this machine's; it is never written
    to a file."""
    dataset = load_dataset(dataset_name)
    path = (cached_expert_model if experts else cached_default_model)(dataset, progress=progress)
    return {**checkpoint_provenance(path, dataset), "cache_key": path.parent.name}


def env_model_provenance(env_id: str, progress: bool = False) -> dict[str, Any]:
    """:func:`model_provenance` of the default main model of the registered ``env_id``: the expert
    model for :data:`dynalay_env.experts.EXPERTS_ENV_ID`, the dataset's default model otherwise."""
    dataset = dynalay_env.ENV_IDS[env_id]
    if dataset is None:
        raise ValueError(f"{env_id} has no default dataset; valid ids: {sorted(k for k, v in dynalay_env.ENV_IDS.items() if v)}")
    return model_provenance(dataset, progress=progress, experts=env_id == EXPERTS_ENV_ID)


def checkpoint_provenance(path: Path, dataset: Any) -> dict[str, Any]:
    """:func:`model_provenance`'s fields for the checkpoint at ``path`` of ``dataset`` (a
    :class:`dynalay_env.datasets.Dataset`); ``cache_key`` is None (not a cached default model)."""
    p = provenance_of(load_checkpoint(path, expected_dataset=dataset.name).model, dataset)
    return {"dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint, "provenance": p["id"],
            "weights_hash": p["weights_hash"], "config_hash": p["config_hash"],
            "package_version": p["package_version"], "recipe_version": p["recipe_version"],
            "cache_key": None, "path": str(path)}


def machine() -> dict[str, Any]:
    """Where the figures were measured (each job runs torch on one thread)."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads_per_job": 1}


# Folders given as absolute paths on the command line (--out, --work) and their portable names.
EXTRA_PATHS: list[tuple[str, str]] = []


def record_by_role(folder: str | os.PathLike | None, name: str) -> None:
    """Have :func:`scrub` write ``folder`` (a command-line option's folder) as ``name`` (``$ROLE``)
    when it is absolute, so results files name the option, not this machine's path."""
    if folder and Path(folder).is_absolute() and (str(folder), name) not in EXTRA_PATHS:
        EXTRA_PATHS.append((str(folder), name))


def local_paths() -> list[tuple[str, str]]:
    """(machine-local prefix, its portable name), longest first, for :func:`scrub`."""
    pairs = EXTRA_PATHS + [(str(model_cache_dir().resolve()), "$DYNALAY_MODEL_CACHE"), (str(model_cache_dir()), "$DYNALAY_MODEL_CACHE"),
             (str(ROOT) + "/", ""), (str(ROOT), "."), (sys.executable, "python"), (str(Path.home()), "~")]
    return sorted((p for p in pairs if len(p[0]) > 1), key=lambda p: -len(p[0]))  # never "/" alone


def scrub(text: str) -> str:
    """``text`` with every machine-local absolute path replaced by a portable name."""
    for local, portable in local_paths():
        text = text.replace(local, portable)
    return text


def command_line(argv: list[str]) -> str:
    return scrub(shlex.join(argv))


def write_text(path: Path, text: str) -> None:
    """Atomic write (a reader sees the old file or the new one), machine-local paths scrubbed."""
    atomic_write_text(path, scrub(text))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=float) + "\n")


# --------------------------------------------------------------------------------------------------
# Parts
# --------------------------------------------------------------------------------------------------


class Job(NamedTuple):
    """One command line; ``slots``: how many of the ``--jobs`` slots it occupies (2 = alone on 2 cores)."""

    argv: list[str]
    slots: int = 1


class Context:
    """One run's settings: ``out`` the results folder, ``work`` the run folders of this budget,
    ``budget`` FULL or QUICK, and the models resolved so far (dataset -> :func:`model_provenance`)."""

    def __init__(self, out: Path, work: Path, budget: dict[str, Any], quick: bool) -> None:
        self.out, self.work, self.budget, self.quick = out, work, budget, quick
        self.models: dict[str, dict[str, Any]] = {}

    def model(self, name: str) -> dict[str, Any]:
        """:func:`model_provenance` of a dataset's default model, or :func:`env_model_provenance` of a
        registered env id's (the expert model for the experts env)."""
        if name not in self.models:
            self.models[name] = env_model_provenance(name) if name in dynalay_env.ENV_IDS else model_provenance(name)
        return self.models[name]

    def part_dir(self, part: Part) -> Path:
        """Run folders of ``part``, keyed by the model provenance so a new model never reuses old runs."""
        if part.name.startswith("pretrain_"):  # runs before its model exists
            return self.work / part.name
        key = "-".join(self.model(d)["provenance"][:8] for d in part.datasets(self))
        return self.work / part.name / key


class Part(NamedTuple):
    """A study: its jobs (command lines), how its results files are written, what it needs."""

    name: str
    help: str
    datasets: Callable[[Context], list[str]]
    jobs: Callable[[Context, Part], list[Job]]            # run in parallel
    final: Callable[[Context, Part], list[Job]]           # run after ``jobs``, in order
    collect: Callable[[Context, Part, dict[str, Any]], None]  # writes the results files from the run folder
    outputs: Callable[[Context], list[str]]               # file names in ``out``; the first is the JSON
    deps: Callable[[Context], tuple[str, ...]] = lambda ctx: ()
    enabled: Callable[[Context], bool] = lambda ctx: True  # part of this budget's default selection


PY = [sys.executable]


def py(*args: Any) -> list[str]:
    """A command line of this interpreter with ``args``."""
    return PY + [str(a) for a in args]


def bench(name: str, *args: Any) -> list[str]:
    """The command line of benchmark ``name`` (``python -m benchmarks NAME``) with ``args``."""
    return py("-m", "benchmarks", name, *args)


#: A command as results files wrote it before ``benchmarks`` became a package (``python
#: benchmarks/NAME.py``): the same program as ``python -m benchmarks NAME``.
SCRIPT_COMMAND = re.compile(r"(?<![\w/.-])(python3?|\S*/python3?) benchmarks/(\w+)\.py(?=\s|$)")


def current_command(command: str) -> str:
    """``command`` with every ``python benchmarks/NAME.py`` written as ``python -m benchmarks NAME``:
    a results file written by the script form stays current, and names the command that runs today."""
    return SCRIPT_COMMAND.sub(r"\1 -m benchmarks \2", command)


def meta_of(ctx: Context, part: Part, argv: list[list[str]]) -> dict[str, Any]:
    """What decides whether a part's results are current: its commands and its models."""
    return {"commands": [command_line(a) for a in argv],
            "models": {d: {k: v for k, v in ctx.model(d).items() if k != "path"} for d in part.datasets(ctx)}}


def header_md(meta: dict[str, Any]) -> str:
    models = "; ".join(f"{d}: provenance `{m['provenance']}`, weights `{m['weights_hash'][:12]}`, config "
                       f"`{m.get('config_hash')}`, data "
                       f"`{m['dataset_fingerprint']}`, package {m['package_version']}, recipe {m['recipe_version']}"
                       for d, m in meta["models"].items())
    mach = meta["machine"]
    return (f"<!-- generated by `{meta['command']}` -->\n\nModels: {models}. Machine: {mach['processor']}, "
            f"{mach['cpu_count']} CPUs, torch {mach['torch']}, {mach['torch_threads_per_job']} torch thread per job. "
            f"Wall time {meta['wall_seconds']:.0f} s.\n\n")


# ---- pre-training -------------------------------------------------------------------------------


def pretrain_part(dataset: str, enabled: Callable[[Context], bool] = lambda ctx: True) -> Part:
    def collect(ctx: Context, part: Part, meta: dict[str, Any]) -> None:
        report = json.loads((Path(ctx.model(dataset)["path"]).parent / "pretrain.json").read_text())
        report.pop("checkpoint", None)  # the temporary folder it was trained in
        report.pop("history", None)
        write_json(ctx.out / part.outputs(ctx)[0], {"reproduce": meta, **report})
        write_text(ctx.out / part.outputs(ctx)[1], header_md(meta) + render_pretrain(report) + "\n")

    return Part(
        name=f"pretrain_{dataset}", help=f"the cached default {dataset} model's pre-training report",
        datasets=lambda ctx: [dataset],
        # The job pre-trains the default model into the cache (once: a cached model is reused).
        jobs=lambda ctx, part: [Job(bench("reproduce", "--pretrain-default", dataset))],
        final=no_jobs, collect=collect, enabled=enabled,
        outputs=lambda ctx: [f"pretrain_{dataset}_cpu.json", f"pretrain_{dataset}_cpu.md"])


def render_pretrain(r: dict[str, Any]) -> str:
    acc = r["accuracy_by_depth"]
    ranks = ", ".join(str(layer["rank"]) for layer in r["model_config"]["layers"])
    it = r["costs_flops"]["iteration"]
    return (f"The default main model (pre-trained into the cache in {r['train_seconds']:.0f} s on one thread, "
            f"{r['epochs_run']} epochs): the head on the encoder state is right {100 * acc[0]:.1f}% of the time on "
            f"`{r['split']}`, after layers 1, 1-2, 1-2-3: "
            + ", ".join(f"{100 * a:.1f}%" for a in acc[1:])
            + f"; some path of at most {r['oracle_max_steps']} layers is right for {100 * r['oracle_accuracy']:.1f}% "
            f"(the oracle). Layer costs differ by {max(it) / min(it):.0f}x per iteration (bottleneck rank {ranks}).")


# ---- agents x seeds -----------------------------------------------------------------------------


def agent_seeds_jobs(ctx: Context, part: Part, json_path: Path | None = None) -> list[Job]:
    b = ctx.budget
    base = bench("agent_seeds", "--root", ctx.part_dir(part), "--env", ENV_OF["mnist1d"],
              "--model", ctx.model("mnist1d")["path"], "--timesteps", b["agent_timesteps"])
    if json_path is None:  # one job per run, so two train at once
        return [Job(base + ["--algos", algo, "--seeds", str(seed)]) for algo in b["agent_algos"]
                for seed in b["agent_seeds"]]
    return [Job(base + ["--algos", *b["agent_algos"], "--seeds", *map(str, b["agent_seeds"]), "--json",
                        str(json_path)])]


def collect_agent_seeds(ctx: Context, part: Part, meta: dict[str, Any]) -> None:
    data = json.loads((ctx.part_dir(part) / "agent_seeds.json").read_text())
    write_json(ctx.out / part.outputs(ctx)[0], {"reproduce": meta, **data})
    write_text(ctx.out / part.outputs(ctx)[1], header_md(meta) + render_agent_seeds(data) + "\n")


ALGO_LABEL = {"ppo": "PPO", "dqn": "DQN", "maskable_ppo": "MaskablePPO (`mask_repeats`)", "a2c": "A2C"}


def mean_sd(values: list[float], digits: int) -> str:
    import statistics

    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +- {sd:.{digits}f}"


def render_agent_seeds(d: dict[str, Any]) -> str:
    lines = [f"Agents trained for {next(iter(d['runs'].values()))[0]['timesteps']:,} steps on `agent_train`, each "
             f"evaluated on all {d['n_examples']:,} `{d['split']}` examples, mean +- sd over seeds "
             f"{', '.join(map(str, d['seeds']))}; training took "
             + ", ".join(f"{ALGO_LABEL.get(a, a)} {mean_sd([r['train_wall_seconds'] for r in runs], 0)} s"
                         for a, runs in d["runs"].items()) + " per run.", "",
             "| policy | accuracy | mean compute | difficulty Spearman | agent - threshold at its compute, 95% CI, per seed |",
             "|---|---|---|---|---|"]
    for algo, runs in d["runs"].items():
        ci = ", ".join(f"{r['vs_threshold']['difference']:+.4f} [{r['vs_threshold']['ci95'][0]:+.4f}, "
                       f"{r['vs_threshold']['ci95'][1]:+.4f}]" for r in runs)
        lines.append(f"| {ALGO_LABEL.get(algo, algo)} | {mean_sd([r['accuracy'] for r in runs], 4)} | "
                     f"{mean_sd([r['mean_compute'] for r in runs], 3)} | "
                     f"{mean_sd([r['difficulty_correlation'] for r in runs], 3)} | {ci} |")
    best = d["best_fixed_path"]
    path = ", ".join(map(str, best["params"]["path"]))
    lines += [f"| best fixed path ({path}) | {best['accuracy']:.4f} | {best['mean_compute']:.3f} | | |",
              f"| full depth | {d['full_depth']['accuracy']:.4f} | {d['full_depth']['mean_compute']:.3f} | | |",
              f"| oracle (cheapest correct path) | {d['oracle']['accuracy']:.4f} | {d['oracle']['mean_compute']:.3f} | | |"]
    return "\n".join(lines)


# ---- co-training --------------------------------------------------------------------------------


def cotrain_args(ctx: Context, part: Part) -> list[str]:
    b = ctx.budget
    lrs = [str(v[1]) for v in b["cotrain_variants"]]
    phases = [str(v[2]) for v in b["cotrain_variants"]]
    return ["--timesteps", str(b["cotrain_timesteps"]), "--out-dir", str(ctx.part_dir(part))] + (
        ["--agent-phase", str(b["cotrain_agent_phase"]), "--model-phase", *phases, "--cotrain-lr", *lrs])


def cotrain_jobs(ctx: Context, part: Part) -> list[Job]:
    models = [a for d in ctx.budget["cotrain_datasets"] for a in ("--model", f"{d}={ctx.model(d)['path']}")]
    return [Job(bench("cotrain_vs_frozen", *models, *cotrain_args(ctx, part), "--seed", seed))
            for seed in ctx.budget["cotrain_seeds"]]


def cotrain_final(ctx: Context, part: Part) -> list[Job]:
    return [Job(bench("cotrain_vs_frozen", "--aggregate-only", *cotrain_args(ctx, part), "--json",
                   ctx.part_dir(part) / "summary.json"))]


def collect_cotrain(ctx: Context, part: Part, meta: dict[str, Any]) -> None:
    data = json.loads((ctx.part_dir(part) / "summary.json").read_text())
    data["variants"] = {cotrain_name(lr, phase): label for label, lr, phase in ctx.budget["cotrain_variants"]}
    write_json(ctx.out / part.outputs(ctx)[0], {"reproduce": meta, **data})
    write_text(ctx.out / part.outputs(ctx)[1], header_md(meta) + render_cotrain(data) + "\n")


def cotrain_name(lr: float, phase: int) -> str:
    return f"cotrain_lr{lr:g}_phase{phase}x64"  # cotrain_vs_frozen.variant_name at its --cotrain-every 64


def render_cotrain(d: dict[str, Any]) -> str:
    def cell(row: dict[str, Any], key: str, digits: int, scale: float = 1.0, signed: bool = False) -> str:
        s = row.get(key)
        if not s or s["mean"] is None:
            return ""
        sign = "+" if signed else ""
        return f"{scale * s['mean']:{sign}.{digits}f} ± {scale * s['sd']:.{digits}f}"

    lines = [f"PPO, {d['timesteps']:,} agent timesteps per run, mean ± sd over seeds {', '.join(map(str, d['seeds']))}.",
             "", "| dataset | main model | accuracy | compute | ρ oracle | ρ noise | vs hull (pts) | top path | "
             "model's share (pts) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in d["rows"]:
        name = row["main_model"]
        label = "frozen" if name == "frozen" else f"co-trained, {d['variants'].get(name, name)}"
        share = row["top_path_share"]["mean"]
        lines.append(f"| {row['dataset']} | {label} | {cell(row, 'accuracy', 3)} | {cell(row, 'mean_compute', 3)} | "
                     f"{cell(row, 'difficulty_correlation', 3)} | {cell(row, 'known_difficulty_correlation', 3)} | "
                     f"{cell(row, 'vs_initial_threshold_hull', 2, 100, True)} | {share:.0%} | "
                     f"{cell(row, 'model_effect', 2, 100, True)} |")
    return "\n".join(lines)


# ---- reward-shaping sweep -----------------------------------------------------------------------


def sweep_jobs(ctx: Context, part: Part) -> list[Job]:
    b = ctx.budget
    return [Job(py("train_agent.py", "sweep", "--workers", 2, "--n-trials", b["sweep_trials"], "--timesteps",
                   b["sweep_timesteps"], "--model", ctx.model("mnist1d")["path"], "--run-dir", ctx.part_dir(part)),
                slots=2)]


def collect_sweep(ctx: Context, part: Part, meta: dict[str, Any]) -> None:
    run = ctx.part_dir(part)
    report = json.loads((run / "sweep.json").read_text())
    out_json, out_md, out_png = part.outputs(ctx)
    write_json(ctx.out / out_json, {"reproduce": meta, **report, "figure": out_png})
    write_text(ctx.out / out_md, header_md(meta) + (run / "sweep.md").read_text())
    atomic_copy(run / "sweep.png", ctx.out / out_png)


def render_sweep(d: dict[str, Any]) -> str:
    hv = d["hypervolume"]
    c = d["config"]
    return (f"The committed sweep (`benchmarks/results/sweep_mnist1d.md` / `.json`): {d['counts']['complete']} trials, "
            f"{c['timesteps']:,} steps each, one seed each, {c['workers']} workers. The study took "
            f"{d['study_wall_seconds']:.0f} s from the first trial's start to the last one's end (mean trial "
            f"{d['mean_trial_seconds']:.0f} s), and the whole command {d['reproduce']['wall_seconds']:.0f} s. "
            f"Hypervolume on `test`: Pareto agents' front {hv['test']['agent_front']:.4f}, confidence-threshold "
            f"front {hv['test']['confidence_threshold_front']:.4f}; on `val` (agent front = all trials) "
            f"{hv['val']['agent_front']:.4f} and {hv['val']['confidence_threshold_front']:.4f}.")


# ---- timing -------------------------------------------------------------------------------------


def throughput_jobs(ctx: Context, part: Part) -> list[Job]:
    return [Job(bench("env_throughput", "--model", ctx.model("mnist1d")["path"],
                   *ctx.budget["throughput_args"], "--json", ctx.part_dir(part) / "throughput.json"), slots=2)]


def collect_throughput(ctx: Context, part: Part, meta: dict[str, Any]) -> None:
    data = json.loads((ctx.part_dir(part) / "throughput.json").read_text())
    out_json, out_md = part.outputs(ctx)
    write_json(ctx.out / out_json, {"reproduce": meta, **data})
    write_text(ctx.out / out_md, header_md(meta) + render_throughput_markdown(data) + "\n")


def adaptive_jobs(ctx: Context, part: Part) -> list[Job]:
    agent = ctx.part_dir(PARTS["agent_seeds"]) / f"ppo-{ctx.budget['agent_seeds'][0]}"
    return [Job(bench("adaptive_inference", "--run-dir", agent, "--tau", TAU, "--repeats",
                   ctx.budget["adaptive_repeats"], "--json", ctx.part_dir(part) / "adaptive.json"), slots=2)]


def collect_adaptive(ctx: Context, part: Part, meta: dict[str, Any]) -> None:
    data = json.loads((ctx.part_dir(part) / "adaptive.json").read_text())
    data["agent"] = f"PPO seed-{ctx.budget['agent_seeds'][0]} agent of the agent table"
    out_json, out_md = part.outputs(ctx)
    write_json(ctx.out / out_json, {"reproduce": meta, **data})
    write_text(ctx.out / out_md, header_md(meta) + render_adaptive(data) + "\n")


def render_adaptive(d: dict[str, Any]) -> str:
    rows = {r["policy"]: r for r in d["rows"]}
    agent, full = rows["agent"], rows["full depth"]
    text = (f"`AdaptiveClassifier` with the {d['agent']} classifies the {d['n_examples']:,} `{d['split']}` inputs "
            f"in {agent['time_vs_full_depth']:.2f}x the wall-clock time of full-depth inference at the same batch "
            f"size ({agent['seconds']:.3f} s vs {full['seconds']:.3f} s, accuracy {agent['accuracy']:.4f} vs "
            f"{full['accuracy']:.4f}, one thread, median of {d['repeats']}, "
            "`benchmarks/results/adaptive_inference_cpu.json`)")
    layers = d.get("layers")
    if not layers:
        return text + "."
    # Why the wall-time ratio exceeds the compute ratio: the cheap layer's time per FLOP.
    total_t, total_f = sum(r["seconds"] for r in layers), sum(r["gflops"] for r in layers)
    first, last = layers[0], layers[-1]
    return (text + f", at {agent['mean_compute']:.3f} of the full-depth compute (decisions counted): "
            f"{agent['time_ratio_over_compute_ratio']:.2f}x its compute ratio. Layer {first['layer']} executes "
            f"{first['gflops'] / total_f:.3f} of the full-depth FLOPs but takes {first['seconds'] / total_t:.3f} of "
            f"its time ({first['ms_per_gflop']:.0f} ms per GFLOP against {last['ms_per_gflop']:.0f} for layer "
            f"{last['layer']}).")


def one_dataset(name: str) -> Callable[[Context], list[str]]:
    return lambda ctx: [name]


def no_jobs(ctx: Context, part: Part) -> list[Job]:
    return []


def mnist5k_jobs(ctx: Context, part: Part) -> list[Job]:
    """The MNIST-5k demo: pre-trains its own model (the mnist5k recipe, seed 0), PPO, evaluation."""
    extra = ["--timesteps", ctx.budget["mnist5k_timesteps"]] if ctx.budget.get("mnist5k_timesteps") else []
    # The demo pre-trains its own model, so the run folder is keyed by the recipe version: a new recipe
    # is a new command (the part reruns) and a new folder (nothing stale is reused).
    demo = ctx.part_dir(part) / f"demo-r{dynalay_env.RECIPE_VERSION}"
    return [Job(bench("mnist5k_demo", "--run-dir", demo, "--out", ctx.part_dir(part) / "mnist5k_demo.json",
                   *extra))]


def collect_mnist5k(ctx: Context, part: Part, meta: dict[str, Any]) -> None:
    # The demo's own pretrain.json and report.json carry the model's provenance; the file keeps them.
    data = json.loads((ctx.part_dir(part) / "mnist5k_demo.json").read_text())
    write_json(ctx.out / part.outputs(ctx)[0], {"reproduce": meta, **data})


def _spread(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    return f"{stats['p5']:.3f} / {stats['p50']:.3f} / {stats['p95']:.3f}"


def _rho(stats: dict[str, Any] | None) -> str:
    rho = (stats or {}).get("spearman_with_difficulty")
    return "" if rho is None else f"{rho:.2f}"


def render_mnist5k(d: dict[str, Any]) -> str:
    p, r = d["pretrain"], d["agent_report"]
    acc = p["accuracy_by_depth"]
    oracle_ec = p["episode_compute"]["oracle"]
    lines = [
        f"The demo's main model (`{d['command']}`; pre-training {p['train_seconds']:.0f} s for {p['epochs_run']} "
        f"epochs on one thread, provenance `{p['provenance']}`), on the {p['n_examples']} `{p['split']}` images: "
        f"the head on the encoder state is right {100 * acc[0]:.1f}% of the time, after layers 1, 1-2, 1-2-3 "
        + ", ".join(f"{100 * a:.1f}%" for a in acc[1:])
        + f"; the cheapest correct prefix of 1-2-3 exists for {100 * p['prefix_oracle_accuracy']:.1f}% (prefix "
        f"oracle) and some path of at most {p['oracle_max_steps']} layers is right for "
        f"{100 * p['oracle_accuracy']:.1f}% (path oracle). The path oracle's per-episode compute is "
        f"{_spread(oracle_ec)} (p5 / p50 / p95), Spearman {_rho(oracle_ec)} with difficulty (the share of all "
        "paths that answer wrong).", "",
        "| policy | accuracy | mean compute (decisions counted) | env only | compute p5 / p50 / p95 | "
        "Spearman with difficulty |",
        "|---|---|---|---|---|---|",
        f"| **PPO agent** | {r['accuracy']:.4f} | {r['mean_compute']:.3f} | {r['mean_env_compute']:.3f} "
        f"| {_spread(r.get('episode_compute'))} | {_rho(r.get('episode_compute'))} |"]
    for b in r["baselines"]:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in (b.get("params") or {}).items())
        lines.append(f"| {b['name']} {params} | {b['accuracy']:.4f} | {b['mean_compute']:.3f} | "
                     f"{b['mean_env_compute']:.3f} | {_spread(b.get('episode_compute'))} | "
                     f"{_rho(b.get('episode_compute'))} |")
    vs = r["vs_threshold"]
    verdict = "beats" if vs.get("beats_threshold") else "does not beat"
    lines += ["", f"The agent {verdict} the exact confidence-threshold hull at its own compute: "
              f"{vs['difference']:+.4f} (95% paired bootstrap CI [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]), "
              "decisions counted for both."]
    return "\n".join(lines)


# ---- the MNIST-5k task variants ---------------------------------------------------------------

VARIANT_ENV_IDS = ["DynaLay-MNIST5k-v0", "DynaLay-MNIST5k-NoisyLabels-v0", "DynaLay-MNIST5k-Corrupted-v0",
                   "DynaLay-MNIST5k-Experts-v0"]


def variants_jobs(ctx: Context, part: Part) -> list[Job]:
    return [Job(bench("variants", "--env-ids", *VARIANT_ENV_IDS, "--out", ctx.part_dir(part) / "variants_mnist5k.json"))]


def collect_variants(ctx: Context, part: Part, meta: dict[str, Any]) -> None:
    data = json.loads((ctx.part_dir(part) / "variants_mnist5k.json").read_text())
    out_json, out_md = part.outputs(ctx)
    write_json(ctx.out / out_json, {"reproduce": meta, **data})
    # The benchmark's own markdown, under this pipeline's header (its first line named its command).
    body = (ctx.part_dir(part) / "variants_mnist5k.md").read_text().split("\n", 1)[1]
    write_text(ctx.out / out_md, header_md(meta) + body.lstrip("\n"))


PARTS: dict[str, Part] = {p.name: p for p in [
    pretrain_part("mnist1d"),
    pretrain_part("synthetic", enabled=lambda ctx: "synthetic" in ctx.budget["cotrain_datasets"]),
    Part("agent_seeds", "PPO, DQN, MaskablePPO x seeds on mnist1d, against the baselines on test",
         one_dataset("mnist1d"), agent_seeds_jobs,
         lambda ctx, part: agent_seeds_jobs(ctx, part, ctx.part_dir(part) / "agent_seeds.json"),
         collect_agent_seeds, lambda ctx: ["agent_seeds_mnist1d_cpu.json", "agent_seeds_mnist1d_cpu.md"],
         deps=lambda ctx: ("pretrain_mnist1d",)),
    Part("cotrain_vs_frozen", "frozen against co-trained main model (benchmarks.cotrain_vs_frozen)",
         lambda ctx: list(ctx.budget["cotrain_datasets"]), cotrain_jobs, cotrain_final, collect_cotrain,
         lambda ctx: ["cotrain_vs_frozen_cpu.json", "cotrain_vs_frozen_cpu.md"],
         deps=lambda ctx: tuple(f"pretrain_{d}" for d in ctx.budget["cotrain_datasets"])),
    Part("sweep_mnist1d", "the reward-shaping sweep (train_agent.py sweep, 2 workers)", one_dataset("mnist1d"),
         sweep_jobs, no_jobs, collect_sweep,
         lambda ctx: ["sweep_mnist1d.json", "sweep_mnist1d.md", "sweep_mnist1d.png"], deps=lambda ctx: ("pretrain_mnist1d",)),
    Part("env_throughput", "env steps/s of every face, PPO wall time (timed alone)", one_dataset("mnist1d"),
         throughput_jobs, no_jobs, collect_throughput, lambda ctx: ["env_throughput_cpu.json", "env_throughput_cpu.md"],
         deps=lambda ctx: ("pretrain_mnist1d",)),
    Part("mnist5k_demo", "the demo on mnist5k (real images): pre-train, PPO, evaluation on test",
         lambda ctx: [], mnist5k_jobs, no_jobs, collect_mnist5k, lambda ctx: ["mnist5k_demo.json"]),
    Part("variants_mnist5k", "routing and exit headroom and AUROC of the MNIST-5k variants' default models",
         lambda ctx: list(VARIANT_ENV_IDS), variants_jobs, no_jobs, collect_variants,
         lambda ctx: ["variants_mnist5k.json", "variants_mnist5k.md"]),
    Part("adaptive_inference", "AdaptiveClassifier against full depth, wall clock (timed alone)",
         one_dataset("mnist1d"), adaptive_jobs, no_jobs, collect_adaptive,
         lambda ctx: ["adaptive_inference_cpu.json", "adaptive_inference_cpu.md"], deps=lambda ctx: ("agent_seeds",)),
]}


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def is_current(ctx: Context, part: Part, inputs: dict[str, Any]) -> bool:
    """True when every output of ``part`` exists and its JSON was made from the same ``inputs``."""
    files = [ctx.out / name for name in part.outputs(ctx)]
    if not all(f.is_file() for f in files):
        return False
    try:
        meta = json.loads(files[0].read_text()).get("reproduce", {})
    except (json.JSONDecodeError, AttributeError):
        return False
    stored = {k: meta.get(k) for k in inputs}
    if isinstance(stored.get("commands"), list):
        stored["commands"] = [current_command(c) for c in stored["commands"]]
    return stored == inputs


def needed(names: list[str], ctx: Context) -> list[str]:
    """``names`` and everything they depend on, in PARTS order."""
    want: set[str] = set()

    def add(name: str) -> None:
        if name not in want:
            want.add(name)
            for dep in PARTS[name].deps(ctx):
                add(dep)

    for name in names:
        add(name)
    return [n for n in PARTS if n in want]


class Runner:
    """Runs the parts' jobs ``slots`` at a time, each in its own process on one torch thread. Jobs
    start in queue order; one that needs more slots than are free waits, and so do the jobs behind
    it, so a job timed alone (2 slots) is never starved. A part's final jobs go to the front of the
    queue once its other jobs are done."""

    def __init__(self, ctx: Context, names: list[str], selected: set[str], force: bool, slots: int,
                 command: str) -> None:
        self.ctx, self.names, self.selected, self.force, self.slots = ctx, names, selected, force, slots
        self.command = command
        self.done: set[str] = set()   # current at the end: run now or skipped
        self.ran: set[str] = set()    # run now
        self.final_ids: set[int] = set()  # ids of the final jobs queued (they go first)
        self.failed: set[str] = set()
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def run(self) -> int:
        pending = list(self.names)
        states: dict[str, dict[str, Any]] = {}
        queue: list[tuple[str, Job]] = []
        running: list[tuple[subprocess.Popen, str, Job, Any, float]] = []
        while pending or queue or running:
            for name in list(pending):  # start the parts whose dependencies are done
                part = PARTS[name]
                deps = part.deps(self.ctx)
                if any(d in self.failed for d in deps):
                    print(f"[reproduce] {name}: not run, a part it needs failed", flush=True)
                    self.failed.add(name)
                    pending.remove(name)
                elif all(d in self.done for d in deps):
                    pending.remove(name)
                    state = self.begin(part)
                    if state is not None:
                        states[name] = state
                        queue += [(name, job) for job in state.pop("jobs")]
                        # One-slot jobs of every ready part pack the slots before a job that needs
                        # them all: PARTS order (a stable sort), a part's final job first.
                        queue.sort(key=lambda item: (not self.is_final(item), list(PARTS).index(item[0])))
                        if state["left"] == 0:
                            self.next_stage(name, state, queue)
            free = self.slots - sum(min(job.slots, self.slots) for _, _, job, _, _ in running)
            while queue and min(queue[0][1].slots, self.slots) <= free:
                name, job = queue.pop(0)
                running.append(self.launch(name, job, states[name]))
                free -= min(job.slots, self.slots)
            time.sleep(0.2)
            for item in list(running):
                proc, name, job, log, started = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                log.close()
                state = states[name]
                commit, log_path = state["commits"].pop(id(log))
                commit.close()  # the log file, in place
                state["job_seconds"].append(time.perf_counter() - started)
                if proc.returncode != 0:
                    state["error"] = f"`{command_line(job.argv)}` exited {proc.returncode} (log: {log_path})"
                    state["failed_log"] = log_path
                state["left"] -= 1
                if state["left"] == 0:
                    self.next_stage(name, state, queue)
        return 1 if self.failed else 0

    def is_final(self, item: tuple[str, Job]) -> bool:
        return id(item[1]) in self.final_ids

    def next_stage(self, name: str, state: dict[str, Any], queue: list[tuple[str, Job]]) -> None:
        """After a part's jobs: its next final job, or its results files, or its failure."""
        if "error" in state:
            print(f"[reproduce] {name}: FAILED: {state['error']}", flush=True)
            print(Path(state["failed_log"]).read_text(errors="replace")[-3000:], flush=True)
            self.failed.add(name)
        elif state["final"]:
            job = state["final"].pop(0)
            self.final_ids.add(id(job))
            queue.insert(0, (name, job))
            state["left"] = 1
        else:
            self.finish(PARTS[name], state)

    def begin(self, part: Part) -> dict[str, Any] | None:
        """The part's run state, or None when its results are current."""
        ctx = self.ctx
        try:
            jobs, final = part.jobs(ctx, part), part.final(ctx, part)
            forced = self.force and part.name in self.selected
            if not forced and all(is_cached(d) for d in part.datasets(ctx)):
                if is_current(ctx, part, meta_of(ctx, part, [j.argv for j in jobs + final])):
                    print(f"[reproduce] {part.name}: current, skipped (--force reruns it)", flush=True)
                    self.done.add(part.name)
                    return None
            work = ctx.part_dir(part)
            if forced:
                shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True, exist_ok=True)
        except Exception as exc:  # noqa: BLE001 - one broken part must not stop the others
            print(f"[reproduce] {part.name}: FAILED to start: {type(exc).__name__}: {exc}", flush=True)
            self.failed.add(part.name)
            return None
        print(f"[reproduce] {part.name}: {len(jobs)} job(s), {len(final)} final", flush=True)
        return {"jobs": jobs, "final": list(final), "argv": [j.argv for j in jobs + final], "left": len(jobs),
                "start": time.perf_counter(), "job_seconds": [], "work": work, "launched": 0}

    def launch(self, name: str, job: Job, state: dict[str, Any]) -> tuple[subprocess.Popen, str, Job, Any, float]:
        state["launched"] += 1  # one log per job: parallel jobs would interleave their lines
        state.setdefault("first_launch", time.perf_counter())
        # The log is written to the atomic helper's temporary (visible while the job runs) and put in
        # place when the job is reaped.
        path = state["work"] / f"job{state['launched']}.log"
        commit = contextlib.ExitStack()
        tmp = commit.enter_context(atomic_path(path))
        log = open(tmp, "w")  # noqa: SIM115 - closed when the job is reaped
        state.setdefault("commits", {})[id(log)] = (commit, path)
        log.write(f"$ {command_line(job.argv)}\n")
        log.flush()
        print(f"[reproduce] {name}: $ {command_line(job.argv)}", flush=True)
        proc = subprocess.Popen(job.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return proc, name, job, log, time.perf_counter()

    def finish(self, part: Part, state: dict[str, Any]) -> None:
        ctx = self.ctx
        try:
            meta = {**meta_of(ctx, part, state["argv"]), "part": part.name,
                    "command": f"{self.command} --only {part.name}", "budget": "quick" if ctx.quick else "full",
                    # from its first job's start (not its wait for free slots) to its results files
                    "machine": machine(), "wall_seconds": time.perf_counter() - state.get("first_launch", state["start"]),
                    "job_seconds": state["job_seconds"],
                    "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            part.collect(ctx, part, meta)
        except Exception as exc:  # noqa: BLE001
            print(f"[reproduce] {part.name}: FAILED to collect: {type(exc).__name__}: {exc}", flush=True)
            self.failed.add(part.name)
            return
        print(f"[reproduce] {part.name}: done in {meta['wall_seconds']:.0f} s -> "
              + ", ".join(str(ctx.out / f) for f in part.outputs(ctx)), flush=True)
        self.done.add(part.name)
        self.ran.add(part.name)


def is_cached(name: str) -> bool:
    """Whether the default model of dataset ``name`` (or of the registered env id ``name``) needs no
    pre-training: it is in the user cache, or a matching one ships with the package."""
    experts = name == EXPERTS_ENV_ID
    dataset = load_dataset(dynalay_env.ENV_IDS[name] if name in dynalay_env.ENV_IDS else name)
    cached = (default_expert_model_path if experts else default_model_path)(dataset)
    return cached.is_file() or shipped_model_path(dataset, experts=experts) is not None


# --------------------------------------------------------------------------------------------------
# Generated blocks of the results pages
# --------------------------------------------------------------------------------------------------

BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)

def render_total(d: dict[str, Any]) -> str:
    r = d["reproduce"]
    skipped = f", and found {len(r['parts_skipped'])} part(s) current" if r["parts_skipped"] else ""
    return (f"The last full run (`{current_command(r['command'])}`) took {r['wall_seconds'] / 60:.1f} min on "
            f"{r['machine']['cpu_count']} CPUs ({r['machine']['processor']}), {r['jobs']} jobs at a time: it ran "
            f"{len(r['parts_run'])} part(s){skipped}.")


# Block name -> (results file in --out, renderer of its JSON)
BLOCKS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "reproduce": ("reproduce.json", render_total),
    "pretrain_mnist1d": ("pretrain_mnist1d_cpu.json", render_pretrain),
    "agent_seeds": ("agent_seeds_mnist1d_cpu.json", render_agent_seeds),
    "adaptive_inference": ("adaptive_inference_cpu.json", render_adaptive),
    "sweep_mnist1d": ("sweep_mnist1d.json", render_sweep),
    "cotrain_vs_frozen": ("cotrain_vs_frozen_cpu.json", render_cotrain),
    "env_throughput": ("env_throughput_cpu.json", render_throughput_markdown),
    "mnist5k_demo": ("mnist5k_demo.json", render_mnist5k),
}
MISSING = "_Not generated yet: run `make results` (it runs `.venv/bin/python -m benchmarks reproduce --readme` last)._"


def render_block(name: str, results: Path) -> str:
    """The generated text of block ``name`` from the results files in ``results``."""
    if name not in BLOCKS:
        raise ValueError(f"results block {name!r} is unknown; valid: {', '.join(BLOCKS)}")
    file, render = BLOCKS[name]
    path = results / file
    if not path.is_file():
        return MISSING
    data = json.loads(path.read_text())
    if "reproduce" not in data:  # a file from before reproduce.py: not this pipeline's output
        return MISSING
    return render(data)


def rewrite_readme(text: str, results: Path) -> str:
    """``text`` with every ``<!-- results:NAME -->`` block regenerated from ``results``."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group("name"), results) + "\n" + m.group(4), text)


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="PART", help="run these parts (and what they need)")
    parser.add_argument("--list", action="store_true", help="list the parts and exit")
    parser.add_argument("--quick", action="store_true",
                        help="fewer steps, seeds and trials (checks the pipeline; default --out benchmarks/results/quick)")
    parser.add_argument("--force", action="store_true", help="rerun the selected parts even if their results are current")
    parser.add_argument("--out", default=None, help="results folder (default: benchmarks/results, or .../quick)")
    parser.add_argument("--work", default=None, help="run folders (default: runs/reproduce or runs/reproduce-quick)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once, one torch thread each (default: 2)")
    parser.add_argument("--readme", "--docs", action="store_true",
                        help="only rewrite the generated blocks of the results pages (docs/results.md, "
                             "docs/studies.md, docs/performance.md) from the files in --out")
    parser.add_argument("--pretrain-default", metavar="DATASET", help=argparse.SUPPRESS)  # a part's job
    args = parser.parse_args(argv)
    if args.pretrain_default:
        torch.set_num_threads(1)
        print(json.dumps({k: v for k, v in model_provenance(args.pretrain_default, progress=False).items()
                          if k != "path"}))
        return 0
    if args.list:
        for part in PARTS.values():
            deps = part.deps(Context(RESULTS, Path("runs"), FULL, False))
            deps = f" (needs {', '.join(deps)})" if deps else ""
            print(f"{part.name:<20} {part.help}{deps}")
        return 0
    unknown = [n for n in args.only or [] if n not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; valid: {', '.join(PARTS)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    out = Path(args.out) if args.out else RESULTS / "quick" if args.quick else RESULTS
    if args.readme:
        for page in RESULTS_PAGES:
            write_text(page, rewrite_readme(page.read_text(), ROOT / out if not out.is_absolute() else out))
        print(f"[reproduce] the generated blocks of {', '.join(p.relative_to(ROOT).as_posix() for p in RESULTS_PAGES)} "
              f"regenerated from {out}")
        return 0
    os.chdir(ROOT)
    torch.set_num_threads(1)
    work = Path(args.work) if args.work else Path("runs/reproduce-quick" if args.quick else "runs/reproduce")
    record_by_role(work, "$REPRODUCE_WORK")
    record_by_role(out, "$REPRODUCE_OUT")
    ctx = Context(out=out, work=work, budget=QUICK if args.quick else FULL, quick=args.quick)
    selected = set(args.only or [name for name, part in PARTS.items() if part.enabled(ctx)])
    names = needed(sorted(selected, key=list(PARTS).index), ctx)
    command = "python -m benchmarks reproduce" + (" --quick" if args.quick else "") + (
        f" --out {out}" if args.out else "") + (f" --work {work}" if args.work else "")
    start = time.perf_counter()
    runner = Runner(ctx, names, selected, args.force, args.jobs, command)
    rc = runner.run()
    wall = time.perf_counter() - start
    if rc == 0 and not args.only and runner.ran:  # the whole pipeline's wall time goes on the results page
        write_json(out / "reproduce.json", {"reproduce": {
            "command": command, "wall_seconds": wall, "jobs": args.jobs, "machine": machine(),
            "parts_run": sorted(runner.ran, key=list(PARTS).index),
            "parts_skipped": sorted(runner.done - runner.ran, key=list(PARTS).index),
            "models": {d: {k: v for k, v in m.items() if k != "path"} for d, m in ctx.models.items()},
            "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}})
    print(f"[reproduce] total wall time {wall:.0f} s ({wall / 60:.1f} min), {'FAILED' if rc else 'all parts done'}",
          flush=True)
    return rc
