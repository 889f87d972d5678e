"""Every number in the README's results sections is backed by a committed results file.

The tables are generated blocks (``<!-- results:NAME -->``): they must equal what
``benchmarks/reproduce.py --readme`` renders from ``benchmarks/results/``. Every other number in
those sections (prose, hand-written tables) must appear in a results file at the precision shown,
as a fraction or as a percentage / points of one.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
FIRST_RESULTS_HEADING = "## Results on MNIST-1D"

sys.path.insert(0, str(ROOT / "benchmarks"))
import reproduce  # noqa: E402

NUMBER = re.compile(r"(?<![\w.\-/])(\d[\d,]*(?:\.\d+)?)(x|%)?(?![\w/])")
POINTS = re.compile(r"[^.;\n]{0,40}?\b(?:points?|pts)\b")  # "+1.7 to +2.8 points": 100x a fraction
# Absolute paths of the machine that ran a study (not URLs, not the `sqlite:///study.db` form).
ABSOLUTE = re.compile(r"(?<![\w:/.$~])/(?:home|work|tmp|root|Users|var|private|mnt|opt|srv)/")


def results_sections(text: str) -> str:
    """The README from the first results heading to the end (Results, Reward shaping, Co-training,
    Adaptive inference, Throughput)."""
    return text[text.index(FIRST_RESULTS_HEADING):]


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
    prose = hand_written_text(results_sections(text))
    return [m.group(1) for m in NUMBER.finditer(prose)
            if not backed(m.group(1), "." in m.group(1) or m.group(2) == "%" or bool(POINTS.match(prose, m.end())),
                          shown)]


def test_generated_blocks_match_the_results_files():
    text = README.read_text()
    assert reproduce.BLOCK.search(results_sections(text)), "the results sections have no generated blocks"
    names = {m.group("name") for m in reproduce.BLOCK.finditer(text)}
    assert names == set(reproduce.BLOCKS), f"README blocks {sorted(names)} != generated {sorted(reproduce.BLOCKS)}"
    assert reproduce.rewrite_readme(text, RESULTS) == text, (
        "README's generated blocks are stale: run `python benchmarks/reproduce.py --readme`")


def test_every_number_in_the_results_sections_is_in_a_results_file():
    missing = unbacked(README.read_text(), shown_forms(file_values()))
    assert not missing, f"README numbers with no committed results file behind them: {missing}"


def test_the_number_check_catches_an_unbacked_number():
    shown = shown_forms([0.9825, 316.0, 1.5])
    text = f"{FIRST_RESULTS_HEADING}\n\nThe oracle is right for 98.3% (0.9825) in 316 s; a run took 234 s.\n"
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
