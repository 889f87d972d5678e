"""Griffe extension for the docs build: Sphinx roles in docstrings become API links.

The docstrings use Sphinx roles (``:class:`MainModel```, ``:func:`~agents.training.train```), which
Markdown shows as raw text. Each role becomes an *optional* mkdocs-autorefs reference: a link when
the target is in the API reference, plain code otherwise (an external name such as
``optuna.storages.RDBStorage``), so ``--strict`` never fails on one. An unqualified name is looked
up in the enclosing class and module, as Sphinx does.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([\w.]+)`")


def _resolve(name: str, obj: Object) -> str:
    """The full path of ``name`` as seen from ``obj``'s scope (``name`` itself when not found)."""
    first, _, rest = name.partition(".")
    scope: Any = obj if obj.is_class or obj.is_module else obj.parent
    while scope is not None:
        member = scope.members.get(first)
        if member is not None:
            base = member.target_path if member.is_alias else member.path
            return f"{base}.{rest}" if rest else base
        scope = scope.parent
    return name


class SphinxRoles(Extension):
    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.is_alias or obj.docstring is None:
            return

        def link(match: re.Match[str]) -> str:
            tilde, name = match.groups()
            title = name.rsplit(".", 1)[-1] if tilde else name
            return f'<autoref identifier="{_resolve(name, obj)}" optional><code>{title}</code></autoref>'

        obj.docstring.value = ROLE.sub(link, obj.docstring.value)
