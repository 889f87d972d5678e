"""docs/design.md is in the repository, names what the code has, and nothing points to a design
document elsewhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

import dynalay_env
from dynalay_env.datasets import SPLITS
from dynalay_env.options import OBSERVATION_GROUPS
from dynalay_env.rewards import REWARDS

REPO = Path(__file__).resolve().parent.parent
DESIGN = REPO / "docs" / "design.md"


def test_the_readme_links_the_design_page():
    assert DESIGN.is_file()
    assert "](docs/design.md)" in (REPO / "README.md").read_text()


def test_the_design_page_names_what_the_code_has():
    text = DESIGN.read_text()
    missing = [f"`{name}`" for name in (*OBSERVATION_GROUPS, *SPLITS, *REWARDS, "RECIPE_VERSION", "model_provenance")
               if f"`{name}`" not in text]
    assert missing == [], f"docs/design.md does not describe {missing}"
    for module in sorted((REPO / "dynalay_env").glob("*.py")):
        if module.name != "__init__.py":
            assert re.search(rf"^\s+{re.escape(module.name)}\s", text, re.M), f"the house lacks {module.name}"
    assert dynalay_env.RECIPE_VERSION >= 1


def repository_text_files() -> list[Path]:
    """Source, docs and config files of the repository (virtual env, git and run folders skipped)."""
    skip = {".venv", ".venv-rllib", ".git", "runs", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache"}
    files = []
    for folder, subfolders, names in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if d not in skip]
        files += [Path(folder, n) for n in names if Path(n).suffix in {".py", ".md", ".toml", ".yml", ".txt", ".cfg"}
                  or n == "Makefile"]
    return sorted(files)


def test_nothing_points_to_a_design_document_outside_the_repository():
    name = "DESIGN" + ".md"  # spelt in two parts so this file does not find itself
    hits = [f"{path.relative_to(REPO)}:{n}" for path in repository_text_files()
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if name in line]
    assert hits == [], f"these point to a design document outside the repository (use docs/design.md): {hits}"
