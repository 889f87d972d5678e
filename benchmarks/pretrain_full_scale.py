"""Time image pre-training at full MNIST scale, to size the file image recipes' example budget.

60,000 random 28x28 images (+ 10,000 test) stand in for MNIST: the file rule gives 30,000
model_train, 15,000 val and 10,000 test images, and the cost per image does not depend on the
pixels (FPI iterations barely vary). Pre-trains ``--epochs`` epochs with the ``mnist`` recipe, one
thread, then the ``pretrain.json`` report (every path on test), and extrapolates to the recipe's
epochs: ``total = epochs x seconds_per_epoch + report_seconds``.

    python -m benchmarks image_datasets --out /tmp/idx random60k
    python -m benchmarks pretrain_full_scale --data-root /tmp/idx/random60k --out benchmarks/results/pretrain_full_scale_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch

from benchmarks import command_words
from dynalay_env.datasets import load_dataset
from dynalay_env.model import atomic_write_bytes
from dynalay_env.pretrain import pretrain, pretrain_report, recipe_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dataset = load_dataset(args.dataset, data_root=args.data_root)
    recipe = recipe_for(args.dataset)
    n_train = dataset.num_examples("model_train")
    start = time.perf_counter()
    # Exactly --epochs epochs (no example budget, no minimum number of steps).
    config = dataclasses.replace(recipe, epochs=args.epochs, example_budget=None, min_steps=0)
    model, history = pretrain(dataset, config=config, progress=False)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    pretrain_report(model, dataset, recipe.max_steps, torch.device("cpu"))
    report_seconds = time.perf_counter() - start
    per_epoch = history[-1]["seconds"] / len(history)
    epochs = recipe.epochs_for(n_train)
    result = {
        "dataset": args.dataset, "data_root": args.data_root, "model_train": n_train,
        "val": dataset.num_examples("val"), "test": dataset.num_examples("test"), "threads": 1,
        "epochs_measured": args.epochs, "train_seconds_measured": train_seconds,
        "seconds_per_epoch": per_epoch, "report_seconds": report_seconds,
        "recipe": dataclasses.asdict(recipe), "recipe_epochs_at_this_size": epochs,
        "extrapolated_total_seconds": epochs * per_epoch + report_seconds + (train_seconds - history[-1]["seconds"]),
        "command": " ".join([*command_words("pretrain_full_scale"), *(sys.argv[1:] if argv is None else argv)]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_bytes(args.out, (json.dumps(result, indent=2) + "\n").encode())
    return 0
