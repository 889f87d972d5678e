"""Plug your own fixed-point (FPI / DEQ) model into DynaLay-Gym.

The environment talks to a main model only through :class:`dynalay_env.model.FPIModel`: five
attributes and five methods. This file builds a small DEQ that is not a ``MainModel`` -- an MLP
encoder, K layers each solving ``z* = tanh(W_k z* + u)``, one linear head -- trains it briefly on
scikit-learn's digits, and hands it to ``gym.make`` and ``gym.make_vec``.

Run it: ``python examples/custom_fpi_model.py`` (a few seconds on one CPU core). The docs page
"Your own FPI or DEQ model" shows this file, and ``tests/test_docs_site.py`` runs it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils.env_checker import check_env
from torch import Tensor, nn

import dynalay_env  # noqa: F401  (registers the DynaLay-* env ids)
from dynalay_env.datasets import Dataset, load_dataset
from dynalay_env.fpi import SolveResult, fixed_point_solve
from dynalay_env.model import CostTable, FPIModel, run_path
from dynalay_env.paths import depth_accuracies, path_robust_loss


class TanhDEQ(nn.Module):
    """``encoder -> K layers z* = tanh(W_k z* + u_k) -> head``, with ``u_k = A_k z_in + x_emb``.

    Shapes: inputs ``[N, D]``, states ``[N, C]``. ``tanh`` is 1-Lipschitz and every ``W_k`` is
    rescaled to Frobenius norm (an upper bound of the spectral norm) <= ``lipschitz`` < 1, so each
    layer's map is a contraction and its fixed point exists and is unique. FLOPs follow ``torch.utils.flop_counter``: ``2 x`` the
    multiply-accumulates of the matrix products.
    """

    def __init__(self, input_dim: int, num_classes: int, width: int = 32, num_layers: int = 2,
                 lipschitz: float = 0.9, tol: float = 1e-3, max_iter: int = 30) -> None:
        super().__init__()
        # The attributes FPIModel asks for.
        self.num_layers = num_layers
        self.num_classes = num_classes
        self.input_shape: tuple[int, ...] = (input_dim,)
        self.state_shape: tuple[int, ...] = (width,)
        self.encoder = nn.Linear(input_dim, width)
        self.inject = nn.ModuleList(nn.Linear(width, width) for _ in range(num_layers))
        self.maps = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(num_layers))
        self.head = nn.Linear(width, num_classes)
        self.lipschitz, self.tol, self.max_iter = lipschitz, tol, max_iter
        self.normalizer = 0.0  # set by calibrate(): mean full-depth FLOPs on `val`

    def _contraction(self, k: int):
        weight = self.maps[k].weight
        weight = weight / torch.clamp(torch.linalg.matrix_norm(weight) / self.lipschitz, min=1.0)
        return lambda z, u: torch.tanh(z @ weight.T + u)

    # ---- the FPIModel methods -------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        """``[N, D] -> z0 [N, C]``; z0 is also the input embedding every layer is injected with."""
        return torch.relu(self.encoder(x))

    def apply_layer(self, k: int, z: Tensor, x_emb: Tensor) -> SolveResult:
        """Solve layer ``k`` (0-based) from ``z`` with DynaLay's solver: every sample stops on its own
        at relative residual ``tol`` (or ``max_iter``), and its executed FLOPs are counted."""
        f = self._contraction(k)
        u = self.inject[k](z) + x_emb
        costs = self.cost_table()
        with torch.no_grad():
            result = fixed_point_solve(f, z.detach(), u.detach(), tol=self.tol, max_iter=self.max_iter,
                                       flops_per_iteration=costs.iteration[k])
        if torch.is_grad_enabled():
            # Training: a one-step (phantom) gradient through the fixed point, as DEQs commonly use.
            result.state = f(result.state, u)
        return result

    def classify(self, z: Tensor) -> Tensor:
        """``[N, C] -> logits [N, num_classes]``: one head for every state, so EXIT works anywhere."""
        return self.head(z)

    def introspect(self, z: Tensor) -> Tensor:
        """``[N, C] -> [N, C]``: what the agent sees of the state (here all of it; it is small)."""
        return z

    def cost_table(self) -> CostTable:
        """Per-sample FLOPs of each piece; ``normalizer`` makes 1.0 = the full-depth path."""
        c, d, k = self.state_shape[0], self.input_shape[0], self.num_layers
        return CostTable(encoder=2 * d * c, injection=(2 * c * c,) * k, iteration=(2 * c * c,) * k,
                         head=2 * c * self.num_classes, normalizer=self.normalizer,
                         max_iterations=(self.max_iter,) * k)

    # ---- set-up before the env can use it ---------------------------------------------------------

    @torch.no_grad()
    def calibrate(self, x_val: Tensor) -> float:
        """Set the compute normaliser: the mean FLOPs of layers 1..K once each on ``x_val``."""
        self.normalizer = 1.0  # run_path charges with the cost table; only the total is used here
        self.normalizer = float(run_path(self, x_val, range(self.num_layers)).flops.mean())
        return self.normalizer


def train(model: TanhDEQ, dataset: Dataset, steps: int = 300, seed: int = 0) -> list[float]:
    """Path-robust training on ``model_train``: every step supervises the head at each state of a
    random layer sequence (DynaLay's recipe, ``dynalay_env.pretrain.path_robust_loss``). Returns the
    ``val`` accuracy after each in-order depth (index 0 = the encoder state)."""
    generator = torch.Generator().manual_seed(seed)
    x, y = dataset.as_tensors("model_train")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        path = torch.randint(model.num_layers, (model.num_layers,), generator=generator).tolist()
        loss = path_robust_loss(model, x, y, path)  # works with any FPIModel
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    x_val, y_val = dataset.as_tensors("val")
    model.calibrate(x_val)
    return depth_accuracies(model, x_val, y_val)  # type: ignore[arg-type]


def main(steps: int = 300, seed: int = 0) -> dict[str, object]:
    torch.manual_seed(seed)
    dataset = load_dataset("digits")  # 64 features, 10 classes, shipped with scikit-learn
    model = TanhDEQ(input_dim=dataset.input_shape[0], num_classes=dataset.num_classes)
    assert isinstance(model, FPIModel)  # the Protocol is runtime-checkable
    accuracy_by_depth = train(model, dataset, steps=steps, seed=seed)
    print("val accuracy after depth 0..K:", [round(a, 3) for a in accuracy_by_depth])

    # One episode at a time: the same env ids and options as with the default model.
    env = gym.make("DynaLay-Digits-v0", model=model, mask_repeats=True, lambda_compute=0.1)
    check_env(env.unwrapped)  # Gymnasium's own checks: spaces, seeding, determinism
    top1 = env.unwrapped.observation_names.index("top1_prob")
    obs, info = env.reset(seed=seed)
    done = False
    while not done:  # a confidence rule: apply layers 1, 2, ... until the head is sure, then EXIT
        action = 0 if obs[top1] >= 0.9 or info["step"] >= model.num_layers else info["step"] + 1
        obs, reward, done, truncated, info = env.step(action)
    print(f"episode: path {info['path'][:info['step']].tolist()}, correct {info['correct']}, compute {info['compute']:.3f}")

    # Natively batched: N episodes per step, one solve per chosen layer.
    envs = gym.make_vec("DynaLay-Digits-v0", num_envs=64, model=model, split="val")
    obs, infos = envs.reset(seed=seed)
    rewards = np.zeros(64)
    for _ in range(model.num_layers + 1):
        obs, reward, terminated, truncated, infos = envs.step(envs.action_space.sample())
        rewards += reward
    envs.close()
    print(f"vector env: observations {obs.shape}, mean return of random actions {rewards.mean():.3f}")
    return {"accuracy_by_depth": accuracy_by_depth, "episode": info, "observation_shape": obs.shape}


if __name__ == "__main__":
    torch.set_num_threads(1)  # the model is tiny: one thread is the fastest
    main()
