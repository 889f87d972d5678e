"""The documentation site builds with ``--strict`` and its API reference names every public name.

Public names are found statically (ast), independently of the site's generator: every name in a
module's ``__all__`` and every module-level class or function without a leading underscore, in every
module of ``dynalay_env`` and ``agents``. The reference's names are read from the built site's
``objects.inv`` (what mkdocstrings actually rendered), so a page that is missing, a module the
generator skips, or a member that a filter hides all fail here. One build of the site, shared by the
module's tests (a few seconds).
"""

from __future__ import annotations

import ast
import os
import runpy
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dynalay_env", "agents")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Module-level statements, including those inside module-level ``if`` / ``try`` blocks."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            out += _top_level(node.body) + _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _top_level(node.body) + _top_level(node.orelse) + _top_level(node.finalbody)
            for handler in node.handlers:
                out += _top_level(handler.body)
    return out


def _strings(node: ast.expr, where: str) -> list[str]:
    if not isinstance(node, (ast.List, ast.Tuple)) or not all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        raise AssertionError(f"{where}: __all__ must be a literal list or tuple of strings")
    return [e.value for e in node.elts]  # type: ignore[attr-defined]


def public_names(path: Path) -> set[str]:
    """``__all__`` plus every module-level class or function without a leading underscore."""
    names: set[str] = set()
    for node in _top_level(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
                names.update(_strings(node.value, str(path)))
    return names


def package_public_names(root: Path = ROOT) -> set[str]:
    """``{"module.name"}`` over every module of :data:`PACKAGES`."""
    return {f"{module_name(path, root)}.{name}" for package in PACKAGES
            for path in sorted((root / package).rglob("*.py")) for name in public_names(path)}


def inventory_names(objects_inv: Path) -> set[str]:
    """The object names of a Sphinx-format ``objects.inv`` (four header lines, then zlib text)."""
    body = zlib.decompress(objects_inv.read_bytes().split(b"\n", 4)[4]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built as ``make docs`` builds it (``--strict``), into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_every_public_name_is_in_the_api_reference(site: Path):
    expected = package_public_names()
    assert len(expected) > 100 and "dynalay_env.DynaLayEnv" in expected and "agents.interface.Agent" in expected
    missing = sorted(expected - inventory_names(site / "objects.inv"))
    assert missing == [], f"public names missing from the API reference: {missing}"


def test_the_generator_gives_every_module_a_page_in_the_navigation(site: Path):
    pages = runpy.run_path(str(ROOT / "docs" / "gen_ref_pages.py"), run_name="gen_ref_pages")["reference_pages"]()
    modules = {module_name(path) for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    assert set(pages.values()) == modules
    home = (site / "index.html").read_text()  # the navigation is on every page
    for page in pages:
        url = page.removesuffix(".md").removesuffix("index").rstrip("/") + "/"
        assert (site / url / "index.html").is_file(), page
        assert f'href="{url}"' in home, f"{page} is not in the site's navigation"


def test_public_names_are_found_statically(tmp_path: Path):
    """The walker sees ``__all__`` (re-exports included), public defs, and skips private ones."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("from os import path\n__all__ = ['path', 'CONST']\nCONST = 1\n"
                                "class A: ...\ndef f(): ...\ndef _g(): ...\n"
                                "try:\n    def h(): ...\nexcept ImportError:\n    pass\n")
    assert public_names(pkg / "mod.py") == {"path", "CONST", "A", "f", "h"}
    assert module_name(pkg / "mod.py", tmp_path) == "pkg.mod"


def test_the_custom_model_example_runs(capsys: pytest.CaptureFixture[str]):
    """docs/custom-model.md shows examples/custom_fpi_model.py: it must run as shown (fewer steps)."""
    example = runpy.run_path(str(ROOT / "examples" / "custom_fpi_model.py"), run_name="custom_fpi_model")
    result = example["main"](steps=40)
    accuracy = result["accuracy_by_depth"]
    assert len(accuracy) == 3 and min(accuracy) > 0.5, accuracy  # 2 layers; well above chance (0.1)
    assert result["observation_shape"][0] == 64
    assert result["episode"]["step"] <= 2 and "vector env" in capsys.readouterr().out
