"""Copy the committed results figures into the built site (run by mkdocs-gen-files).

The figures live beside their results files under ``benchmarks/results/`` (outside ``docs/``); the
results pages show them as ``assets/results/<name>.png``. Nothing is copied into the source tree.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Site path under ``assets/results/`` -> the committed figure it is.
FIGURES: dict[str, Path] = {
    "introspection.png": ROOT / "benchmarks" / "results" / "introspection" / "introspection.png",
    "introspection_router.png": ROOT / "benchmarks" / "results" / "introspection_router" / "introspection.png",
    "sweep_mnist1d.png": ROOT / "benchmarks" / "results" / "sweep_mnist1d.png",
}


def write_figures() -> None:
    """Write every figure of :data:`FIGURES` into the site's virtual files."""
    import mkdocs_gen_files

    for name, source in FIGURES.items():
        with mkdocs_gen_files.open(f"assets/results/{name}", "wb") as f:
            f.write(source.read_bytes())


if __name__ in ("__main__", "<run_path>"):  # mkdocs-gen-files runs it with runpy.run_path
    write_figures()
