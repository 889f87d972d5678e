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
import re
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


def undocumented(path: Path) -> list[str]:
    """Public objects of the module at ``path`` without a docstring: the module itself, its public
    classes and functions, and the public methods (properties included) of its public classes, at any
    depth of class nesting. Names with a leading underscore are private, dunder methods included."""
    tree = ast.parse(path.read_text(), str(path))
    missing = [] if ast.get_docstring(tree) else ["<module>"]

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            public = not getattr(node, "name", "_").startswith("_")
            if public and isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if ast.get_docstring(node) is None:
                    missing.append(prefix + node.name)
                if isinstance(node, ast.ClassDef):
                    walk(node.body, f"{prefix}{node.name}.")

    walk(_top_level(tree.body), "")
    return missing


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


def test_every_public_object_has_a_docstring():
    """The API reference (and the custom-model page, which sends readers to it) shows docstrings:
    every public module, class, function and method of the packages has one."""
    missing = [f"{module_name(path)}.{name}" for package in PACKAGES
               for path in sorted((ROOT / package).rglob("*.py")) for name in undocumented(path)]
    assert missing == [], f"{len(missing)} public objects without a docstring: {missing}"


def test_the_docstring_check_sees_methods_properties_and_modules(tmp_path: Path):
    path = tmp_path / "mod.py"
    path.write_text('class A:\n    """Doc."""\n    @property\n    def size(self): return 1\n'
                    "    def _private(self): ...\n    def __len__(self): return 1\n"
                    "    class B:\n        def run(self): ...\n"
                    'def f():\n    """Doc."""\ndef g(): ...\nclass _Hidden:\n    def h(self): ...\n')
    assert undocumented(path) == ["<module>", "A.size", "A.B", "A.B.run", "g"]


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


# ---- the newcomer's path --------------------------------------------------------------------------

#: Pages a newcomer needs, as built URLs.
NEWCOMER_PAGES = ("index.html", "installation/index.html", "getting-started/index.html", "envs/index.html",
                  "glossary/index.html", "tips/index.html", "mdp/index.html", "results/index.html",
                  "studies/index.html", "performance/index.html", "changelog/index.html", "citing/index.html")


def _config() -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # !!python/name and !ENV tags
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def test_the_newcomer_pages_exist(site: Path):
    missing = [page for page in NEWCOMER_PAGES if not (site / page).is_file()]
    assert not missing, f"pages missing from the site: {missing}"
    from dynalay_env import ENV_IDS

    env_pages = {p.name for p in (site / "envs").iterdir() if p.is_dir()}
    assert len(env_pages) == len(ENV_IDS), f"one page per env id: {sorted(env_pages)} for {sorted(ENV_IDS)}"
    titles = " ".join((site / "envs" / page / "index.html").read_text() for page in env_pages)
    for env_id in ENV_IDS:
        assert f">{env_id}<" in titles, f"no env page is titled {env_id}"


def test_the_home_page_is_the_landing_page(site: Path):
    home = (site / "index.html").read_text()
    for needle in ("arxiv.org/abs/2312.12781", "make install", "pip install", "assets/agent.gif",
                   "assets/results/introspection.png", '<span class="n">make</span>', "Expected output",
                   _config()["repo_url"]):
        assert needle in home, f"the home page lacks {needle!r}"
    assert (site / "assets" / "results" / "introspection.png").is_file()


def test_site_and_repo_urls_make_a_sitemap(site: Path):
    config = _config()
    assert config["site_url"].startswith("https://") and config["site_url"].endswith("/")
    assert config["repo_url"].startswith("https://github.com/")
    sitemap = (site / "sitemap.xml").read_text()
    assert sitemap.count("<loc>") >= len(NEWCOMER_PAGES) and config["site_url"] + "installation/" in sitemap
    path = "/" + config["site_url"].split("://", 1)[1].split("/", 1)[1]  # "/dynalay-gym/"
    assert f'href="{path}assets/' in (site / "404.html").read_text()  # assets by absolute path: works at any depth


def test_the_results_pages_show_figures_not_paths(site: Path):
    studies = (site / "studies" / "index.html").read_text()
    for name in ("introspection.png", "introspection_router.png", "sweep_mnist1d.png"):
        assert f'src="../assets/results/{name}"' in studies, name
        assert (site / "assets" / "results" / name).is_file(), name
    for page in ("results", "studies", "performance"):
        text = (site / page / "index.html").read_text()
        assert "<table>" in text and "_Not generated yet" not in text, page
        assert not re.search(r'see "[^"]+" (?:above|below)', text), f"{page}: a reference to a section of another page"


def test_the_mdp_page_opens_with_prose_and_renders_the_reward_as_math(site: Path):
    mdp = (site / "mdp" / "index.html").read_text()
    body = mdp[mdp.index('<h1 id="the-mdp">'):]
    assert "Bases:" not in body[:body.index("Reference: ")], "the MDP page starts with the class's bases"
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in body
    for page in ("mnist1d", "digits"):
        assert "<math " in (site / "envs" / page / "index.html").read_text(), page


def test_code_blocks_wrap_instead_of_clipping():
    css = (ROOT / "docs" / "assets" / "extra.css").read_text()
    assert re.search(r"pre > code\s*\{[^}]*white-space:\s*pre-wrap", css)
    assert "assets/extra.css" in _config()["extra_css"]
