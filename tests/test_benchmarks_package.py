"""``benchmarks`` is a package with one entry point, ``python -m benchmarks NAME [ARGS]``: every module
is reachable through it, parses the argv it is given, and none edits ``sys.path`` or imports the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import benchmarks
from benchmarks.__main__ import main

REPO = Path(__file__).resolve().parent.parent
MODULES = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.stem.startswith("_"))


def test_the_entry_point_lists_every_benchmark_module_with_its_summary():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--list"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0]: line.split(maxsplit=1)[1] for line in out.stdout.splitlines()}
    assert sorted(listed) == [p.stem for p in MODULES] == benchmarks.available()
    assert {"reproduce", "introspection", "env_throughput", "agent_seeds"} <= set(listed)
    assert all(summary.strip() for summary in listed.values())


def test_an_unknown_benchmark_names_the_valid_ones(capsys):
    assert main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nope'" in err and "reproduce" in err and "introspection" in err
    assert main([]) == 2  # no name: the usage and the list, and an error status


def test_the_entry_point_hands_the_arguments_to_the_benchmark(capsys):
    assert main(["reproduce", "--list"]) == 0
    assert capsys.readouterr().out.split()[0] == "pretrain_mnist1d"
    with pytest.raises(SystemExit) as exc:  # argparse's own error, from the benchmark's parser
        main(["reproduce", "--no-such-option"])
    assert exc.value.code == 2
    assert "usage: python -m benchmarks reproduce" in capsys.readouterr().err


def test_help_runs_from_the_repository_root():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "agent_seeds", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m benchmarks agent_seeds")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_a_benchmark_module_has_main_argv_and_no_second_entry_point(path):
    source = path.read_text()
    tree = ast.parse(source)
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains and [a.arg for a in mains[0].args.args] == ["argv"], f"{path.name}: expected def main(argv=None)"
    assert "sys.path" not in source, f"{path.name} edits sys.path: import the project as a package"
    assert '__name__ == "__main__"' not in source, f"{path.name}: run it as `python -m benchmarks {path.stem}`"
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        assert not any(n.split(".")[0] == "train_agent" for n in names), (
            f"{path.name}:{node.lineno} imports the CLI: shared code lives in agents, or run the CLI as a user does")


def test_the_wheel_leaves_the_benchmarks_out():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not any(p.split(".")[0] == "benchmarks" for p in setuptools["packages"])
