"""The wheel works outside the repository, and first use is instant (``make wheel-test``, CI).

Builds the project's wheel from a copy of the checkout's files, installs it (non-editable) into a
fresh venv, and from an empty folder outside the repository, with an empty model cache, runs:

1. ``gym.make("DynaLay-MNIST1D-v0")``, a reset and a step, timed from interpreter start, twice,
   each time with an empty model cache (the shipped default model must be used: nothing may be
   pre-trained, the model cache stays empty): first with an empty dataset cache too (a truly fresh
   machine: MNIST-1D's 12,000 signals are generated, a few seconds), then with the dataset cache
   that first run filled (any later first use);
2. ``dynalay train --algo ppo --env DynaLay-Digits-v0 --timesteps 512`` (the console script; the
   hyperparameters are the wheel's package data);
3. ``dynalay evaluate`` on that run;
4. ``python -m train_agent list-datasets`` (the CLI as a module of the installed package).

Every step must succeed, the imported packages must come from the fresh venv, and the first make
with an empty model cache (the second run above) must take under ``--max-seconds`` (default 5). ``--out FILE`` also writes the measured figures as JSON (the
committed ``benchmarks/results/wheel_first_use_cpu.json``).

Dependencies: by default the fresh venv sees the project venv's installed dependencies (torch and
the rest) through a ``.pth`` line, so the check takes a minute, not a torch download; the project
itself comes only from the wheel (the project venv's editable hook is not loaded). ``--deps index``
lets pip install the wheel's dependencies from the package index instead (minutes; on Linux that
brings torch's CUDA build unless the index is the CPU one).

    python -m benchmarks wheel_first_use
    python -m benchmarks wheel_first_use --out benchmarks/results/wheel_first_use_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import command_words
from dynalay_env.atomic import atomic_copy, atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parent.parent

#: Run in the fresh venv from an empty folder: the first make, timed from interpreter start.
FIRST_MAKE = r"""
import time
start = time.perf_counter()
import json, os, sys
import gymnasium as gym
import dynalay_env
env = gym.make("DynaLay-MNIST1D-v0")
made = time.perf_counter() - start
obs, info = env.reset(seed=0)
obs, reward, terminated, truncated, info = env.step(1)
print(json.dumps({"make_seconds": made, "step_seconds": time.perf_counter() - start,
                  "dynalay_env_file": dynalay_env.__file__, "version": dynalay_env.__version__,
                  "provenance": env.unwrapped.core.provenance, "obs_shape": list(obs.shape),
                  "path": [int(a) for a in info["path"]], "reward": float(reward)}))
"""


def project_files(root: Path = ROOT) -> list[str]:
    """The checkout's files as git sees them: tracked plus untracked-but-not-ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f and (root / f).is_file()]


def build_wheel(work: Path, python: str = sys.executable) -> Path:
    """Build the wheel from a copy of the project files (the checkout gets no build folders)."""
    source = work / "source"
    for name in project_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(ROOT / name, source / name)
    dist = work / "dist"
    run([python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)], cwd=work)
    wheels = sorted(dist.glob("dynalay_gym-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one dynalay_gym wheel in {dist}, found {[w.name for w in wheels]}")
    return wheels[0]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """Run ``cmd``; on failure raise with its output. Returns stdout."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def make_venv(venv: Path, wheel: Path, deps: str) -> Path:
    """A fresh venv with ``wheel`` installed (non-editable); returns its interpreter."""
    run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    python = venv / "bin" / "python"
    if deps == "venv":
        # The project venv's dependencies, as a plain path: its .pth files (the editable hook of this
        # project) are not processed, so the project can only come from the wheel.
        site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=venv.parent).strip())
        atomic_write_text(site / "zz_project_dependencies.pth", sysconfig.get_paths()["purelib"] + "\n")
        run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], cwd=venv.parent)
        # The wheel's own requirements are met (pip check also judges the fresh venv's seed packages).
        check = subprocess.run([str(python), "-m", "pip", "check"], cwd=venv.parent, capture_output=True, text=True)
        unmet = [line for line in check.stdout.splitlines() if line.lower().startswith("dynalay-gym")]
        if unmet:
            raise RuntimeError("the wheel's requirements are not met: " + "; ".join(unmet))
    else:
        run([str(python), "-m", "pip", "install", "-q", str(wheel)], cwd=venv.parent, timeout=3600)
    return python


def check(args: argparse.Namespace) -> dict[str, Any]:
    """Build, install and exercise the wheel; returns the measured figures."""
    with tempfile.TemporaryDirectory(prefix="dynalay-wheel-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        wheel = build_wheel(work)
        names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True,
                               check=True).stdout
        for needed in ("agents/hyperparams/ppo.yml", "dynalay_env/models/manifest.json", "train_agent.py"):
            if needed not in names:
                raise AssertionError(f"the wheel has no {needed}")
        if any(line.split()[0].startswith("benchmarks/") for line in names.splitlines() if line.strip()):
            raise AssertionError("the wheel ships benchmarks/, which belongs to the repository only")
        python = make_venv(work / "venv", wheel, args.deps)
        outside = work / "elsewhere"
        outside.mkdir()
        datasets_cache = work / "empty-dataset-cache"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DYNALAY_HYPERPARAMS_DIR")}
        env.update({"DYNALAY_CACHE_DIR": str(datasets_cache), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        installed = time.perf_counter() - start
        runs = {}
        for name in ("fresh_machine", "empty_model_cache"):
            cache = work / f"empty-model-cache-{name}"
            cache.mkdir()
            env["DYNALAY_MODEL_CACHE"] = str(cache)
            runs[name] = json.loads(run([str(python), "-c", FIRST_MAKE], cwd=outside, env=env).strip().splitlines()[-1])
            if not Path(runs[name]["dynalay_env_file"]).resolve().is_relative_to((work / "venv").resolve()):
                raise AssertionError(f"dynalay_env was imported from {runs[name]['dynalay_env_file']}, not the fresh venv")
            if any(cache.iterdir()):
                raise AssertionError(f"the first make wrote to the empty model cache: {sorted(p.name for p in cache.iterdir())}")
            if list(datasets_cache.glob("mnist1d_*.npz")):
                raise AssertionError("the first make generated MNIST-1D instead of reading the wheel's shipped copy")
        first = runs["empty_model_cache"]
        dynalay = str(work / "venv" / "bin" / "dynalay")
        t = time.perf_counter()
        run([dynalay, "train", "--algo", "ppo", "--env", "DynaLay-Digits-v0", "--timesteps", "512",
             "--run-dir", "runs/p", "--no-progress"], cwd=outside, env=env)
        train_seconds = time.perf_counter() - t
        t = time.perf_counter()
        report = run([dynalay, "evaluate", "--run-dir", "runs/p", "--split", "test", "--n-boot", "50",
                      "--no-figures"], cwd=outside, env=env)
        evaluate_seconds = time.perf_counter() - t
        if not (outside / "runs" / "p" / "report.json").is_file():
            raise AssertionError(f"dynalay evaluate wrote no report.json:\n{report}")
        datasets = run([str(python), "-m", "train_agent", "list-datasets"], cwd=outside, env=env).split()
        if "mnist1d" not in datasets:
            raise AssertionError(f"python -m train_agent list-datasets printed {datasets}")
        manifest = json.loads((Path(first["dynalay_env_file"]).parent / "models" / "manifest.json").read_text())
        shipped = manifest["models"]["mnist1d"]["provenance"]
        if first["provenance"] != shipped:
            raise AssertionError(f"the env used model {first['provenance']}, not the shipped {shipped}")
        return {"wheel": wheel.name, "wheel_bytes": wheel.stat().st_size, "deps": args.deps,
                "build_and_install_seconds": installed, "first_make_seconds": first["make_seconds"],
                "first_step_seconds": first["step_seconds"], "max_seconds": args.max_seconds,
                "fresh_machine_first_make_seconds": runs["fresh_machine"]["make_seconds"],
                "note": ("fresh_machine_first_make_seconds: a fresh wheel install with empty model and dataset "
                         "caches (the model and the MNIST-1D signals read from the wheel's shipped copies); "
                         "first_make_seconds: the same again in a second process. Both from interpreter start, "
                         "imports included."),
                "model_provenance": first["provenance"], "package_version": first["version"],
                "train_512_steps_seconds": train_seconds, "evaluate_seconds": evaluate_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deps", choices=("venv", "index"), default="venv",
                        help="where the fresh venv's dependencies come from (default: %(default)s, see above)")
    parser.add_argument("--max-seconds", type=float, default=5.0,
                        help="the first gym.make must take less (default: %(default)s)")
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    figures = check(args)
    print(json.dumps(figures, indent=2))
    slowest = max(figures["first_make_seconds"], figures["fresh_machine_first_make_seconds"])
    if slowest >= args.max_seconds:
        print(f"FAIL: the first gym.make took {slowest:.2f} s (limit {args.max_seconds} s)")
        return 1
    if args.out:
        import torch

        figures["command"] = " ".join(command_words("wheel_first_use")) + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        figures["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                              "cpu_count": os.cpu_count(), "python": platform.python_version(),
                              "torch": torch.__version__, "load_average": list(os.getloadavg())}
        figures["finished_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        atomic_write_json(args.out, figures)
    print(f"wheel OK: first gym.make {figures['first_make_seconds']:.2f} s from an empty cache, outside the repo")
    return 0
