"""The import rules of ``agents`` and the CLI that import-linter cannot see (its contracts, in
pyproject.toml, run in ``make lint`` / ``make test``): a function-level import is for an optional
dependency only, and says so."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Dependencies imported where they are used, with a comment on the line: the optional extras
#: (Ray, Optuna with SQLAlchemy, Minari), and matplotlib, whose backend is chosen when a figure is drawn.
DEFERRABLE: frozenset[str] = frozenset({"ray", "optuna", "sqlalchemy", "minari", "matplotlib"})


def function_level_imports(path: Path) -> list[tuple[int, str, str]]:
    """``(line, top-level module, source line)`` of every import inside a function of ``path``."""
    source = path.read_text()
    lines = source.splitlines()
    found = {}
    for function in ast.walk(ast.parse(source)):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    module = node.names[0].name
                elif isinstance(node, ast.ImportFrom):
                    module = "." * node.level + (node.module or "")
                else:
                    continue
                found[node.lineno] = (node.lineno, module.split(".")[0] or ".", lines[node.end_lineno - 1])
    return sorted(found.values())


def checked_files() -> list[Path]:
    return [*sorted((REPO / "agents").glob("*.py")), REPO / "train_agent.py"]


def test_functions_import_only_optional_dependencies() -> None:
    bad = [f"{path.relative_to(REPO)}:{line}: {module}" for path in checked_files()
           for line, module, _ in function_level_imports(path) if module not in DEFERRABLE]
    assert bad == [], f"imports to move to the module's top: {bad}"


def test_every_deferred_import_says_why() -> None:
    silent = [f"{path.relative_to(REPO)}:{line}" for path in checked_files()
              for line, module, text in function_level_imports(path)
              if "#" not in text and module != "matplotlib"]
    assert silent == [], f"deferred imports without a comment: {silent}"


def test_the_rule_sees_a_deferred_project_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from agents.curves import exit_flops\n    import ray  # optional\n")
    assert function_level_imports(module) == [(2, "agents", "    from agents.curves import exit_flops"),
                                               (3, "ray", "    import ray  # optional")]
