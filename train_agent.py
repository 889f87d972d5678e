#!/usr/bin/env python
"""DynaLay-Gym command line: ``pretrain`` the main model, ``demo`` the main job end to end.

Examples::

    python train_agent.py pretrain --dataset mnist1d --run-dir runs/pretrain
    python train_agent.py pretrain --dataset mnist --data-root ~/data --run-dir runs/mnist
    python train_agent.py demo --run-dir runs/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_DATASET = "mnist1d"


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help="registered dataset name (default: %(default)s); see `list-datasets`")
    parser.add_argument("--data-root", default=None,
                        help="folder holding local dataset files (mnist, fashion_mnist, cifar10)")
    parser.add_argument("--run-dir", default=None, help="folder for every artefact of this run")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'cuda:N' (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train_agent.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="path-robust pre-training of the main model; writes "
                                        "main_model.pt and pretrain.json into --run-dir")
    _add_common(p)
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: 40)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser("demo", help="the main job on the default dataset: pre-train (if no checkpoint "
                                    "is in --run-dir) and print the pre-training figures")
    _add_common(d)

    sub.add_parser("list-datasets", help="print the registered dataset names")
    return parser


def cmd_pretrain(args: argparse.Namespace) -> dict:
    import dataclasses

    from dynalay_env.pretrain import recipe_for, run_pretraining

    run_dir = Path(args.run_dir or f"runs/pretrain-{args.dataset}")
    config = recipe_for(args.dataset)
    if getattr(args, "epochs", None) is not None:
        config = dataclasses.replace(config, epochs=args.epochs)
    checkpoint, report = run_pretraining(args.dataset, run_dir=run_dir, data_root=args.data_root, seed=args.seed,
                                         device=args.device, config=config,
                                         progress=not getattr(args, "quiet", False))
    print_pretrain_summary(report)
    print(f"checkpoint: {checkpoint}\nreport:     {run_dir / 'pretrain.json'}")
    return report


def print_pretrain_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pre-training on {report['dataset']} ({report['split']} split, "
                        f"{report['n_examples']} examples)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for depth, acc in enumerate(report["accuracy_by_depth"]):
        table.add_row(f"accuracy after layers 1..{depth}" if depth else "accuracy, head on encoder state",
                      f"{acc:.4f}")
    table.add_row("oracle accuracy (some path <= max_steps)", f"{report['oracle_accuracy']:.4f}")
    for name, stats in report["iterations_full_depth_path"].items():
        table.add_row(f"{name} iterations p5/p50/p95 (full-depth path)",
                      f"{stats['p5']:.0f}/{stats['p50']:.0f}/{stats['p95']:.0f}")
    table.add_row("pre-training wall time", f"{report['train_seconds']:.0f} s")
    table.add_row("provenance", report["provenance"])
    Console().print(table)


def cmd_demo(args: argparse.Namespace) -> None:
    run_dir = Path(args.run_dir or "runs/demo")
    report_path = run_dir / "pretrain.json"
    if report_path.is_file() and (run_dir / "main_model.pt").is_file():
        print(f"using the main model already in {run_dir}")
        print_pretrain_summary(json.loads(report_path.read_text()))
        return
    args.run_dir = str(run_dir)
    cmd_pretrain(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list-datasets":
        from dynalay_env.data import available_datasets

        print("\n".join(available_datasets()))
        return 0
    try:
        {"pretrain": cmd_pretrain, "demo": cmd_demo}[args.command](args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
