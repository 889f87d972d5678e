"""Write one API reference page per module of ``dynalay_env`` and ``agents`` (run by mkdocs-gen-files).

Modules are found on disk, not listed by hand, so a new module gets its page without an edit here.
Nothing is imported: mkdocstrings reads the source statically (griffe), so modules that import
optional frameworks (ray, SB3) document on any machine. ``tests/test_docs_site.py`` imports
:func:`reference_pages` to check the reference against the packages' public names.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES: tuple[str, ...] = ("dynalay_env", "agents")


def reference_pages(root: Path = ROOT) -> dict[str, str]:
    """``{page path under docs/: dotted module name}`` for every module of :data:`PACKAGES`.

    A package's ``__init__.py`` becomes ``reference/<package>/index.md``; ``pkg/mod.py`` becomes
    ``reference/pkg/mod.md``.
    """
    pages: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
                page = Path("reference", *parts, "index.md")
            elif parts[-1].startswith("_"):
                continue  # private module (none yet): not part of the public API
            else:
                page = Path("reference", *parts).with_suffix(".md")
            pages[page.as_posix()] = ".".join(parts)
    return pages


def write_pages() -> None:
    import mkdocs_gen_files

    nav = mkdocs_gen_files.Nav()
    for page, module in reference_pages().items():
        parts = tuple(module.split("."))
        nav[parts] = Path(page).relative_to("reference").as_posix()
        with mkdocs_gen_files.open(page, "w") as f:
            f.write(f"::: {module}\n")
        source = module.replace(".", "/") + ("/__init__.py" if page.endswith("index.md") else ".py")
        mkdocs_gen_files.set_edit_path(page, Path("..", source))
    with mkdocs_gen_files.open("reference/index.md", "w") as f:
        f.write("# API reference\n\nGenerated from the source, one page per module (every public name, "
                "documented or not). `dynalay_env` is the pure Gymnasium package; `agents` holds the learners, "
                "baselines, evaluation and sweeps built on it.\n\n")
        f.writelines(f"- [`{module}`]({Path(page).relative_to('reference').as_posix()})\n"
                     for page, module in reference_pages().items())
    with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as f:
        # The overview first: section-index makes it the page of the "API reference" section, so
        # each package keeps its own section below it.
        f.write("* [Overview](index.md)\n")
        f.writelines(nav.build_literate_nav())


if __name__ in ("__main__", "<run_path>"):  # mkdocs-gen-files runs it with runpy.run_path
    write_pages()
