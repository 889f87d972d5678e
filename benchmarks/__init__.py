"""The project's benchmarks and studies, one module each, behind one entry point.

    python -m benchmarks --list                 # every benchmark, with its one-line summary
    python -m benchmarks NAME --help            # one benchmark's options
    python -m benchmarks NAME [ARGS ...]        # run it

Run from the repository root: the package is part of the repository, not of the wheel. Each module
has a ``main(argv)`` that parses ``argv`` (a list of strings) and returns an exit status (None = 0).
Results files go to ``benchmarks/results/``; each records the command that wrote it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: The folder of the benchmark modules.
PACKAGE_DIR = Path(__file__).resolve().parent
#: How a results file names this entry point (the interpreter written as ``python``).
ENTRY_POINT: tuple[str, ...] = ("python", "-m", "benchmarks")


def available() -> list[str]:
    """The benchmark names, sorted: every module of this package but the entry point itself."""
    return sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if not p.stem.startswith("_"))


def summary(name: str) -> str:
    """The first paragraph of benchmark ``name``'s module docstring on one line (read without
    importing the module, so listing them imports nothing heavy)."""
    doc = ast.get_docstring(ast.parse((PACKAGE_DIR / f"{name}.py").read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def command_words(name: str) -> list[str]:
    """The words that start benchmark ``name`` in a results file: ``python -m benchmarks NAME``."""
    return [*ENTRY_POINT, name]


def subprocess_argv(name: str) -> list[str]:
    """The argv that runs benchmark ``name`` in a child process of this interpreter (run it with the
    repository root as the working directory)."""
    return [sys.executable, "-m", "benchmarks", name]


def run_cli(args: Sequence[str]) -> int:
    """Run the project's CLI as a user runs it (``python -m train_agent ARGS``) in a child process of
    this interpreter, with this process's environment and working directory; returns its exit status."""
    return subprocess.run([sys.executable, "-m", "train_agent", *map(str, args)], check=False).returncode
