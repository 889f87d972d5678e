"""Every command line the README shows (and the CLI's own ``--help`` examples) parses as written.

Each ``bash`` block of README.md is read as a user would paste it: ``\\`` continuations joined,
``#`` comments dropped. Commands of ``train_agent.py`` are parsed by its parser and their options
checked by the same code that checks them before a run (ranges of a sweep, env options of a
training run); ``python -m rl_zoo3.train`` and ``benchmarks/*.py`` lines are parsed by those programs'
own argparse parsers, stopped right after parsing. Nothing is trained here. The commands that need no
server and finish in seconds (``--help``, ``list-datasets``, ``evaluate`` and ``evaluate --validate``
on a tiny run) also run.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import train_agent
from tests.agent_fixtures import CLI, REPO, copy_run
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)

README = REPO / "README.md"
#: The one interpreter the README uses (the venv that `make` builds).
PYTHON = ".venv/bin/python"
#: The RLlib venv's interpreter and Ray's CLI (`make test-rllib` builds it: ray pins its own gymnasium).
RLLIB_PYTHON, RAY = ".venv-rllib/bin/python", ".venv-rllib/bin/ray"
#: Programs a README command may start with; a bare `python` is not one of them.
PROGRAMS = {PYTHON, RLLIB_PYTHON, RAY, "make", "tensorboard"}


def commands_in(text: str, fence: str = "```bash") -> list[str]:
    """The command lines of every ``fence`` block of ``text``: continuations joined, comments and
    blank lines dropped."""
    commands: list[str] = []
    for block in re.findall(re.escape(fence) + r"\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(shlex.join(tokens))
    return commands


def docstring_commands() -> list[str]:
    """The ``python train_agent.py ...`` examples of ``train_agent.py --help``."""
    text = train_agent.__doc__ or ""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [shlex.join(shlex.split(line, comments=True)) for line in joined.splitlines()
            if line.strip().startswith("python train_agent.py")]


README_COMMANDS = commands_in(README.read_text())


class Parsed(Exception):
    """Raised by the patched ``ArgumentParser.parse_args``: carries the namespace, stops the program."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def parse_only(program: Callable[[], Any], argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Run ``program()`` (which parses ``sys.argv`` with argparse) only up to its parse; a parse
    error fails the test with argparse's message."""
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(Parsed) as parsed:
        program()
    return parsed.value.namespace


def check_train_agent(argv: list[str]) -> argparse.Namespace:
    """Parse with the CLI's parser and run the option checks a command runs before it starts work."""
    args = train_agent.parse_args(argv)
    if args.command == "train":
        config = train_agent._train_config(args)
        config.check_options()
        config.check_cotrain()
    elif args.command == "sweep":
        train_agent._sweep_config(args).validate()
    return args


def module_main(path: Path) -> Callable[[], Any]:
    spec = importlib.util.spec_from_file_location(f"readme_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass in the module looks its module up there
    spec.loader.exec_module(module)
    return module.main


def test_the_readme_has_commands_of_every_kind():
    """Guards the parser of this module: if the README's blocks stop being found, the tests below
    would pass on nothing."""
    starts = {tuple(shlex.split(c)[:2]) for c in README_COMMANDS}
    assert (PYTHON, "train_agent.py") in starts and (PYTHON, "-m") in starts and ("make", "test") in starts
    assert any(c.startswith(f"{PYTHON} benchmarks/") for c in README_COMMANDS)
    assert any("--wrong-reward -1.5,0" in c for c in README_COMMANDS)  # a negative range, as a user types it


@pytest.mark.parametrize("command", README_COMMANDS)
def test_readme_command_uses_the_one_interpreter(command):
    program = shlex.split(command)[0]
    assert program in PROGRAMS, f"README command {command!r} starts with {program!r}; use {PYTHON}"


@pytest.mark.parametrize("command", [c for c in README_COMMANDS if c.startswith(RAY)])
def test_readme_ray_commands_start_or_stop_a_cluster_node(command):
    tokens = shlex.split(command)[1:]
    assert tokens[0] in {"start", "stop"}, f"README command {command!r}: expected `ray start` or `ray stop`"
    if tokens[0] == "start":
        assert "--head" in tokens or any(t.startswith("--address=") for t in tokens), command


@pytest.mark.parametrize("command", [c for c in README_COMMANDS if c.startswith((PYTHON, RLLIB_PYTHON))])
def test_readme_command_parses(command, monkeypatch):
    tokens = shlex.split(command)[1:]
    if tokens[0] == "train_agent.py":
        check_train_agent(tokens[1:])
    elif tokens[:2] == ["-m", "rl_zoo3.train"]:
        from rl_zoo3.train import train

        args = parse_only(train, ["rl_zoo3.train", *tokens[2:]], monkeypatch)
        assert args.algo == "ppo" and args.env.startswith("DynaLay-")
        assert (REPO / args.conf_file).is_file()
    elif tokens[0].startswith(("benchmarks/", "examples/")):
        path = REPO / tokens[0]
        assert path.is_file(), f"README runs {tokens[0]}, which does not exist"
        parse_only(module_main(path), [str(path), *tokens[1:]], monkeypatch)
    else:
        pytest.fail(f"README command {command!r}: no parser known for it; teach this test")


@pytest.mark.parametrize("command", docstring_commands())
def test_help_examples_parse(command):
    check_train_agent(shlex.split(command)[2:])


def test_help_examples_keep_their_line_continuations():
    """A lost ``\\\\`` in the docstring joins two example lines into one (Python eats ``\\`` + newline)."""
    assert len(docstring_commands()) >= 8
    for line in (train_agent.__doc__ or "").splitlines():
        assert len(line) <= 120, f"`train_agent.py --help` example line lost its continuation: {line!r}"


def test_readme_names_what_ci_sets_besides_make_test():
    """The README says what CI runs: `make test`, plus every variable that .ci/run exports."""
    exported = re.findall(r"^export (\w+)=", (REPO / ".ci" / "run").read_text(), flags=re.M)
    assert exported
    text = README.read_text()
    for name in exported:
        assert name in text, f".ci/run exports {name}, which the README's account of CI leaves out"


# ---- the quick ones also run ---------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["list-datasets"], ["sweep", "--help"]])
def test_quick_commands_run_as_a_user_runs_them(argv):
    result = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and not result.stderr.strip()
    if argv == ["list-datasets"]:
        assert {"digits", "mnist1d", "synthetic"} <= set(result.stdout.split())


def test_readme_evaluate_commands_run_on_a_tiny_run(tmp_path, capsys, monkeypatch):
    """The README's `evaluate` lines, run as written (bar a cheaper bootstrap) on a copy of a tiny run
    placed where they point."""
    evaluate = [shlex.split(c)[2:] for c in README_COMMANDS
                if c.startswith(f"{PYTHON} train_agent.py evaluate") and "runs/ppo " in c + " "]
    assert [a[-1] for a in evaluate] == ["test", "--validate"], evaluate
    monkeypatch.chdir(tmp_path)
    copy_run(tmp_path / "runs" / "ppo")
    for argv in evaluate:
        extra = [] if "--validate" in argv else ["--n-boot", "50", "--no-figures"]
        code = train_agent.main(argv + extra)
        out = capsys.readouterr()
        assert code == 0, out.err
    assert "VALID" in out.out and "MISMATCH" not in out.out
    shutil.rmtree(tmp_path / "runs")
