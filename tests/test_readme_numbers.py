"""Every number on the results pages and in the README is backed by a committed results file.

The results live on the documentation's results pages (``docs/results.md``, ``docs/studies.md``,
``docs/performance.md``: :data:`reproduce.RESULTS_PAGES`); the README keeps a short summary of them
(:data:`README_SUMMARY_HEADING`). The tables are generated blocks (``<!-- results:NAME -->``), each
on exactly one page: they must equal what ``python -m benchmarks reproduce --readme`` renders from
``benchmarks/results/``. Every other number on those pages and in the README's prose (hand-written
text and tables; code and link targets aside) must appear in a results file at the precision shown,
as a fraction or as a percentage / points of one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import reproduce

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
#: The README's section that summarises the studies (up to the next ``## `` heading).
README_SUMMARY_HEADING = "## What the studies found"


NUMBER = re.compile(r"(?<![\w.\-/])(\d[\d,]*(?:\.\d+)?)(x|%)?(?![\w/])")
POINTS = re.compile(r"[^.;\n]{0,40}?\b(?:points?|pts)\b")  # "+1.7 to +2.8 points": 100x a fraction
# Absolute paths of the machine that ran a study (not URLs, not the `sqlite:///study.db` form).
ABSOLUTE = re.compile(r"(?<![\w:/.$~])/(?:home|work|tmp|root|Users|var|private|mnt|opt|srv)/")


PAGES = {page.relative_to(ROOT).as_posix(): page for page in reproduce.RESULTS_PAGES}


def readme_summary(text: str) -> str:
    """The README's summary of the studies: from :data:`README_SUMMARY_HEADING` to the next ``## ``."""
    start = text.index(README_SUMMARY_HEADING)
    end = text.find("\n## ", start + len(README_SUMMARY_HEADING))
    return text[start:] if end < 0 else text[start:end]


def hand_written_text(section: str) -> str:
    """``section`` without generated blocks, code (fenced and inline), HTML comments and link targets."""
    section = reproduce.BLOCK.sub("", section)
    section = re.sub(r"```.*?```", "", section, flags=re.S)
    section = re.sub(r"`[^`\n]*`", "", section)
    section = re.sub(r"<!--.*?-->", "", section, flags=re.S)
    return re.sub(r"\]\([^)]*\)", "]", section)


def file_values() -> list[float]:
    """Every number in every committed results file, subfolders included (the quick run's folder excluded)."""
    values: list[float] = []
    for path in sorted(RESULTS.rglob("*")):
        if "quick" in path.relative_to(RESULTS).parts[:-1]:
            continue
        if path.is_file() and path.suffix in (".json", ".md", ".txt"):
            values += [float(m.group(0)) for m in re.finditer(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?",
                                                               path.read_text().replace(",", ""))]
    return values


def backed(token: str, percent: bool, shown: dict[tuple[int, bool], set[str]]) -> bool:
    """``token`` is some file value as printed at its precision, or, where ``percent`` (a ``%``, a
    number of points, or any decimal: "+9.9" points of a 0.099 difference), 100x one. A whole number
    without ``%`` must be a file value itself, so "234 s" is not backed by a 2.34."""
    digits = len(token.split(".")[1]) if "." in token else 0
    value = f"{abs(float(token.replace(',', ''))):.{digits}f}"
    return value in shown[digits, False] or (percent and value in shown[digits, True])


def shown_forms(values: list[float], max_digits: int = 6) -> dict[tuple[int, bool], set[str]]:
    """Each value as printed with 0..max_digits decimals; (digits, True): 100x the value."""
    forms: dict[tuple[int, bool], set[str]] = {(d, p): set() for d in range(max_digits + 1) for p in (False, True)}
    for v in values:
        for x, scaled in ((abs(v), False), (abs(100 * v), True)):
            for d in range(max_digits + 1):
                for nudge in (-1e-9, 0.0, 1e-9):  # a half rounds up or down: 0.9825 shows as 98.2% or 98.3%
                    forms[d, scaled].add(f"{x + nudge:.{d}f}")
    return forms


def unbacked(text: str, shown: dict[tuple[int, bool], set[str]]) -> list[str]:
    """The numbers of ``text``'s prose that no results file backs."""
    prose = hand_written_text(text)
    return [m.group(1) for m in NUMBER.finditer(prose)
            if not backed(m.group(1), "." in m.group(1) or m.group(2) == "%" or bool(POINTS.match(prose, m.end())),
                          shown)]


def test_every_generated_block_stands_on_exactly_one_results_page():
    names = [m.group("name") for page in PAGES.values() for m in reproduce.BLOCK.finditer(page.read_text())]
    assert sorted(names) == sorted(reproduce.BLOCKS), (
        f"blocks on the results pages {sorted(names)} != generated {sorted(reproduce.BLOCKS)}")
    assert not reproduce.BLOCK.search(README.read_text()), "the README keeps no generated block: they live in docs/"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_generated_blocks_match_the_results_files(name):
    text = PAGES[name].read_text()
    assert reproduce.rewrite_readme(text, RESULTS) == text, (
        f"{name}'s generated blocks are stale: run `python -m benchmarks reproduce --readme`")


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_number_on_a_results_page_is_in_a_results_file(name):
    missing = unbacked(PAGES[name].read_text(), shown_forms(file_values()))
    assert not missing, f"{name}: numbers with no committed results file behind them: {missing}"


def test_every_number_of_the_readme_is_in_a_results_file():
    """The whole README, its summary of the studies included (code and link targets aside)."""
    text = README.read_text()
    assert len(re.findall(r"\d", readme_summary(text))) >= 5, "the README's summary of the studies quotes no figures"
    missing = unbacked(text, shown_forms(file_values()))
    assert not missing, f"README numbers with no committed results file behind them: {missing}"


def test_the_number_check_catches_an_unbacked_number():
    shown = shown_forms([0.9825, 316.0, 1.5])
    text = "## Results\n\nThe oracle is right for 98.3% (0.9825) in 316 s; a run took 234 s.\n"
    assert unbacked(text, shown) == ["234"]
    # code and generated blocks are not prose
    text += "`--timesteps 777`\n```bash\nrun 888\n```\n<!-- results:x -->\n999\n<!-- /results:x -->\n"
    assert unbacked(text, shown) == ["234"]


@pytest.mark.parametrize("path", sorted(p.name for p in RESULTS.iterdir() if p.suffix in (".json", ".md", ".txt")))
def test_results_files_name_no_machine_local_path(path):
    text = (RESULTS / path).read_text()
    assert not ABSOLUTE.search(text), f"{path} names a machine-local absolute path: {ABSOLUTE.search(text).group(0)}"


def test_results_files_of_the_pipeline_record_their_provenance():
    for path in sorted(RESULTS.glob("*.json")):
        meta = json.loads(path.read_text()).get("reproduce")
        if meta is None or path.name == "reproduce.json":
            continue  # a GPU or long-study file with its own command
        assert {"command", "commands", "models", "machine", "wall_seconds"} <= set(meta), path.name
        for model in meta["models"].values():
            assert {"provenance", "dataset", "dataset_fingerprint", "package_version", "recipe_version"} <= set(model)
