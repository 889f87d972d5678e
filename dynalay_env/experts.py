"""Expert layers: a pre-training mode in which the FPI layers become specialists, chosen by a router.

The K FPI layers of a :class:`~dynalay_env.model.MainModel` are trained as *experts* of input
domains, and a small :class:`~dynalay_env.model.Router` trained with them picks the layer for each example at each
step (top-1), as in mixture-of-experts and Mixture-of-Depths.

* **Domains come from the inputs, never from the labels**: k-means clusters (``K`` of them, one per
  layer) of the standardised pixels of ``model_train`` (:func:`input_domains`). An example's domain
  is its nearest centroid.
* **Teaching** (the first ``teacher_share`` of the epochs): each mini-batch is drawn from one domain
  and runs through that domain's expert at every step, and the router learns the domain
  (cross-entropy). Without a teacher, a
  router trained jointly with the layers does not make specialists (the layers stay interchangeable).
* **Routing** (the remaining epochs): each example runs through the router's own top-1 choice, with
  a straight-through estimator (the chosen expert's state is scaled by ``p / p.detach()``, 1 in
  value, so the task loss reaches the router), so the experts finish training on the paths the
  router takes. The router keeps its domain loss, and a load-balancing term (Switch Transformer:
  ``K * sum_k f_k * P_k``) keeps every expert in use.
* **Abstaining off the domain** (``abstain_weight``): at every step the batch also runs through a
  wrong expert (its domain's plus a random offset), and the head is taught a uniform answer there
  (cross-entropy to the uniform distribution). Taught by domain alone, the experts still generalise
  to the other domains, so that a fixed order of all K layers comes close to the path oracle: a
  specialist that knows when an input is not its own is what makes the choice of layer matter, and
  its low confidence there is what an agent that tries an expert and looks at the result can read.
* **The head is not trained at the encoder state** (``encoder_weight`` 0): it reads the experts'
  states, so exiting before any expert answers poorly, and every fixed order's first prefix is
  no free answer.
* **Every layer stays a contraction** (the FPI layers are unchanged), and costs come from the
  model's cost table. The experts have **equal cost** (:func:`expert_config`): the choice between
  them is then about which specialist suits the input, not about how much to spend, so the gap
  between the path oracle and the prefix oracle measures selection alone.

The router reads the flattened state ``z`` ``[N, prod(state_shape)]`` (what an env's policy can
read from its core) and is saved with the checkpoint (checkpoint key
``router``; :class:`~dynalay_env.model.ExpertModel`). Shapes: inputs ``x`` ``[N, *input_shape]``, states ``[N, *state_shape]``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from dynalay_env.atomic import atomic_write_json
from dynalay_env.datasets import Dataset, load_dataset
from dynalay_env.device import resolve_device
from dynalay_env.model import (
    ExpertModel,
    LayerSpec,
    MainModel,
    ModelConfig,
    default_config,
    provenance_of,
    save_checkpoint,
)
from dynalay_env.options import EnvOptions
from dynalay_env.paths import enumerate_paths, routing_headroom
from dynalay_env.pretrain import CHECKPOINT_NAME, REPORT_NAME, input_statistics, pretrain_report

#: The expert variant's dataset and env id.
EXPERTS_DATASET = "mnist5k"
EXPERTS_ENV_ID = "DynaLay-MNIST5k-Experts-v0"


def expert_config(input_shape: tuple[int, ...], num_classes: int, num_experts: int = 3, rank: int = 12,
                  **overrides: Any) -> ModelConfig:
    """The default model of ``input_shape`` with ``num_experts`` FPI layers of equal cost (bottleneck
    ``rank``; the default model's middle layer). Equal costs: see the module docstring."""
    base = default_config(input_shape, num_classes)
    spec = base.layers[min(1, len(base.layers) - 1)]
    layers = tuple(LayerSpec(rank, spec.kernel_size, spec.tol, spec.max_iter) for _ in range(num_experts))
    return default_config(input_shape, num_classes, **{"layers": layers, **overrides})


# --------------------------------------------------------------------------------------------------
# Domains
# --------------------------------------------------------------------------------------------------


@dataclass
class Domains:
    """k-means domains of inputs: ``centroids`` ``[K, D]`` in standardised pixel space (``mean`` /
    ``std`` per input channel, from ``model_train``), ``train`` the domain ``[N]`` of each
    ``model_train`` example."""

    centroids: Tensor
    mean: Tensor
    std: Tensor
    train: Tensor

    def assign(self, x: Tensor) -> Tensor:
        """The domain ``[N]`` (long) of raw inputs ``x`` ``[N, *input_shape]``: the nearest centroid."""
        return torch.cdist(self._flat(x), self.centroids.to(x.device)).argmin(1)

    def _flat(self, x: Tensor) -> Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        return ((x - self.mean.to(x.device).view(view)) / self.std.to(x.device).view(view)).flatten(1)

    def sizes(self) -> list[int]:
        """Number of ``model_train`` examples in each domain."""
        return torch.bincount(self.train, minlength=self.centroids.shape[0]).tolist()


def input_domains(x_train: Tensor, num_domains: int, seed: int = 0) -> Domains:
    """k-means (scikit-learn, ``n_init=4``) with ``num_domains`` clusters of the standardised,
    flattened inputs ``x_train`` ``[N, *input_shape]``: domains of the inputs alone (no labels)."""
    from sklearn.cluster import KMeans  # lazy: sklearn is slow to import

    if num_domains < 1 or num_domains > x_train.shape[0]:
        raise ValueError(f"num_domains must be in 1..{x_train.shape[0]} (the examples), got {num_domains}")
    mean, std = input_statistics(x_train)
    domains = Domains(torch.zeros(0), mean, std, torch.zeros(0, dtype=torch.long))
    flat = domains._flat(x_train.cpu()).double().numpy()
    km = KMeans(n_clusters=num_domains, n_init=4, random_state=seed).fit(flat)
    domains.centroids = torch.tensor(km.cluster_centers_, dtype=torch.float32)
    domains.train = domains.assign(x_train.cpu())
    return domains


# --------------------------------------------------------------------------------------------------
# Routed runs
# --------------------------------------------------------------------------------------------------


def apply_routed(model: MainModel, choice: Tensor, z: Tensor, x_emb: Tensor) -> tuple[Tensor, Tensor]:
    """Apply layer ``choice[i]`` (0-based, ``[N]`` long) to each example, one call per chosen layer
    (grouped); returns the new states ``[N, *state_shape]`` and the solver's FLOPs ``[N]`` float64."""
    out = torch.zeros_like(z)
    flops = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    for k in range(model.num_layers):
        idx = torch.nonzero(choice == k).flatten()
        if idx.numel() == 0:
            continue
        result = model.apply_layer(k, z.index_select(0, idx), x_emb.index_select(0, idx))
        out = out.index_copy(0, idx, result.state)
        flops = flops.index_copy(0, idx, result.flops.double())
    return out, flops


@dataclass
class RoutedRun:
    """A batch run along the router's choices for ``steps`` steps: ``logits`` ``[steps + 1, N, C]``
    (the head at every visited state), ``choices`` ``[steps, N]`` (0-based layers), ``flops``
    ``[steps + 1, N]`` float64 (env FLOPs of exiting at each depth, router not included), and
    ``iterations`` ``[steps, N]``."""

    logits: Tensor
    choices: Tensor
    flops: Tensor
    iterations: Tensor


@torch.no_grad()
def run_router(model: ExpertModel, x: Tensor, steps: int) -> RoutedRun:
    """Encode ``x`` ``[N, *input_shape]`` and follow the router for ``steps`` steps (see :class:`RoutedRun`)."""
    costs = model.cost_table()
    x_emb = model.encode(x)
    z = x_emb
    spent = torch.full((x.shape[0],), costs.reset_flops(), dtype=torch.float64, device=x.device)
    logits, flops, choices, iterations = [model.classify(z)], [spent], [], []
    for _ in range(steps):
        choice = model.route(z)
        step_flops = torch.zeros_like(spent)
        its = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        state = torch.zeros_like(z)
        for k in range(model.num_layers):
            idx = torch.nonzero(choice == k).flatten()
            if idx.numel() == 0:
                continue
            result = model.apply_layer(k, z.index_select(0, idx), x_emb.index_select(0, idx))
            state.index_copy_(0, idx, result.state)
            step_flops.index_copy_(0, idx, costs.step_flops(k, result.flops))
            its.index_copy_(0, idx, result.iterations.long())
        z = state
        spent = spent + step_flops
        logits.append(model.classify(z))
        flops.append(spent)
        choices.append(choice)
        iterations.append(its)
    empty = torch.zeros((0, x.shape[0]), dtype=torch.long, device=x.device)
    return RoutedRun(torch.stack(logits), torch.stack(choices) if choices else empty, torch.stack(flops),
                     torch.stack(iterations) if iterations else empty)


@torch.no_grad()
def router_accuracies(model: ExpertModel, x: Tensor, y: Tensor, max_steps: int, batch_size: int = 1024) -> list[float]:
    """Accuracy ``[max_steps + 1]`` of following the router for 0..max_steps steps."""
    correct = torch.zeros(max_steps + 1, dtype=torch.float64)
    for i in range(0, x.shape[0], batch_size):
        run = run_router(model, x[i:i + batch_size], max_steps)
        correct += (run.logits.argmax(2) == y[i:i + batch_size][None, :]).double().sum(1).cpu()
    return (correct / x.shape[0]).tolist()


# --------------------------------------------------------------------------------------------------
# Pre-training
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpertPretrainConfig:
    """Settings of expert pre-training. ``epochs`` (at most; ``patience`` epochs without a better
    ``val`` score stop early), of which the first ``teacher_share`` route every example by its
    domain; ``max_steps`` the longest path (a length 1..max_steps is drawn per batch);
    ``encoder_weight`` the weight of the head's loss at the encoder state (the experts' states
    weigh 1 each); ``router_weight`` of the router's domain cross-entropy; ``balance_weight`` of
    the load-balancing term; ``abstain_weight`` of the uniform answer after a wrong expert (0 = off);
    ``router_hidden`` the router's width; ``num_experts`` K (also the number of domains) and
    ``expert_rank`` each expert's bottleneck."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    warmup: float = 0.03
    weight_decay: float = 1e-4
    max_steps: int = EnvOptions.default("max_steps")
    patience: int = 8
    seed: int = 0
    device: str = "cpu"
    teacher_share: float = 0.5
    encoder_weight: float = 0.0
    router_weight: float = 0.5
    balance_weight: float = 0.01
    abstain_weight: float = 1.0
    router_hidden: int = 32
    num_experts: int = 3
    expert_rank: int = 12

    def __post_init__(self) -> None:
        if not 0.0 <= self.teacher_share <= 1.0:
            raise ValueError(f"teacher_share must be in [0, 1], got {self.teacher_share}")
        if self.epochs < 1 or self.max_steps < 1 or self.num_experts < 2:
            raise ValueError(f"need epochs >= 1, max_steps >= 1 and num_experts >= 2; got {self.epochs}, "
                             f"{self.max_steps}, {self.num_experts}")


def domain_batches(domain: Tensor, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """One epoch of mini-batches, each drawn from one domain (``domain`` ``[N]``: the domain of each
    training example): each domain's examples shuffled and cut into batches of ``batch_size``, and the
    batches of all domains shuffled together. Returns index tensors ``[<= batch_size]``; a taught
    batch then runs through one expert per step (one solver call, not one per domain)."""
    batches = []
    for k in range(int(domain.max()) + 1):
        members = torch.nonzero(domain == k).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        batches += list(members.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def balance_loss(probs: Tensor, choice: Tensor) -> Tensor:
    """Switch Transformer's load-balancing term ``K * sum_k f_k * P_k`` (1 when balanced): ``f_k``
    the share of examples routed to k (``choice`` ``[N]``), ``P_k`` the mean router probability
    (``probs`` ``[N, K]``)."""
    k = probs.shape[1]
    share = torch.bincount(choice, minlength=k).to(probs.dtype) / max(choice.numel(), 1)
    return k * (share * probs.mean(0)).sum()


def expert_loss(model: ExpertModel, x: Tensor, y: Tensor, domain: Tensor, steps: int, teach: bool,
                config: ExpertPretrainConfig) -> Tensor:
    """The loss of one batch along ``steps`` routed steps: the head's cross-entropy at every visited
    state (the encoder state weighted ``encoder_weight``), plus the router's domain cross-entropy and
    load-balancing term at every step. ``teach``: route by ``domain``; else by the router's top-1
    with a straight-through estimator."""
    x_emb = model.encode(x)
    z = x_emb
    head = config.encoder_weight * F.cross_entropy(model.classify(z), y)
    router = torch.zeros((), device=x.device)
    for _ in range(steps):
        logits = model.router(z)
        probs = logits.softmax(1)
        choice = domain if teach else probs.argmax(1).detach()
        router = router + config.router_weight * F.cross_entropy(logits, domain)
        if not teach:  # taught batches hold one domain: their load is the domains' by construction
            router = router + config.balance_weight * balance_loss(probs, choice)
        if config.abstain_weight > 0:
            # Off its domain an expert abstains: the head reads a uniform answer after a wrong expert.
            offset = int(torch.randint(1, model.num_layers, (1,)))
            wrong, _ = apply_routed(model, (domain + offset) % model.num_layers, z, x_emb)
            head = head - config.abstain_weight * F.log_softmax(model.classify(wrong), 1).mean(1).mean()
        z, _ = apply_routed(model, choice, z, x_emb)
        if not teach:
            chosen = probs.gather(1, choice[:, None])[:, 0]
            z = z * (chosen / chosen.detach()).view((-1,) + (1,) * (z.dim() - 1))
        head = head + F.cross_entropy(model.classify(z), y)
    return (head + router) / (config.encoder_weight + steps)


def pretrain_experts(dataset: Dataset, config: ExpertPretrainConfig = ExpertPretrainConfig(),
                     model_config: ModelConfig | None = None, progress: bool = True,
                     on_epoch: Callable[[dict[str, Any]], None] | None = None,
                     ) -> tuple[ExpertModel, Domains, list[dict[str, Any]]]:
    """Train an :class:`ExpertModel` on ``model_train`` (see the module docstring), keeping the
    weights with the best ``val`` score (mean accuracy of following the router for 1..max_steps
    steps, over the routing epochs; the teaching epochs only teach). Returns the model (operator
    norms converged, compute normaliser calibrated on ``val``), its domains and the history (one
    dict per epoch, also passed to ``on_epoch``; ``seconds`` wall and ``cpu_seconds`` of this process)."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model_config = model_config or expert_config(dataset.input_shape, dataset.num_classes, config.num_experts,
                                                 config.expert_rank)
    model = ExpertModel(model_config, {"hidden": config.router_hidden}).to(device)
    x_train, y_train = dataset.as_tensors("model_train", device)
    model.set_input_normalization(*input_statistics(x_train))
    domains = input_domains(x_train, model.num_layers, config.seed)
    d_train = domains.train.to(device)
    x_val, y_val = dataset.as_tensors("val", device)
    n = x_train.shape[0]
    teacher_epochs = round(config.teacher_share * config.epochs)
    total_steps = (teacher_epochs * sum(math.ceil(size / config.batch_size) for size in domains.sizes())
                   + (config.epochs - teacher_epochs) * math.ceil(n / config.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps,
                                                   pct_start=config.warmup)
    best_score, best_state, stale = -1.0, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, Any]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in tqdm(range(config.epochs), desc=f"experts {dataset.name}", disable=not progress, unit="epoch"):
        teach = epoch < teacher_epochs
        model.train()
        total = 0.0
        # Taught batches come from one domain each (one expert call per step); routed batches mix
        # the domains, so that the load-balancing term sees the router's spread.
        batches = (domain_batches(domains.train, config.batch_size, generator) if teach
                   else torch.randperm(n, generator=generator).split(config.batch_size))
        for idx in batches:
            idx = idx.to(device)
            steps = int(torch.randint(1, config.max_steps + 1, (1,), generator=generator))
            loss = expert_loss(model, x_train[idx], y_train[idx], d_train[idx], steps, teach, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * idx.numel()
        model.eval()
        accuracies = router_accuracies(model, x_val, y_val, config.max_steps)
        score = float(np.mean(accuracies[1:]))
        history.append({"epoch": epoch, "teach": teach, "loss": total / n, "val_score": score,
                        "val_router_accuracy_by_steps": accuracies, "seconds": time.perf_counter() - start,
                        "cpu_seconds": time.process_time() - cpu_start})
        if on_epoch is not None:
            on_epoch(history[-1])
        if teach:
            continue
        if score > best_score:
            best_score, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_score >= 0:
        model.load_state_dict(best_state)
    model.eval()
    model.refresh_operator_norms(n_power_iterations=200)
    model.calibrate_normalizer(x_val)
    return model, domains, history


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def expert_report(model: ExpertModel, dataset: Dataset, domains: Domains, max_steps: int,
                  split: str = "test") -> dict[str, Any]:
    """The expert figures on ``split``: the path oracle, the prefix oracle along every order of the
    K layers, cut at ``max_steps`` (``best_fixed_order``: the order with the highest), the routing headroom (path oracle
    minus the best order's prefix oracle), the router's accuracy after 1..max_steps steps, how often
    it picks an example's domain, and the accuracy of every fixed path of 1..max_steps layers."""
    device = next(model.parameters()).device
    x, y = dataset.as_tensors(split, device)
    table = enumerate_paths(model, x, y, max_steps)
    routing = routing_headroom(table, model.num_layers, max_steps)
    path_oracle, orders, best = (routing["path_oracle_accuracy"], routing["prefix_oracle_by_order"],
                                 routing["best_fixed_order"])
    fixed = {"-".join(str(a + 1) for a in p): float(table.correct[i].double().mean())
             for i, p in enumerate(table.paths) if p}
    router = router_accuracies(model, x, y, max_steps)
    with torch.no_grad():
        choice = model.route(model.encode(x))
    domain = domains.assign(x)
    return {
        "split": split, "n_examples": int(y.shape[0]), "max_steps": max_steps,
        "path_oracle_accuracy": path_oracle,
        "prefix_oracle_by_order": orders, "best_fixed_order": best,
        "prefix_oracle_accuracy": orders[best],
        "routing_headroom": path_oracle - orders[best],
        "router_accuracy_by_steps": router,
        "router_first_choice_matches_domain": float((choice.cpu() == domain.cpu()).double().mean()),
        "router_first_choice_share": torch.bincount(choice.cpu(), minlength=model.num_layers).double().div(
            y.shape[0]).tolist(),
        "domain_share": torch.bincount(domain.cpu(), minlength=model.num_layers).double().div(y.shape[0]).tolist(),
        "fixed_path_accuracy": {"best": max(fixed.values()), "worst": min(fixed.values()),
                                "one_layer": {k: v for k, v in fixed.items() if "-" not in k},
                                "best_path": max(fixed, key=fixed.__getitem__)},
        "router_flops_per_decision": model.router.flops(),
    }


def run_expert_pretraining(dataset_name: str = EXPERTS_DATASET, run_dir: str | Path = "runs/experts",
                           config: ExpertPretrainConfig | None = None, data_root: str | Path | None = None,
                           progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Pre-train experts on a registered dataset and write ``main_model.pt`` (with its router) and
    ``pretrain.json`` to ``run_dir``: the standard pre-training figures
    (:func:`~dynalay_env.pretrain.pretrain_report`) plus ``experts`` (:func:`expert_report` on
    ``test``), the domain sizes and the wall time. Returns the checkpoint path and the report."""
    config = config or ExpertPretrainConfig()
    dataset = load_dataset(dataset_name, data_root=data_root)
    start = time.perf_counter()
    model, domains, history = pretrain_experts(dataset, config, progress=progress)
    train_seconds = time.perf_counter() - start
    device = resolve_device(config.device)
    report = pretrain_report(model, dataset, config.max_steps, device)
    report["experts"] = {**expert_report(model, dataset, domains, config.max_steps),
                         "domains": "k-means of the standardised model_train pixels (no labels)",
                         "domain_sizes_model_train": domains.sizes(),
                         "expert_costs": "equal (every expert has the same rank, so the same FLOPs per iteration)"}
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT_NAME
    meta = {"name": dataset.name, "fingerprint": dataset.fingerprint, "input_shape": list(dataset.input_shape),
            "num_classes": dataset.num_classes}
    provenance = save_checkpoint(checkpoint, model, meta, extra={"experts_pretrain": asdict(config)})
    report.update({"provenance": provenance, "model_provenance": provenance_of(model, dataset),
                   "train_seconds": train_seconds, "epochs_run": len(history), "pretrain_config": asdict(config),
                   "model_config": model.config.to_dict(), "router": model.router_spec(), "history": history,
                   "checkpoint": str(checkpoint)})
    atomic_write_json(run_dir / REPORT_NAME, report)
    return checkpoint, report


# --------------------------------------------------------------------------------------------------
# The default expert model and the env id
# --------------------------------------------------------------------------------------------------
