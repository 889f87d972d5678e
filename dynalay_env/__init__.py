"""DynaLay-Gym: learned adaptive depth over fixed-point-iteration networks, as Gymnasium environments.

Importing the package registers the environments::

    import gymnasium as gym
    import dynalay_env  # noqa: F401  (or gym.make("dynalay_env:DynaLay-MNIST1D-v0"))

    env = gym.make("DynaLay-MNIST1D-v0")
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

ENV_IDS: dict[str, str | None] = {
    "DynaLay-v0": None,  # generic: pass dataset=...
    "DynaLay-MNIST1D-v0": "mnist1d",
    "DynaLay-Digits-v0": "digits",
    "DynaLay-MNIST-v0": "mnist",
    "DynaLay-FashionMNIST-v0": "fashion_mnist",
    "DynaLay-CIFAR10-v0": "cifar10",
    "DynaLay-MNIST5k-v0": "mnist5k",
    "DynaLay-Synthetic-v0": "synthetic",
}


def _register_all() -> None:
    for env_id, dataset in ENV_IDS.items():
        if env_id in registry:
            continue
        register(
            id=env_id,
            entry_point="dynalay_env.env:DynaLayEnv",
            vector_entry_point="dynalay_env.vector_env:DynaLayVectorEnv",
            kwargs={} if dataset is None else {"dataset": dataset},
            # Episodes end by themselves (EXIT or max_steps): no TimeLimit wrapper.
            max_episode_steps=None,
        )


_register_all()

from dynalay_env.env import DynaLayEnv  # noqa: E402

__all__ = ["DynaLayEnv", "ENV_IDS", "__version__"]
