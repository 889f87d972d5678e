"""MkDocs hook: ```` ```math ```` fences render as MathML at build time (no JavaScript, no network).

The LaTeX of a ``math`` fence is converted by ``latex2mathml`` (the ``docs`` extra) into a
``<math display="block">`` element, which browsers render natively. Registered as a custom fence of
``pymdownx.superfences`` when the configuration loads (``hooks:`` in mkdocs.yml).
"""

from __future__ import annotations

from typing import Any


def format_math(source: str, language: str, css_class: str, options: dict[str, Any], md: Any,
                **kwargs: Any) -> str:
    """The MathML block of the LaTeX ``source`` of one ``math`` fence (superfences' formatter API)."""
    from latex2mathml.converter import convert

    return f'<div class="math-block">{convert(source.strip(), display="block")}</div>'


def on_config(config: Any, **kwargs: Any) -> Any:
    """Add the ``math`` fence to ``pymdownx.superfences``'s custom fences."""
    fences = config.mdx_configs.setdefault("pymdownx.superfences", {}).setdefault("custom_fences", [])
    if not any(fence.get("name") == "math" for fence in fences):
        fences.append({"name": "math", "class": "math", "format": format_math})
    return config
