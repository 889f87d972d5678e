"""DynaLay-Gym: learned adaptive depth over fixed-point-iteration networks, as Gymnasium environments.

Importing the package registers the environments::

    import gymnasium as gym
    import dynalay_env  # noqa: F401  (or gym.make("dynalay_env:DynaLay-MNIST1D-v0"))

    env = gym.make("DynaLay-MNIST1D-v0")
"""

import os

# Memory: torch keeps per-shape caches for its CPU convolutions. The env's batched calls run on row
# groups whose size changes at every call, so each convolution runs on one of a few bucketed row
# counts (dynalay_env/buckets.py). oneDNN's cache of compiled primitives (ONEDNN_PRIMITIVE_CACHE_CAPACITY,
# 1,024 by default) then holds every shape and stays flat, so it is left at its default: capped below
# the number of shapes, it recompiled kernels on every step (benchmarks/results/bucket_ratio_cpu.md).
# ideep, torch's layer over oneDNN, keeps its own per-shape cache of primitive descriptors, whose
# entries grew and fragmented the heap over a PPO run; capped at 32 it no longer grows
# (benchmarks/results/memory_soak_ppo_cpu.txt). torch reads this one when it is loaded, so it applies
# only when this package (or agents/) is imported before torch; a value the user set wins.
os.environ.setdefault("LRU_CACHE_CAPACITY", "32")

from gymnasium.envs.registration import register, registry  # noqa: E402

from dynalay_env.version import RECIPE_VERSION, __version__  # noqa: E402

ENV_IDS: dict[str, str | None] = {
    "DynaLay-v0": None,  # generic: pass dataset=...
    "DynaLay-MNIST1D-v0": "mnist1d",
    "DynaLay-Digits-v0": "digits",
    "DynaLay-MNIST-v0": "mnist",
    "DynaLay-FashionMNIST-v0": "fashion_mnist",
    "DynaLay-CIFAR10-v0": "cifar10",
    "DynaLay-MNIST5k-v0": "mnist5k",
    "DynaLay-Synthetic-v0": "synthetic",
    "DynaLay-MNIST5k-NoisyLabels-v0": "mnist5k_noisy_labels",  # dynalay_env.datasets.variants
    "DynaLay-MNIST5k-Corrupted-v0": "mnist5k_corrupted",
    "DynaLay-MNIST5k-Experts-v0": "mnist5k",  # expert layers with their router: CUSTOM_ENTRY_POINTS
}

#: Ids whose default main model is not the dataset's default model: (env, vector env) entry points.
CUSTOM_ENTRY_POINTS: dict[str, tuple[str, str]] = {
    "DynaLay-MNIST5k-Experts-v0": ("dynalay_env.env:make_experts_env", "dynalay_env.vector_env:make_experts_vector_env"),
}


def _register_all() -> None:
    for env_id, dataset in ENV_IDS.items():
        if env_id in registry:
            continue
        entry_point, vector_entry_point = CUSTOM_ENTRY_POINTS.get(
            env_id, ("dynalay_env.env:DynaLayEnv", "dynalay_env.vector_env:DynaLayVectorEnv"))
        register(
            id=env_id,
            entry_point=entry_point,
            vector_entry_point=vector_entry_point,
            kwargs={} if dataset is None else {"dataset": dataset},
            # Episodes end by themselves (EXIT or max_steps): no TimeLimit wrapper.
            max_episode_steps=None,
        )


_register_all()

from dynalay_env.env import DynaLayEnv  # noqa: E402
from dynalay_env.options import EnvOptions  # noqa: E402

__all__ = ["DynaLayEnv", "ENV_IDS", "EnvOptions", "RECIPE_VERSION", "__version__"]
