"""The one shape of dynalay_env's registries (datasets, rewards, solvers): ``register_*(name, obj,
overwrite=False)``, ``get_*(name)`` and ``list_*()``, with the same checks and the same error for a
name that is not registered."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, MutableMapping
from typing import Any


def unknown_name(kind: str, name: object, valid: Iterable[str], *, extra: str = "") -> ValueError:
    """``ValueError("unknown <kind> 'x' (did you mean 'y'?); valid <kind>s: a, b, c<extra>")``."""
    names = list(valid)
    hint = difflib.get_close_matches(str(name), names, n=1)
    return ValueError(f"unknown {kind} {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                      + f"; valid {kind}s: {', '.join(names)}{extra}")


def lookup(kind: str, registry: MutableMapping[str, Any], name: object, *, extra: str = "") -> Any:
    """``registry[name]``, or :func:`unknown_name`'s error listing the registered names."""
    if isinstance(name, str) and name in registry:
        return registry[name]
    raise unknown_name(kind, name, registry, extra=extra)


def register(kind: str, registry: MutableMapping[str, Any], name: str, obj: Any, *, overwrite: bool = False) -> None:
    """Register ``obj`` under ``name``: a non-empty string, not yet taken unless ``overwrite`` (so a
    built-in is never shadowed by accident); ``obj`` must be callable."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")
    if not callable(obj):
        raise TypeError(f"{kind} {name!r} must be callable, got {obj!r}")
    if name in registry and not overwrite:
        raise ValueError(f"{kind} {name!r} is already registered; pass overwrite=True to replace it")
    registry[name] = obj
