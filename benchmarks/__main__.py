"""``python -m benchmarks NAME [ARGS ...]``: run one benchmark; ``--list`` names them all."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from benchmarks import available, summary

USAGE = "usage: python -m benchmarks {--list | NAME [ARGS ...]}  (NAME --help: that benchmark's options)"


def listing() -> str:
    """One line per benchmark: its name and its summary."""
    names = available()
    width = max(map(len, names))
    return "\n".join(f"{name:<{width}}  {summary(name)}" for name in names)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to ``benchmarks.NAME.main(ARGS)``; returns its exit status (2 for an unknown name)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{listing()}")
        return 0 if args else 2
    if args[0] == "--list":
        print(listing())
        return 0
    name, rest = args[0], args[1:]
    names = available()
    if name not in names:
        print(f"{USAGE}\nerror: unknown benchmark {name!r}; valid: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    sys.argv = [f"python -m benchmarks {name}", *rest]  # argparse names the program after sys.argv[0]
    status = module.main(rest)
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
