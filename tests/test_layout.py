"""The layout is written once, in docs/design.md's "Layout" section, and it matches the files: every
module and package of ``dynalay_env``, ``agents`` and ``benchmarks`` (and ``train_agent.py``) has its
line there, and every path it names exists. The README and CONTRIBUTING.md link to it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DESIGN = REPO / "docs" / "design.md"
#: The packages walked; each module (``__init__.py`` aside: its package's line stands for it) and
#: each sub-package must have a line.
PACKAGES = ("dynalay_env", "agents", "benchmarks")
MODULES = ("train_agent.py",)
#: The section of docs/design.md that holds the layout.
HEADING = "## Layout"
#: Indentation of one level of the layout's tree.
INDENT = 2


def layout_block(text: str) -> str:
    """The fenced block of the Layout section of ``text``."""
    assert HEADING + "\n" in text, f"docs/design.md has no {HEADING!r} section"
    section = text.split(HEADING + "\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, flags=re.S)
    assert block, f"docs/design.md's {HEADING} section has no fenced block"
    return block.group(1)


def layout_entries(block: str) -> dict[str, str]:
    """``{path: description}`` of the layout block: one name per line, indented by its folder's
    depth (a name ending in ``/`` opens a folder for the deeper lines below it)."""
    entries: dict[str, str] = {}
    folders: list[str] = []
    for number, line in enumerate(block.splitlines(), 1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % INDENT == 0 and indent // INDENT <= len(folders), (
            f"layout line {number} is indented by {indent} spaces: {line!r}")
        depth = indent // INDENT
        folders = folders[:depth]
        name, _, description = line.strip().partition(" ")
        path = "".join(folders) + name
        assert path not in entries, f"the layout names {path} twice"
        entries[path] = description.strip()
        if name.endswith("/"):
            folders.append(name)
    return entries


def project_paths() -> set[str]:
    """What the layout must name: every module and sub-package of :data:`PACKAGES`, the packages
    themselves, and :data:`MODULES`."""
    paths = {f"{package}/" for package in PACKAGES} | set(MODULES)
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            relative = path.relative_to(REPO)
            if "__pycache__" in relative.parts:
                continue
            paths |= {"/".join(relative.parts[:i]) + "/" for i in range(2, len(relative.parts))}
            if path.name != "__init__.py":
                paths.add(relative.as_posix())
    return paths


def line_for(path: str) -> str:
    """How ``path`` is written in the layout (indented under its folder)."""
    parts = path.rstrip("/").split("/")
    return " " * (INDENT * (len(parts) - 1)) + parts[-1] + ("/" if path.endswith("/") else "") + "  <one line>"


def test_the_layout_names_every_module_and_nothing_that_is_gone():
    entries = layout_entries(layout_block(DESIGN.read_text()))
    missing = sorted(project_paths() - set(entries))
    gone = sorted(p for p in entries if not (REPO / p.rstrip("/")).exists())
    problems = []
    if missing:
        problems.append("docs/design.md's Layout lacks these (add one line each, under its folder):\n"
                        + "\n".join(f"  {p}    e.g. {line_for(p)!r}" for p in missing))
    if gone:
        problems.append("docs/design.md's Layout names what does not exist (remove these lines):\n"
                        + "\n".join(f"  {p}" for p in gone))
    assert not problems, "\n".join(problems)
    undescribed = sorted(p for p, description in entries.items() if not description)
    assert not undescribed, f"docs/design.md's Layout: give each of these its one line: {undescribed}"


def test_the_layout_parser_sees_folders_and_depth():
    block = "a.py  one\npkg/  two\n  m.py  three\n  sub/  four\n    n.py  five\nother/  six\n"
    assert layout_entries(block) == {"a.py": "one", "pkg/": "two", "pkg/m.py": "three", "pkg/sub/": "four",
                                     "pkg/sub/n.py": "five", "other/": "six"}
    assert line_for("pkg/sub/n.py").startswith("    n.py")


def test_the_layout_is_written_once():
    """The README and CONTRIBUTING.md link to the layout instead of repeating it."""
    for name in ("README.md", "CONTRIBUTING.md"):
        text = (REPO / name).read_text()
        assert "docs/design.md#layout" in text, f"{name} should link to docs/design.md#layout"
        listed = [m for m in ("interface.py", "vector_env.py", "reproduce.py", "sb3_vec_env.py") if m in text]
        assert len(listed) < 2, f"{name} repeats the layout ({listed}); link to docs/design.md#layout instead"
