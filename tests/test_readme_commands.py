"""Every command line the README and the newcomer's documentation pages show (and the CLI's own
``--help`` examples) parses as written, and the README's quick start prints what it says it prints.

Each ``bash`` block of README.md and of :data:`DOC_PAGES` is read as a user would paste it: ``\\``
continuations joined, ``#`` comments dropped. Commands of ``train_agent.py`` (or the installed
``dynalay`` command) are parsed by its parser and their options checked by the same code that checks
them before a run (ranges of a sweep, env options of a training run); ``python -m rl_zoo3.train``,
``python -m benchmarks NAME`` and ``examples/*.py`` lines are parsed by those programs' own argparse
parsers, stopped right after parsing; ``pip install`` lines by pip's own parser, their extras checked against pyproject.toml;
``make`` targets against the Makefile. Nothing is trained here. The commands that need no server and
finish in seconds (``--help``, ``list-datasets``, ``python -c``, ``evaluate`` and ``evaluate
--validate`` on a tiny run) also run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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
from benchmarks.__main__ import main as benchmarks_main
from tests.agent_fixtures import CLI, REPO, copy_run
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)

README = REPO / "README.md"
#: The documentation pages whose commands are checked with the README's: the newcomer's path and
#: the guides and results pages that hold what the README used to.
DOC_PAGES: tuple[Path, ...] = tuple(REPO / "docs" / name for name in (
    "installation.md", "getting-started.md", "training.md", "cotraining.md", "results.md",
    "studies.md", "performance.md", "snippets/sweep.md"))
#: The one interpreter the README uses (the venv that `make` builds).
PYTHON = ".venv/bin/python"
#: The RLlib venv's interpreter and Ray's CLI (`make test-rllib` builds it: ray pins its own gymnasium).
RLLIB_PYTHON, RAY = ".venv-rllib/bin/python", ".venv-rllib/bin/ray"
#: The installed package's command (``[project.scripts]``), the same program as ``train_agent.py``.
CONSOLE_SCRIPT = "dynalay"
#: Programs a command may start with. A bare ``python`` only on the installation page, where it is
#: the interpreter of the user's own environment.
PROGRAMS = {PYTHON, RLLIB_PYTHON, RAY, "make", "tensorboard", "git", "cd", "pip", CONSOLE_SCRIPT}
#: The README must open its commands with these two (the set-up that runs the main job, the tests).
SETUP_COMMANDS = ["make demo", "make test"]
#: The README's length limit (characters): a landing page, not a lab notebook.
README_MAX_CHARS = 12_000


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
#: ``(page, command)`` for every command of the README and :data:`DOC_PAGES`.
PAGE_COMMANDS: list[tuple[str, str]] = [(path.relative_to(REPO).as_posix(), command)
                                        for path in (README, *DOC_PAGES) for command in commands_in(path.read_text())]
ALL_COMMANDS = [command for _, command in PAGE_COMMANDS]


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


def test_the_pages_have_commands_of_every_kind():
    """Guards the parser of this module: if the pages' blocks stop being found, the tests below
    would pass on nothing."""
    assert all(path.is_file() for path in DOC_PAGES), [p.name for p in DOC_PAGES if not p.is_file()]
    starts = {tuple(shlex.split(c)[:2]) for c in ALL_COMMANDS}
    assert (PYTHON, "train_agent.py") in starts and (PYTHON, "-m") in starts and ("make", "test") in starts
    assert ("pip", "install") in starts and ("git", "clone") in starts
    assert any(c.startswith(f"{PYTHON} -m benchmarks ") for c in ALL_COMMANDS)
    scripts = [c for c in ALL_COMMANDS if re.search(r"\bbenchmarks/\w+\.py\b", c)]
    assert not scripts, f"run a benchmark as `python -m benchmarks NAME`, not as a file: {scripts}"
    assert any("--wrong-reward -1.5,0" in c for c in ALL_COMMANDS)  # a negative range, as a user types it
    assert any(c.startswith(f"{PYTHON} train_agent.py train") for c in README_COMMANDS)


def test_the_readme_opens_with_the_two_set_up_commands():
    assert README_COMMANDS[:2] == SETUP_COMMANDS, f"the README's first commands are {README_COMMANDS[:2]}"
    text = README.read_text()
    assert text.index("make demo") < text.index("```python"), "the set-up commands come before any code"


def test_the_readme_is_a_landing_page():
    """At most 12,000 characters, in the order of a landing page: what it is (with the paper),
    the GIF, install, quick start with its expected output, the env table, the headline figure
    with a summary, links into the docs."""
    text = README.read_text()
    assert len(text) <= README_MAX_CHARS, f"README.md has {len(text):,} characters; at most {README_MAX_CHARS:,}"
    first_paragraph = text.split("\n\n")[1]
    assert "arxiv.org/abs/2312.12781" in first_paragraph and "Gymnasium" in first_paragraph
    order = ["arxiv.org", "make demo", "docs/assets/agent.gif", "## Install", "## Quick start", "```text",
             "## The environments", "## What the studies found", ".png)", "## Documentation"]
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions), dict(zip(order, positions, strict=True))
    for path in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+|[A-Z]+[A-Za-z]*\.(?:md|cff)|LICENSE)(?:#[^)]*)?\)", text):
        assert (REPO / path).is_file(), f"README links to {path}, which does not exist"


def test_the_readme_says_which_torch_build_pip_gives():
    text = README.read_text()
    assert "CUDA build" in text and "--index-url https://download.pytorch.org/whl/cpu" in text
    spec = re.search(r"^TORCH_SPEC \?= (\S+)$", (REPO / "Makefile").read_text(), flags=re.M)
    assert spec is not None and f"pip install {spec.group(1)} --index-url" in text


def test_the_readme_quick_start_prints_its_expected_output(tmp_path):
    """The README's Python quick start, run as a user runs it (an empty model cache: the shipped
    default model), prints the ``text`` block that follows it."""
    text = README.read_text()
    section = text[text.index("## Quick start"):text.index("## The environments")]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S)
    expected = re.search(r"```text\n(.*?)```", section, flags=re.S)
    assert code and expected, "the quick start needs a python block and a text block of its output"
    assert len(code.group(1).strip().splitlines()) <= 10
    env = {**os.environ, "DYNALAY_MODEL_CACHE": str(tmp_path / "models"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code.group(1)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected.group(1), f"the quick start printed {out.stdout!r}"
    assert "pre-training" not in out.stderr and not (tmp_path / "models").exists()


@pytest.mark.parametrize("page,command", PAGE_COMMANDS)
def test_a_command_uses_the_one_interpreter(page, command):
    program = shlex.split(command)[0]
    assert program in PROGRAMS or (program == "python" and page == "docs/installation.md"), (
        f"{page}: command {command!r} starts with {program!r}; use {PYTHON}")


@pytest.mark.parametrize("page,command", [(p, c) for p, c in PAGE_COMMANDS if c.split()[0] == "make"])
def test_make_commands_name_a_target(page, command):
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))
    for target in shlex.split(command)[1:]:
        assert target in targets, f"{page}: `make {target}` is no target of the Makefile"


@pytest.mark.parametrize("page,command", [(p, c) for p, c in PAGE_COMMANDS if c.split()[0] in ("pip", "git")])
def test_pip_and_git_commands_are_valid(page, command):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    tokens = shlex.split(command)
    if tokens[0] == "git":
        assert tokens[1] == "clone" and tokens[2] == project["urls"]["Source"] + ".git", command
        return
    from pip._internal.commands import create_command

    options, requirements = create_command("install").parse_args(tokens[2:])
    requirements = [*requirements, *options.editables]
    assert requirements, command
    for requirement in requirements:
        extras = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", requirement)
        if extras:
            unknown = set((extras.group(1) or "").split(",")) - {""} - set(project["optional-dependencies"])
            assert not unknown, f"{page}: {command!r} names extras {unknown} that pyproject.toml lacks"
        elif requirement.startswith("torch"):
            spec = re.search(r"^TORCH_SPEC \?= (\S+)$", (REPO / "Makefile").read_text(), flags=re.M)
            assert spec is not None and requirement == spec.group(1), f"{page}: {requirement} != the Makefile's torch"
        else:
            assert requirement == "optuna-dashboard", f"{page}: {command!r} installs {requirement}; teach this test"


@pytest.mark.parametrize("page,command", [(p, c) for p, c in PAGE_COMMANDS if c.startswith("python -c ")])
def test_python_one_liners_run(page, command, tmp_path):
    env = {**os.environ, "DYNALAY_MODEL_CACHE": str(tmp_path / "models"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"{page}: {command!r} failed:\n{out.stderr}"


@pytest.mark.parametrize("command", [c for c in ALL_COMMANDS if c.startswith(RAY)])
def test_ray_commands_start_or_stop_a_cluster_node(command):
    tokens = shlex.split(command)[1:]
    assert tokens[0] in {"start", "stop"}, f"README command {command!r}: expected `ray start` or `ray stop`"
    if tokens[0] == "start":
        assert "--head" in tokens or any(t.startswith("--address=") for t in tokens), command


@pytest.mark.parametrize("command", sorted({c for c in ALL_COMMANDS if c.startswith((PYTHON, RLLIB_PYTHON,
                                                                                     CONSOLE_SCRIPT + " "))}))
def test_command_parses(command, monkeypatch):
    tokens = shlex.split(command)[1:]
    if command.startswith(CONSOLE_SCRIPT + " "):
        check_train_agent(tokens)
    elif tokens[0] == "train_agent.py":
        check_train_agent(tokens[1:])
    elif tokens[:2] == ["-m", "rl_zoo3.train"]:
        from rl_zoo3.train import train

        args = parse_only(train, ["rl_zoo3.train", *tokens[2:]], monkeypatch)
        assert args.algo == "ppo" and args.env.startswith("DynaLay-")
        assert (REPO / args.conf_file).is_file(), f"{args.conf_file} does not exist"
    elif tokens[:3] == ["-m", "benchmarks", "--list"]:
        assert benchmarks_main(tokens[2:]) == 0
    elif tokens[:2] == ["-m", "benchmarks"]:
        parse_only(lambda: benchmarks_main(tokens[2:]), ["python -m benchmarks", *tokens[2:]], monkeypatch)
    elif tokens[0].startswith("examples/"):
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


def test_contributing_names_what_ci_runs():
    """CONTRIBUTING.md says what CI runs: every make target and every variable that .ci/run sets."""
    ci = (REPO / ".ci" / "run").read_text()
    exported = re.findall(r"^export (\w+)=", ci, flags=re.M)
    targets = re.findall(r"^make ([\w-]+)", ci, flags=re.M)
    assert exported and {"docs", "test", "wheel-test"} <= set(targets)
    text = (REPO / "CONTRIBUTING.md").read_text()
    for name in exported + [f"make {t}" for t in targets]:
        assert name in text, f".ci/run runs or sets {name}, which CONTRIBUTING.md's account of CI leaves out"


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
    evaluate = [shlex.split(c)[2:] for c in dict.fromkeys(ALL_COMMANDS)
                if c.startswith(f"{PYTHON} train_agent.py evaluate") and "runs/ppo " in c + " "]
    assert sorted(a[-1] for a in evaluate) == ["--validate", "test"], evaluate
    monkeypatch.chdir(tmp_path)
    copy_run(tmp_path / "runs" / "ppo")
    for argv in evaluate:
        extra = [] if "--validate" in argv else ["--n-boot", "50", "--no-figures"]
        code = train_agent.main(argv + extra)
        out = capsys.readouterr()
        assert code == 0, out.err
    assert "VALID" in out.out and "MISMATCH" not in out.out
    shutil.rmtree(tmp_path / "runs")
